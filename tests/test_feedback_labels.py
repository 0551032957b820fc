"""Labels that arrive later: every documented outcome (accepted, duplicate, contradiction, unknown, late, bad value),
over the store's all-or-nothing path (HTTP) and the file path (quarantine with reasons, exact accounting)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from mlcycle.schemas.config import FeedbackConfig, RequestLogConfig
from mlcycle.tasks.monitor.labels import (
    Label,
    LabelStore,
    LabelTarget,
    ingest_label_file,
    ingest_label_folder,
    judge_labels,
)
from mlcycle.tasks.monitor.request_log import LoggedRequest, RequestIndex, RequestLog

T0 = datetime(2024, 5, 1, 12, tzinfo=UTC)
REGRESSION = LabelTarget("regression")
BINARY = LabelTarget("binary", ("<=50K", ">50K"))
KNOWN = {"r1": LoggedRequest("r1", 2, T0, "m:1", "f"), "r2": LoggedRequest("r2", 1, T0, "m:1", "f")}


def outcomes(labels: list[Label], settings: FeedbackConfig | None = None, target: LabelTarget = REGRESSION,
             existing: dict | None = None, received: datetime = T0) -> list[tuple[str, int]]:  # fmt: skip
    verdicts = judge_labels(labels, KNOWN, existing or {}, target, settings or FeedbackConfig(), received)
    return [(v.outcome, v.status) for v in verdicts]


def test_a_known_record_with_a_valid_label_is_accepted_and_repeats_are_duplicates() -> None:
    labels = [Label("r1", 0, 5.0), Label("r1", 1, 7), Label("r1", 0, 5)]  # 5 and 5.0 are the same label
    assert outcomes(labels) == [("accepted", 200), ("accepted", 200), ("duplicate", 200)]
    assert outcomes([Label("r1", 0, 5.0)], existing={("r1", 0): 5.0}) == [("duplicate", 200)]


def test_unknown_ids_and_missing_records_are_refused_404_and_bad_values_422() -> None:
    labels = [Label("nope", 0, 1.0), Label("r2", 1, 1.0), Label("r1", 0, "many"), Label("r1", 1, True),
              Label("r1", 0, float("nan"))]  # fmt: skip
    verdicts = judge_labels(labels, KNOWN, {}, REGRESSION, FeedbackConfig(), T0)
    assert [(v.outcome, v.status) for v in verdicts] == [("refused", 404)] * 2 + [("refused", 422)] * 3
    assert "not in the request log" in verdicts[0].reason
    assert "has 1 record(s): there is no record 1" in verdicts[1].reason
    assert "is not a number" in verdicts[2].reason and "is not a number" in verdicts[3].reason
    assert "not a finite number" in verdicts[4].reason


def test_binary_labels_take_class_names_zero_one_and_booleans() -> None:
    labels = [Label("r1", 0, ">50K"), Label("r1", 1, 0), Label("r2", 0, "true")]
    verdicts = judge_labels(labels, KNOWN, {}, BINARY, FeedbackConfig(), T0)
    assert [(v.outcome, v.y, v.text) for v in verdicts] == [("accepted", 1.0, ">50K"), ("accepted", 0.0, "<=50K"),
                                                            ("accepted", 1.0, ">50K")]  # fmt: skip
    (wrong,) = judge_labels([Label("r1", 0, "rich")], KNOWN, {}, BINARY, FeedbackConfig(), T0)
    assert wrong.status == 422 and "'<=50K' or '>50K'" in wrong.reason
    penguins = LabelTarget("multiclass", ("Adelie", "Chinstrap", "Gentoo"))
    chinstrap, other = judge_labels([Label("r1", 0, "Chinstrap"), Label("r1", 1, 1)], KNOWN, {}, penguins,
                                    FeedbackConfig(), T0)  # fmt: skip
    assert (chinstrap.y, chinstrap.text) == (1.0, "Chinstrap") and other.status == 422


def test_contradictions_are_refused_409_or_recorded_as_corrections() -> None:
    first = {("r1", 0): 5.0}
    assert outcomes([Label("r1", 0, 6.0)], existing=first) == [("refused", 409)]
    assert outcomes([Label("r1", 0, 5.0), Label("r1", 0, 6.0)]) == [("accepted", 200), ("refused", 409)]
    replace = FeedbackConfig(on_conflict="replace")
    assert outcomes([Label("r1", 0, 6.0)], replace, existing=first) == [("corrected", 200)]


def test_a_label_later_than_max_delay_is_refused_as_late() -> None:
    settings = FeedbackConfig(max_delay_h=24)
    assert outcomes([Label("r1", 0, 1.0)], settings, received=T0 + timedelta(hours=23)) == [("accepted", 200)]
    (late,) = judge_labels([Label("r1", 0, 1.0)], KNOWN, {}, REGRESSION, settings, T0 + timedelta(hours=25))
    assert late.status == 422 and late.reason.startswith("late: received 25.0 h after the prediction")
    assert outcomes([Label("r1", 0, 1.0)], received=T0 + timedelta(days=400)) == [("accepted", 200)]  # no limit set


@pytest.fixture
def logged(tmp_path: Path) -> RequestLog:
    """A real request log with two requests (3 records and 1), flushed, so the index knows them."""
    log = RequestLog("m", {"x": "float64"}, RequestLogConfig(), root=tmp_path / "requests")
    log.add([{"x": 1.0}, {"x": 2.0}, {"x": 3.0}], "m:1", "a" * 32, [10.0, 20.0, 30.0], at=T0)
    log.add([{"x": 4.0}], "m:1", "b" * 32, [40.0], at=T0 + timedelta(hours=1))
    log.flush()
    return log


def test_the_store_keeps_labels_once_and_stores_nothing_from_a_refused_http_batch(tmp_path: Path,
                                                                                   logged: RequestLog) -> None:  # fmt: skip
    store, lookup = LabelStore("m", tmp_path / "feedback"), logged.index.lookup  # type: ignore[union-attr]
    batch = store.record([Label("a" * 32, 0, 11.0), Label("a" * 32, 2, 29.0)], lookup, REGRESSION, FeedbackConfig(),
                         "http", T0 + timedelta(hours=2))  # fmt: skip
    assert batch.stored and batch.summary() == {"labels": 2, "accepted": 2, "duplicates": 0, "corrected": 0,
                                                "refused": 0}  # fmt: skip
    again = store.record([Label("a" * 32, 1, 21.0), Label("unknown", 0, 1.0)], lookup, REGRESSION, FeedbackConfig(),
                         "http")  # fmt: skip
    assert not again.stored and again.count("accepted") == 1 and len(again.refused) == 1
    labels = store.read()
    assert sorted(labels["record"]) == [0, 2]  # the good label of the refused batch was not stored
    assert set(labels["model"]) == {"m:1"} and (labels["predicted"] == pd.Timestamp(T0)).all()
    assert store.record([Label("a" * 32, 0, 11.0)], lookup, REGRESSION, FeedbackConfig(), "http").summary()[
        "duplicates"] == 1  # fmt: skip
    assert len(store.read()) == 2


def test_a_label_file_quarantines_bad_rows_with_reasons_and_accounts_for_every_row(tmp_path: Path,
                                                                                    logged: RequestLog) -> None:  # fmt: skip
    store = LabelStore("m", tmp_path / "feedback")
    store.record([Label("a" * 32, 0, 11.0)], logged.index.lookup, REGRESSION, FeedbackConfig(), "http")  # type: ignore[union-attr]
    rows = [("a" * 32, 0, "11"), ("a" * 32, 0, "12"), ("a" * 32, 1, "21"), ("a" * 32, 1, "21"), ("b" * 32, 0, "39.5"),
            ("b" * 32, 3, "1"), ("c" * 32, 0, "5"), ("a" * 32, "x", "5"), ("a" * 32, 2, ""), ("a" * 32, 2, "lots")]  # fmt: skip
    path = tmp_path / "labels-1.csv"
    pd.DataFrame(rows, columns=["request_id", "record", "label"]).to_csv(path, index=False)
    outcome = ingest_label_file(path, store, logged.index.lookup, REGRESSION, FeedbackConfig())  # type: ignore[union-attr]
    assert outcome is not None
    assert outcome.counts() == {"rows_in": 10, "accepted": 2, "duplicates": 2, "corrected": 0, "quarantined": 6}
    assert outcome.reasons == {"contradicts": 1, "there is no record": 1, "is not in the request log": 1,
                               "is not a record index": 1, "label is missing": 1, "is not a number": 1}  # fmt: skip
    ledger = pd.read_parquet(outcome.quarantine)
    assert sorted(ledger["row"].tolist()) == [1, 5, 6, 7, 8, 9] and set(ledger["file"]) == {"labels-1.csv"}
    assert ledger.set_index("row").loc[1, "status"] == 409
    assert ingest_label_file(path, store, logged.index.lookup, REGRESSION, FeedbackConfig()) is None  # type: ignore[union-attr]
    assert len(store.read()) == 3  # r-a 0 (http) + r-a 1 + r-b 0


def test_the_landing_folder_reads_csv_parquet_and_json_lines_and_skips_partial_files(tmp_path: Path,
                                                                                      logged: RequestLog,
                                                                                      monkeypatch) -> None:  # type: ignore[no-untyped-def]  # fmt: skip
    monkeypatch.setenv("MLCYCLE_HOME", str(tmp_path / "home"))
    settings = FeedbackConfig(landing=str(tmp_path / "drop"), settle_s=0)
    folder = tmp_path / "drop"
    folder.mkdir()
    pd.DataFrame({"request_id": ["a" * 32], "record": [0], "label": [11.0]}).to_parquet(folder / "one.parquet")
    (folder / "two.jsonl").write_text('{"request_id": "%s", "record": 1, "label": 21}\n' % ("a" * 32))
    (folder / "three.csv.part").write_text("request_id,record,label\n")
    (folder / "four.csv").write_text("request_id,record\n%s,2\n" % ("a" * 32))
    found = ingest_label_folder("m", settings, logged.index.lookup, REGRESSION, T0 + timedelta(hours=3))  # type: ignore[union-attr]
    by_file = {Path(f.file).name: f.counts() for f in found}
    assert set(by_file) == {"one.parquet", "two.jsonl", "four.csv"}
    assert by_file["one.parquet"]["accepted"] == by_file["two.jsonl"]["accepted"] == 1
    assert by_file["four.csv"] == {"rows_in": 1, "accepted": 0, "duplicates": 0, "corrected": 0, "quarantined": 1}
    assert ingest_label_folder("m", settings, logged.index.lookup, REGRESSION) == []  # each content once


def test_the_index_forgets_requests_whose_file_the_size_bound_deleted(tmp_path: Path) -> None:
    log = RequestLog("m", {"x": "float64"}, RequestLogConfig(max_bytes=1024), root=tmp_path)
    log.add([{"x": 1.0}], "m:1", "old", [1.0])
    log.flush()
    log.add([{"x": 2.0}], "m:1", "new", [2.0])
    log.flush()  # the folder is over its bound: the older file goes, and its request with it
    assert set(RequestIndex(tmp_path).lookup({"old", "new"})) == {"new"}
