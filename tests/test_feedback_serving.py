"""The service's side of feedback, called directly: the POST /feedback desk (contract, refusals, a label right after
its answer) and the shadow scorer (off the answer's path, bounded, canary), on small real models."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlcycle.schemas.config import FeedbackConfig, RequestLogConfig, ShadowConfig
from mlcycle.serving.feedback import FeedbackDesk, LiveGauges, feedback_metrics
from mlcycle.serving.shadow import ShadowScorer, shadow_refusal
from mlcycle.tasks.monitor.feedback import read_logged, shadow_dir
from mlcycle.tasks.monitor.labels import LabelStore, LabelTarget
from mlcycle.tasks.monitor.request_log import RequestLog
from mlcycle.tasks.preprocess import encode_records
from mlcycle.tasks.registry.bundle import ModelBundle, load_bundle
from tests.conftest import BIKE_RECORD
from tests.service_models import save_small_model


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MLCYCLE_HOME", str(tmp_path))
    return tmp_path


@pytest.fixture
def desk(home: Path) -> FeedbackDesk:
    log = RequestLog("bike", {"season": "str"}, RequestLogConfig(flush_s=3600))
    log.add([{"season": "winter"}, {"season": "summer"}], "bike:1", "a" * 32, [10.0, 20.0])  # buffered, not written
    return FeedbackDesk("bike", FeedbackConfig(max_labels=3), LabelTarget("regression"), log)


def answer(desk: FeedbackDesk, body: Any) -> Any:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return asyncio.run(desk.answer(raw, "bike:1", "req"))


def test_a_label_right_after_its_answer_is_taken_and_a_repeat_is_a_duplicate(desk: FeedbackDesk) -> None:
    first = answer(desk, {"labels": [{"request_id": "a" * 32, "record": 1, "label": 21}]})
    assert first == {"model": "bike:1", "request_id": "req", "labels": 1, "accepted": 1, "duplicates": 0,
                     "corrected": 0}  # fmt: skip
    assert desk.request_log is not None and desk.request_log.buffered == 0  # written so the label could be checked
    again = answer(desk, {"labels": [{"request_id": "a" * 32, "record": 1, "label": 21.0}]})
    assert again["accepted"] == 0 and again["duplicates"] == 1
    assert LabelStore("bike").read()["y"].tolist() == [21.0]


A = "a" * 32  # the request the desk's log holds (two records)
REFUSED: dict[str, tuple[Any, int, list[tuple[int | None, str]]]] = {
    "not json": (b'{"labels": [', 400, []),
    "no labels": ({"labels": []}, 422, [(None, "labels")]),
    "record as text": ({"labels": [{"request_id": A, "record": "1", "label": 2}]}, 422, [(0, "record")]),
    "null label": ({"labels": [{"request_id": A, "record": 0, "label": None}]}, 422, [(0, "label")]),
    "label as text": ({"labels": [{"request_id": A, "record": 0, "label": "many"}]}, 422, [(0, "label")]),
    "extra field": ({"labels": [{"request_id": A, "record": 0, "label": 2, "note": "x"}]}, 422, [(0, "note")]),
    "extra top field": ({"labels": [{"request_id": A, "record": 0, "label": 2}], "more": 1}, 422, [(None, "more")]),
    "too many": ({"labels": [{"request_id": A, "record": 0, "label": 1}] * 4}, 413, []),
    "unknown id": ({"labels": [{"request_id": A, "record": 0, "label": 1},
                               {"request_id": "b" * 32, "record": 0, "label": 1}]}, 404, [(1, "request_id")]),
    "no such record": ({"labels": [{"request_id": A, "record": 2, "label": 1}]}, 404, [(0, "record")]),
    "contradiction": ({"labels": [{"request_id": A, "record": 0, "label": 1},
                                  {"request_id": A, "record": 0, "label": 2}]}, 409, [(1, "label")]),
}  # fmt: skip


@pytest.mark.parametrize(("body", "status", "fields"), list(REFUSED.values()), ids=list(REFUSED))
def test_refusals_name_the_label_and_field_and_store_nothing(desk: FeedbackDesk, body: Any, status: int,
                                                             fields: list[tuple[int | None, str]]) -> None:  # fmt: skip
    refused = answer(desk, body)
    assert isinstance(refused, tuple) and refused[0] == status, refused
    assert [(e.record, e.field) for e in refused[2]] == fields
    assert len(LabelStore("bike").read()) == 0


@dataclass
class Model:
    """The part of serving.service.Predictor the shadow uses, on a real bundle."""

    bundle: ModelBundle

    @property
    def tag(self) -> str:
        return self.bundle.tag

    def predict(self, features: np.ndarray) -> np.ndarray:
        return np.asarray(self.bundle.booster.inplace_predict(features), dtype=np.float64)

    def logged(self, raw: np.ndarray) -> tuple[list[float], list[str] | None]:
        return raw.tolist(), None  # regression: the value, no label


@pytest.fixture(scope="module")
def models() -> tuple[Model, Model]:
    return (Model(load_bundle(save_small_model("bike", rounds=5, seed=1, name="shadowed"))),
            Model(load_bundle(save_small_model("bike", rounds=25, seed=2, name="shadowed"))))  # fmt: skip


def test_the_shadow_scores_logged_requests_later_as_the_model_does_offline(home: Path,
                                                                           models: tuple[Model, Model]) -> None:  # fmt: skip
    champion, challenger = models
    assert shadow_refusal(champion, challenger) is None
    scorer = ShadowScorer(
        challenger, lambda: champion, ShadowConfig(), RequestLogConfig(), feedback_metrics()["shadow"]
    )
    records = [{**BIKE_RECORD, "hum": float(h)} for h in range(150)]
    for i in range(50):  # 50 requests of 3 records: two chunks of at most 128 rows
        assert scorer.submit(records[3 * i : 3 * i + 3], f"r{i}", champion)
    assert scorer.scored == 0  # nothing is scored on the answer's path

    async def run_until_drained() -> None:
        task = asyncio.get_running_loop().create_task(scorer.run())
        while scorer._queue:
            await asyncio.sleep(0.01)
        task.cancel()

    asyncio.run(run_until_drained())
    scorer.log.flush()
    logged = read_logged(shadow_dir("shadowed"))
    assert len(logged) == 150 and set(logged["_model"]) == {challenger.tag}
    assert all(records == [0, 1, 2] for records in logged.groupby("_request_id")["_record"].apply(list))
    expected = challenger.predict(encode_records(challenger.bundle.preprocessor, records)[0])
    ordered = logged.assign(n=logged["_request_id"].str[1:].astype(int)).sort_values(["n", "_record"])
    np.testing.assert_allclose(ordered["_prediction"], expected, rtol=0, atol=1e-6)


def test_a_full_queue_drops_and_counts_instead_of_growing(home: Path, models: tuple[Model, Model]) -> None:
    champion, challenger = models
    scorer = ShadowScorer(challenger, lambda: champion, ShadowConfig(queue_rows=10), RequestLogConfig())
    assert all(scorer.submit([BIKE_RECORD] * 3, f"r{i}", champion) for i in range(3))
    assert not scorer.submit([BIKE_RECORD] * 3, "r3", champion)
    assert scorer.dropped == 3 and scorer._queued_rows == 9


def test_canary_answers_come_from_the_challenger_and_the_champion_shadows_them(home: Path,
                                                                                models: tuple[Model, Model]) -> None:  # fmt: skip
    champion, challenger = models
    scorer = ShadowScorer(challenger, lambda: champion, ShadowConfig(canary_share=0.3), RequestLogConfig(), seed=3)
    picks = [scorer.answering(champion) for _ in range(1000)]  # type: ignore[arg-type]
    share = sum(p is challenger for p in picks) / 1000
    assert 0.25 < share < 0.35
    scorer.submit([BIKE_RECORD], "canary", challenger)  # answered by the challenger: the champion scores it
    scorer.score_chunk()
    scorer.log.flush()
    assert read_logged(shadow_dir("shadowed"))["_model"].tolist() == [champion.tag]
    off = ShadowScorer(challenger, lambda: champion, ShadowConfig(), RequestLogConfig())
    assert all(off.answering(champion) is champion for _ in range(200))  # type: ignore[arg-type]


def test_a_challenger_of_another_contract_is_not_shadowed(home: Path, models: tuple[Model, Model]) -> None:
    adult = Model(load_bundle(save_small_model("adult", rounds=3, name="shadowed")))
    assert "takes other requests" in (shadow_refusal(models[0], adult) or "")


def test_gauges_follow_the_newest_report(home: Path) -> None:
    from datetime import UTC, datetime

    from mlcycle.tasks.monitor.feedback import Degradation, LiveMetric, PerformanceReport, write_report

    cell = LiveMetric("g:1", "champion", 168, "", "", "all", "all", 300, 250, "rmse", 42.0, 40.0, 44.0, 30.0)
    degradation = Degradation(True, True, "g:1", "rmse", 168, 250, 42.0, 40.0, 44.0, 30.0, 33.0, "DEGRADED")
    write_report(PerformanceReport("g", datetime.now(UTC).isoformat(), "g:1", None, "rmse", 250, [cell], degradation))
    gauges = LiveGauges("g")
    assert gauges.refresh() and not gauges.refresh()  # read once, then only when the report changes
    metrics = feedback_metrics()
    labels = {"model": "g:1", "role": "champion", "metric": "rmse", "window_h": "168", "slice": "all"}
    assert metrics["live"].labels(**labels)._value.get() == 42.0
    assert metrics["labelled"].labels(**labels)._value.get() == 250
    assert metrics["degraded"].labels(model="g:1")._value.get() == 1.0
