"""The request log: one Parquet schema per model, sampling, and a bounded folder."""

from __future__ import annotations

import gc
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq

from mlcycle.schemas.config import RequestLogConfig
from mlcycle.tasks.monitor.request_log import RequestLog
from tests.conftest import ADULT_RECORD

COLUMNS = {"age": "int64", "workclass": "str", "hum": "float64"}
ROW = {"age": 39, "workclass": None, "hum": 50.5}
T0 = datetime(2026, 3, 4, 10, 0, 0, 123456, tzinfo=UTC)


def test_rows_keep_their_types_even_when_a_column_is_all_missing(tmp_path: Path) -> None:
    log = RequestLog("adult", COLUMNS, RequestLogConfig(), root=tmp_path)
    log.add([ROW, {**ROW, "age": 40}], "adult:v1", "req1", [0.25, 0.75])
    table = pq.read_table(log.flush())
    assert table.schema.field("workclass").type == "string" and table.schema.field("_ts").type.tz == "UTC"
    assert table.column("_prediction").to_pylist() == [0.25, 0.75]
    assert table.column("_model").to_pylist() == ["adult:v1"] * 2
    assert log.flush() is None  # nothing buffered, no empty file


def test_sampling_follows_the_rate_and_the_off_switch(tmp_path: Path) -> None:
    half = RequestLog("adult", COLUMNS, RequestLogConfig(sample_rate=0.5), root=tmp_path, seed=1)
    drawn = sum(half.sampled() for _ in range(2000))
    assert 850 < drawn < 1150
    off = RequestLog("adult", COLUMNS, RequestLogConfig(enabled=False), root=tmp_path)
    assert not any(off.sampled() for _ in range(100))


def test_flush_is_due_after_flush_rows(tmp_path: Path) -> None:
    log = RequestLog("adult", COLUMNS, RequestLogConfig(flush_rows=3), root=tmp_path)
    assert log.add([ROW, ROW], "t", "r", [0.1, 0.2]) is False
    assert log.add([ROW], "t", "r", [0.3]) is True


def test_folder_stays_under_its_bound_by_deleting_the_oldest(tmp_path: Path) -> None:
    log = RequestLog("adult", COLUMNS, RequestLogConfig(max_bytes=6000), root=tmp_path)
    written = []
    for i in range(8):
        log.add([{**ROW, "age": 20 + i}] * 20, "t", f"r{i}", [0.5] * 20)
        path = log.flush()
        assert path is not None
        os.utime(path, (1_000_000 + i, 1_000_000 + i))  # distinct mtimes: the order of writing
        written.append(path)
    remaining = sorted(tmp_path.glob("*.parquet"))
    assert sum(p.stat().st_size for p in remaining) <= 6000
    assert written[-1] in remaining and written[0] not in remaining
    assert remaining == [p for p in written if p in remaining]  # the newest ones stayed
    assert not list(tmp_path.glob("*.part"))


def test_unused_record_fields_are_not_logged(tmp_path: Path) -> None:
    log = RequestLog("adult", {"age": "int64"}, RequestLogConfig(), root=tmp_path)
    log.add([ADULT_RECORD], "t", "r", [0.5])
    assert pq.read_table(log.flush()).column_names == ["age", "_ts", "_model", "_request_id", "_record", "_prediction",
                                                       "_label"]  # fmt: skip


def test_files_of_another_writer_count_once_the_folder_is_listed_again(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # A writer lists the folder when its running total passes the bound or every RESCAN_S; what another worker
    # wrote meanwhile counts from that listing on.
    other = RequestLog("adult", COLUMNS, RequestLogConfig(), root=tmp_path)  # a worker that never needs to delete
    log = RequestLog("adult", COLUMNS, RequestLogConfig(max_bytes=6000), root=tmp_path)
    monkeypatch.setattr("mlcycle.tasks.monitor.request_log.RESCAN_S", 3600.0)
    log.add([ROW] * 20, "t", "first", [0.5] * 20)
    log.flush()  # the first write lists the folder
    for i in range(8):
        other.add([{**ROW, "age": 20 + i}] * 20, "t", f"other{i}", [0.5] * 20)
        os.utime(other.flush(), (1_000_000 + i, 1_000_000 + i))  # type: ignore[arg-type]
    log.add([ROW] * 20, "t", "second", [0.5] * 20)
    log.flush()
    assert sum(p.stat().st_size for p in tmp_path.glob("*.parquet")) > 6000  # not listed again yet
    monkeypatch.setattr("mlcycle.tasks.monitor.request_log.RESCAN_S", 0.0)
    log.add([ROW] * 20, "t", "third", [0.5] * 20)
    newest = log.flush()
    remaining = list(tmp_path.glob("*.parquet"))
    assert newest in remaining and sum(p.stat().st_size for p in remaining) <= 6000


def test_many_single_record_requests_make_one_table_in_their_order(tmp_path: Path) -> None:
    # The service's common case: thousands of one-record requests in one flush, next to a larger one.
    log = RequestLog("adult", COLUMNS, RequestLogConfig(), root=tmp_path)
    for i in range(300):
        log.add([{**ROW, "age": i}], "m:1", f"r{i}", [i / 1000], labels=["yes"], at=T0 + timedelta(seconds=i))
    log.add([{**ROW, "age": 1000}, {**ROW, "workclass": "Private"}, ROW], "m:2", "big", [0.1, 0.2, 0.3], at=T0)
    table = pq.read_table(log.flush())
    assert table.num_rows == 303
    assert table.column("age").to_pylist()[:3] == [0, 1, 2] and table.column("age")[300].as_py() == 1000
    assert table.column("_request_id").to_pylist()[299:] == ["r299", "big", "big", "big"]
    assert table.column("_record").to_pylist()[298:] == [0, 0, 0, 1, 2]
    assert table.column("_model").to_pylist()[299:301] == ["m:1", "m:2"]
    assert table.column("_prediction")[5].as_py() == 0.005 and table.column("_label").to_pylist()[299:] == [
        "yes", None, None, None]  # fmt: skip
    assert table.column("workclass").to_pylist()[300:] == [None, "Private", None]
    stamps = table.column("_ts").to_pylist()  # each request its own time, repeated for its records
    assert stamps[:300] == [T0 + timedelta(seconds=i) for i in range(300)] and stamps[300:] == [T0] * 3


def test_a_buffered_request_gives_the_garbage_collector_nothing_to_walk(tmp_path: Path) -> None:
    # Held as lists, every buffered request is a list per field for each full collection of the service to walk.
    log = RequestLog("adult", COLUMNS, RequestLogConfig(), root=tmp_path)
    log.add_fields({"age": [39, 40], "workclass": [None, "Private"], "hum": [1.5, 2.0]}, 2, "m:1", "r", [0.1, 0.2])
    gc.collect()
    gc.collect()  # a tuple is let go by the collection after the one that let go of its elements
    entry = log._pending[0]
    assert not gc.is_tracked(entry.values) and not gc.is_tracked(entry.predictions)
    assert pq.read_table(log.flush()).column("workclass").to_pylist() == [None, "Private"]


def test_a_field_the_answering_model_lacks_is_logged_empty(tmp_path: Path) -> None:
    # A challenger answering a canary share may not read every field of the champion's log.
    log = RequestLog("adult", COLUMNS, RequestLogConfig(), root=tmp_path)
    log.add_fields({"age": [39]}, 1, "m:2", "r", [0.5])
    table = pq.read_table(log.flush())
    assert table.column("age").to_pylist() == [39] and table.column("hum").to_pylist() == [None]
