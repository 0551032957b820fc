"""A SQL table read incrementally by a watermark column: real SQLite, no gaps, no duplicates."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from mlcycle.schemas.config import PipelineConfig
from mlcycle.tasks.ingest.admit import BatchResult, admit_batch, plan_inputs
from mlcycle.tasks.ingest.read import SourceError
from mlcycle.tasks.ingest.store import DatasetStore, list_batches, read_ledger, read_snapshot, take_snapshot
from tests.ingest_fixtures import TinySchema, tiny_config


@pytest.fixture
def database(tmp_path: Path) -> Path:
    path = tmp_path / "live.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE readings (seq INTEGER PRIMARY KEY AUTOINCREMENT, id INTEGER, color TEXT, "
                     "score REAL, loaded_at TIMESTAMP)")  # fmt: skip
    return path


def _insert(database: Path, rows: list[tuple[int, str, float | None]], at: str = "2026-01-01 00:00:00") -> None:
    with sqlite3.connect(database) as conn:
        conn.executemany("INSERT INTO readings (id, color, score, loaded_at) VALUES (?, ?, ?, ?)",
                         [(*row, at) for row in rows])  # fmt: skip


def _config(database: Path, **sql: object) -> PipelineConfig:
    settings = {"url": f"sqlite:///{database}", "table": "readings", "watermark": "seq",
                "columns": ["id", "color", "score"], **sql}  # fmt: skip
    return tiny_config({"kind": "sql", "sql": settings})


def _run(config: PipelineConfig, store: DatasetStore) -> list[BatchResult]:
    return [admit_batch(item, config, store, TinySchema) for item in plan_inputs(config, store, TinySchema).inputs]


def test_a_growing_table_is_ingested_incrementally_without_gaps_or_duplicates(
    database: Path, store: DatasetStore
) -> None:
    config = _config(database)
    _insert(database, [(1, "red", 1.0), (2, "blue", 2.0), (3, "green", 3.0)])
    (first,) = _run(config, store)
    assert first.record is not None
    assert (first.record.rows_read, first.record.watermark_from, first.record.watermark_to) == (3, None, "3")

    _insert(database, [(4, "red", 4.0), (5, "pink", 5.0)])
    (second,) = _run(config, store)
    assert second.record is not None
    assert (second.record.rows_read, second.record.rows_accepted, second.record.rows_quarantined) == (2, 1, 1)
    assert (second.record.watermark_from, second.record.watermark_to) == ("3", "5")
    assert read_ledger(store, [second.record.batch_id])["row"].tolist() == [2]  # the second row of this batch

    assert _run(config, store) == []  # nothing new
    _insert(database, [(6, "blue", 6.0)])
    (third,) = _run(config, store)
    assert third.record is not None and third.record.rows_read == 1

    curated = read_snapshot(store, take_snapshot(store)).frame
    assert curated["id"].tolist() == [1, 2, 3, 4, 6]  # every accepted row once, in order
    assert list(curated.columns) == ["id", "color", "score"]
    assert sum(b.rows_read for b in list_batches(store)) == 6


def test_a_rejected_increment_does_not_move_the_watermark(database: Path, store: DatasetStore) -> None:
    config = _config(database)
    _insert(database, [(1, "red", 1.0)])
    _run(config, store)
    _insert(database, [(2, "pink", 2.0), (3, "pink", 3.0)])
    (rejected,) = _run(config, store)
    assert rejected.outcome == "rejected"
    # Someone fixes the rows in place; the next run reads them again, nothing is skipped.
    with sqlite3.connect(database) as conn:
        conn.execute("UPDATE readings SET color = 'red' WHERE color = 'pink'")
    (fixed,) = _run(config, store)
    assert fixed.outcome == "accepted"
    assert fixed.record is not None and (fixed.record.watermark_from, fixed.record.rows_accepted) == ("1", 2)
    assert read_snapshot(store, take_snapshot(store)).frame["id"].tolist() == [1, 2, 3]


def test_max_rows_splits_a_backlog_into_batches(database: Path, store: DatasetStore) -> None:
    config = _config(database, max_rows=2)
    _insert(database, [(i, "red", float(i)) for i in range(1, 6)])
    sizes = []
    while batch := _run(config, store):
        sizes.append(batch[0].record.rows_read)  # type: ignore[union-attr]
    assert sizes == [2, 2, 1]
    assert read_snapshot(store, take_snapshot(store)).frame["id"].tolist() == [1, 2, 3, 4, 5]


def test_a_timestamp_watermark_compares_as_a_timestamp(database: Path, store: DatasetStore) -> None:
    config = _config(database, watermark="loaded_at")
    _insert(database, [(1, "red", 1.0)], at="2026-01-01 09:00:00")
    (first,) = _run(config, store)
    assert first.record is not None and first.record.watermark_to == '"2026-01-01T09:00:00"'
    _insert(database, [(2, "red", 2.0)], at="2026-01-01 10:30:00")
    (second,) = _run(config, store)
    assert second.record is not None and second.record.rows_read == 1


def test_columns_outside_the_schema_are_refused(database: Path, store: DatasetStore) -> None:
    _insert(database, [(1, "red", 1.0)])
    (result,) = _run(_config(database, columns=None), store)
    assert result.outcome == "rejected"
    assert "unexpected column(s) ['loaded_at']" in result.message  # seq, the watermark, is dropped


def test_a_missing_table_or_column_is_named(database: Path, store: DatasetStore) -> None:
    with pytest.raises(SourceError, match=r"#nothing: no such table"):
        _run(_config(database, table="nothing"), store)
    with pytest.raises(SourceError, match=r"no column\(s\) \['version'\]"):
        _run(_config(database, watermark="version"), store)
