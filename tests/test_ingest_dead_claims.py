"""A batch claimed by a run that is killed does not block its content: the next run sees that the claim's lock is
free, abandons the claim, removes what the dead run wrote and admits the rows at once, exactly once. A claim held by
a live process still blocks."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from mlcycle.tasks.ingest.store import DatasetStore, list_batches, read_curated_batch
from tests.conftest import ROOT
from tests.ingest_fixtures import HEADER, admit_file, assert_accounted, good_rows

# Claims the file's content as batch "dead", writes its curated partition as an ingest does just before its commit
# point, says so and waits to be killed.
CLAIMER = textwrap.dedent("""
    import hashlib, sys, time
    import pandas as pd
    from mlcycle.schemas import schema_fingerprint
    from mlcycle.tasks.ingest.store import BatchRecord, DatasetStore, claim_batch, now_utc, write_curated
    from tests.ingest_fixtures import TinySchema

    store, path = DatasetStore(__import__("pathlib").Path(sys.argv[1])), sys.argv[2]
    content = hashlib.sha256(open(path, "rb").read()).hexdigest()
    record = BatchRecord("dead", path, "files", content, schema_fingerprint(TinySchema), "pending", now_utc())
    assert claim_batch(store, record) is None
    write_curated(store, "dead", pd.DataFrame({"id": [1], "color": ["red"], "score": [1.0]}))
    print("claimed", flush=True)
    time.sleep(600)
""")


def _claimer(store: DatasetStore, csv: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", CLAIMER, str(store.root), str(csv)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline().strip() == "claimed"
    return proc


def test_a_claim_of_a_killed_run_is_abandoned_at_once_and_its_files_removed(
    tmp_path: Path, store: DatasetStore
) -> None:
    (tmp_path / "a.csv").write_text(HEADER + good_rows(5))
    proc = _claimer(store, tmp_path / "a.csv")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert store.curated_file("dead").exists()  # the dead run's partition, not yet committed in the registry

    result = admit_file(tmp_path / "a.csv", store)

    assert result.outcome == "accepted"  # not "skipped, already ingested" for the next hour
    assert_accounted(store, result)
    statuses = {b.batch_id: (b.status, b.failed_internally) for b in list_batches(store)}
    assert statuses["dead"] == ("rejected", True)
    assert not store.curated_file("dead").parent.exists()
    assert not store.claim_lock("dead").exists() and not store.claim_lock(result.record.batch_id).exists()
    assert [b.batch_id for b in list_batches(store, status="accepted")] == [result.record.batch_id]


def test_a_claim_held_by_a_live_process_still_blocks_its_content(tmp_path: Path, store: DatasetStore) -> None:
    (tmp_path / "a.csv").write_text(HEADER + good_rows(5))
    proc = _claimer(store, tmp_path / "a.csv")
    try:
        result = admit_file(tmp_path / "a.csv", store)
        assert result.outcome == "skipped" and result.record is not None and result.record.batch_id == "dead"
        assert [(b.batch_id, b.status) for b in list_batches(store)] == [("dead", "pending")]
        assert len(read_curated_batch(store, "dead")) == 1  # its partition is left alone
    finally:
        proc.kill()
        proc.wait(timeout=30)


def test_a_registry_write_that_fails_frees_the_claim_for_the_next_attempt(
    tmp_path: Path, store: DatasetStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlcycle.tasks.ingest.store as store_module

    (tmp_path / "a.csv").write_text(HEADER + good_rows(5))
    real, calls = store_module._registry, []

    @contextmanager
    def disk_full_after_the_claim(target: DatasetStore) -> Iterator[sqlite3.Connection]:
        calls.append(target)
        if len(calls) > 1:  # the claim is written; the batch's final state (accepted, then rejected) cannot be
            raise sqlite3.OperationalError("database or disk is full")
        with real(target) as conn:
            yield conn

    monkeypatch.setattr(store_module, "_registry", disk_full_after_the_claim)
    with pytest.raises(sqlite3.OperationalError, match="disk is full"):
        admit_file(tmp_path / "a.csv", store)
    monkeypatch.undo()
    (stuck,) = list_batches(store)
    assert stuck.status == "pending"

    result = admit_file(tmp_path / "a.csv", store)  # Prefect's task retry, in the same process

    assert result.outcome == "accepted"
    assert_accounted(store, result)
    assert {b.batch_id: b.status for b in list_batches(store)}[stuck.batch_id] == "rejected"
