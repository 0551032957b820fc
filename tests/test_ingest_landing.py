"""The landing folder: each new file once, by content; files still being written are left for a later run."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from mlcycle.schemas.config import PipelineConfig
from mlcycle.tasks.ingest.admit import BatchResult, admit_batch, plan_inputs
from mlcycle.tasks.ingest.landing import is_temporary_name, scan_landing
from mlcycle.tasks.ingest.store import DatasetStore, list_batches, read_snapshot, take_snapshot
from tests.ingest_fixtures import HEADER, TinySchema, good_rows, tiny_config


@pytest.fixture
def landing(tmp_path: Path) -> Path:
    folder = tmp_path / "landing"
    folder.mkdir()
    return folder


def _config(landing: Path, settle_s: float = 0.0) -> PipelineConfig:
    return tiny_config({"kind": "landing", "landing": {"path": str(landing), "pattern": "*.csv", "settle_s": settle_s}})


def _run(config: PipelineConfig, store: DatasetStore) -> list[BatchResult]:
    return [admit_batch(item, config, store, TinySchema) for item in plan_inputs(config, store, TinySchema).inputs]


def test_the_same_file_is_ingested_once(landing: Path, store: DatasetStore) -> None:
    (landing / "a.csv").write_text(HEADER + good_rows(3))
    config = _config(landing)
    assert [r.outcome for r in _run(config, store)] == ["accepted"]
    # Unchanged since (same name, size, mtime): not even read again.
    plan = plan_inputs(config, store, TinySchema)
    assert plan.inputs == []
    assert plan.notes == ["1 file(s) already ingested or rejected, and unchanged since"]
    # Dropped again (same bytes, a new mtime): read, recognised by content, skipped with a message.
    (landing / "a.csv").unlink()
    (landing / "a.csv").write_text(HEADER + good_rows(3))
    os.utime(landing / "a.csv", ns=(1, 1))
    (again,) = _run(config, store)
    assert again.outcome == "skipped"
    assert "already ingested" in again.message
    assert _run(config, store) == []
    assert len(list_batches(store)) == 1


def test_a_renamed_copy_is_recognised(landing: Path, store: DatasetStore) -> None:
    (landing / "a.csv").write_text(HEADER + good_rows(3))
    config = _config(landing)
    (first,) = _run(config, store)
    shutil.copy(landing / "a.csv", landing / "a (1).csv")
    outcomes = {Path(r.source).name: r for r in _run(config, store)}
    assert outcomes["a (1).csv"].outcome == "skipped"
    assert first.record is not None and first.record.batch_id in outcomes["a (1).csv"].message
    assert len(take_snapshot(store).batch_ids) == 1


def test_two_files_at_once_are_two_batches(landing: Path, store: DatasetStore) -> None:
    (landing / "a.csv").write_text(HEADER + good_rows(2))
    (landing / "b.csv").write_text(HEADER + good_rows(3, start=10))
    results = _run(_config(landing), store)
    assert [(Path(r.source).name, r.outcome) for r in results] == [("a.csv", "accepted"), ("b.csv", "accepted")]
    assert sorted(read_snapshot(store, take_snapshot(store)).frame["id"]) == [1, 2, 10, 11, 12]


def test_a_file_still_being_written_is_left_for_the_next_run(landing: Path, store: DatasetStore) -> None:
    growing = landing / "growing.csv"
    growing.write_text(HEADER + good_rows(2))
    (landing / "done.csv").write_text(HEADER + good_rows(1, start=50))

    def writer_appends_between_looks(_: float) -> None:
        with growing.open("a") as fh:
            fh.write(good_rows(2, start=3))

    config = _config(landing, settle_s=0.01)
    scan = scan_landing(config.source, sleep=writer_appends_between_looks)
    assert [Path(i.path).name for i in scan.ready] == ["done.csv"]
    assert scan.still_changing == [growing]
    # The writer has finished: the next run takes the whole file, once.
    results = _run(config, store)
    assert [(Path(r.source).name, r.outcome) for r in results] == [
        ("done.csv", "accepted"),
        ("growing.csv", "accepted"),
    ]
    assert results[1].record is not None and results[1].record.rows_accepted == 4


def test_a_file_changed_after_it_settled_is_not_read_half_way(landing: Path, store: DatasetStore) -> None:
    path = landing / "a.csv"
    path.write_text(HEADER + good_rows(2))
    config = _config(landing)
    (item,) = scan_landing(config.source).ready
    with path.open("a") as fh:
        fh.write(good_rows(1, start=3))
    result = admit_batch(item, config, store, TinySchema)
    assert result.outcome == "skipped"
    assert "changed while being read" in result.message
    assert list_batches(store) == []
    (accepted,) = _run(config, store)
    assert accepted.record is not None and accepted.record.rows_accepted == 3


@pytest.mark.parametrize("name", [".a.csv", "~a.csv", "a.csv.part", "a.csv.tmp", "a.csv.crdownload", "a.CSV.PART"])
def test_temporary_names_are_ignored(name: str) -> None:
    assert is_temporary_name(name)


def test_copy_tools_temporary_files_are_not_picked_up(landing: Path, store: DatasetStore) -> None:
    (landing / ".a.csv.swp").write_text("junk")
    (landing / "a.csv.part").write_text(HEADER + good_rows(1))
    (landing / "notes.txt").write_text("not matched by *.csv")
    assert _run(_config(landing), store) == []
    os.replace(landing / "a.csv.part", landing / "a.csv")  # the copy tool's final rename
    assert [r.outcome for r in _run(_config(landing), store)] == ["accepted"]


def test_a_missing_landing_folder_is_named(tmp_path: Path, store: DatasetStore) -> None:
    from mlcycle.tasks.ingest.read import SourceError

    with pytest.raises(SourceError, match="nowhere: landing folder does not exist"):
        _run(_config(tmp_path / "nowhere"), store)
