"""Live performance from labels joined to logged predictions: windows, slices, intervals, degradation, the shadow's
live rule, the registry's shadow, and the lineage of one answer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from mlcycle.schemas.config import FeedbackConfig, RequestLogConfig, ShadowConfig
from mlcycle.tasks import registry
from mlcycle.tasks.monitor.feedback import (
    LiveMetric,
    Served,
    assess,
    join_labels,
    judge_degradation,
    latest_report,
    read_logged,
    shadow_dir,
    trace_request,
    write_report,
)
from mlcycle.tasks.monitor.labels import Label, LabelStore, LabelTarget
from mlcycle.tasks.monitor.request_log import RequestLog, requests_dir
from mlcycle.tasks.registry.gate import check_live

NOW = datetime(2024, 6, 1, tzinfo=UTC)
SETTINGS = FeedbackConfig(windows_h=[24, 168], judge_window_h=168, min_labels=50, bootstrap_samples=200)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MLCYCLE_HOME", str(tmp_path))
    return tmp_path


def serve(name: str, hours: int, error: float, model: str = "m:1", shadow: tuple[str, float] | None = None,
          seed: int = 0, label: bool = True) -> None:  # fmt: skip
    """One single-record request per hour before NOW, answered by `model` off by about `error`; labels received two
    hours after each prediction (the last one after NOW); optionally a shadow model off by its own error."""
    rng = np.random.default_rng(seed)
    log = RequestLog(name, {"season": "str"}, RequestLogConfig())
    shadow_log = RequestLog(name, {}, RequestLogConfig(), root=shadow_dir(name), index=False)
    truth = {}
    for h in range(hours):
        at = NOW - timedelta(hours=hours - h)
        y = 100 + 10 * np.sin(h)
        rid = f"{seed}-{h}"
        log.add([{"season": "summer" if h % 2 else "winter"}], model, rid, [y + rng.normal(0, error)], at=at)
        if shadow:
            shadow_log.add([{}], shadow[0], rid, [y + rng.normal(0, shadow[1])], at=at)
        truth[rid] = (y, at)
    log.flush()
    shadow_log.flush()
    if label:
        store = LabelStore(name)
        for rid, (y, at) in truth.items():
            store.record([Label(rid, 0, float(y))], log.index.lookup, LabelTarget("regression"), SETTINGS, "test",  # type: ignore[union-attr]
                         at + timedelta(hours=2))  # fmt: skip


def test_join_pairs_each_label_with_its_logged_prediction_and_shadow(home: Path) -> None:
    serve("m", 10, 1.0, shadow=("m:2", 2.0))
    joined = join_labels(read_logged(requests_dir("m")), read_logged(shadow_dir("m")), LabelStore("m").read())
    assert len(joined) == 10 and set(joined["_shadow_model"]) == {"m:2"}
    assert joined["y"].notna().all() and (joined["_received"] > joined["_ts"]).all()


def test_live_metrics_per_window_and_slice_and_degradation_with_confidence(home: Path) -> None:
    serve("m", 200, 30.0)  # RMSE about 30 against a test RMSE of 10: degraded beyond any doubt
    report = assess("m", "regression", "rmse", ["season"], SETTINGS, Served("m:1", 10.0), None, None, NOW, 0)
    week = next(m for m in report.metrics if m.window_h == 168 and m.slice == "all")
    day = next(m for m in report.metrics if m.window_h == 24 and m.slice == "all")
    assert week.labelled == 167 and week.predictions == 168 and 25 < week.live < 35  # type: ignore[operator]
    assert week.low < week.live < week.high  # type: ignore[operator]
    assert day.labelled == 23 and day.live is None  # the last hour's label has not arrived; 23 < min_labels
    seasons = {m.value: m for m in report.metrics if m.window_h == 168 and m.slice == "season"}
    assert set(seasons) == {"summer", "winter"} and sum(m.labelled for m in seasons.values()) == 167
    assert report.degradation.judged and report.degradation.degraded
    assert report.degradation.line == pytest.approx(11.0)

    fine = assess("m", "regression", "rmse", [], SETTINGS, Served("m:1", 29.0), None, None, NOW, 0)
    assert fine.degradation.judged and not fine.degradation.degraded  # within 10 % of its own test metric


def test_too_few_labels_are_not_judged(home: Path) -> None:
    serve("m", 30, 30.0)
    report = assess("m", "regression", "rmse", [], SETTINGS, Served("m:1", 10.0), None, None, NOW, 0)
    assert not report.degradation.judged and "fewer than feedback.min_labels=50" in report.degradation.detail


def test_higher_is_better_metrics_degrade_downwards() -> None:
    cell = LiveMetric("m:1", "champion", 168, "", "", "all", "all", 500, 400, "roc_auc", 0.70, 0.66, 0.74, 0.90)
    verdict = judge_degradation([cell], "m:1", "roc_auc", SETTINGS)
    assert verdict.degraded and verdict.line == pytest.approx(0.81)
    close = LiveMetric("m:1", "champion", 168, "", "", "all", "all", 500, 400, "roc_auc", 0.84, 0.80, 0.88, 0.90)
    assert not judge_degradation([close], "m:1", "roc_auc", SETTINGS).degraded  # the interval reaches the line


def test_the_live_rule_promotes_rejects_or_waits() -> None:
    rng = np.random.default_rng(1)
    y = rng.normal(100, 10, 400)
    champion, better, worse = y + rng.normal(0, 20, 400), y + rng.normal(0, 5, 400), y + rng.normal(0, 40, 400)
    rules = ShadowConfig(min_labels=100, max_hours=100)
    args = ("regression", "rmse")
    assert check_live(*args, y, better, champion, "m:1", rules, 300, 0.95, 0, 10)[0] == "promote"
    assert check_live(*args, y, worse, champion, "m:1", rules, 300, 0.95, 0, 10)[0] == "reject"
    decision, check = check_live(*args, y[:50], better[:50], champion[:50], "m:1", rules, 300, 0.95, 0, 10)
    assert decision == "wait" and check.passed is None and "50 of 100" in check.detail
    assert check_live(*args, y[:50], better[:50], champion[:50], "m:1", rules, 300, 0.95, 0, 101)[0] == "reject"
    same = champion + rng.normal(0, 0.5, 400)
    assert check_live(*args, y, same, champion, "m:1", rules, 300, 0.95, 0, 10)[0] == "wait"
    assert check_live(*args, y, same, champion, "m:1", rules, 300, 0.95, 0, 101)[0] == "reject"


def test_assess_judges_the_shadow_on_the_requests_both_scored(home: Path) -> None:
    serve("m", 300, 20.0, shadow=("m:2", 4.0))
    report = assess("m", "regression", "rmse", [], SETTINGS.model_copy(update={"shadow": ShadowConfig(min_labels=100)}),
                    Served("m:1", 10.0), Served("m:2", 9.0), NOW - timedelta(hours=300), NOW, 0)  # fmt: skip
    assert report.shadow_decision == "promote"
    assert report.shadow_check is not None and report.shadow_check["evidence"]["rows"] == 299
    roles = {m.model: m.role for m in report.metrics}
    assert roles == {"m:1": "champion", "m:2": "shadow"}


def test_registry_shadow_ends_with_promotion_or_rejection_and_is_superseded(home: Path) -> None:
    for tag in ("s:1", "s:2", "s:3", "s:4"):
        registry.register(tag)
    registry.promote("s:1", reason="first")
    registry.put_in_shadow("s:2", reason="passed offline")
    assert registry.shadow("s") == "s:2" and registry.version("s:2").status == "challenger"
    registry.put_in_shadow("s:3", reason="newer")
    assert registry.shadow("s") == "s:3" and registry.version("s:2").status == "rejected"
    registry.promote("s:3", reason="live rule")
    assert registry.shadow("s") is None and registry.champion("s") == "s:3"
    registry.put_in_shadow("s:4", reason="again")
    registry.reject("s:4", reason="worse live")
    assert registry.shadow("s") is None
    with pytest.raises(registry.RegistryError, match="only a challenger"):
        registry.put_in_shadow("s:3", reason="the champion")
    assert [e.action for e in registry.history("s")] == ["promote", "shadow", "reject", "shadow", "promote", "shadow",
                                                         "reject"]  # fmt: skip


def test_reports_round_trip_and_trace_follows_an_answer_to_its_label_and_metrics(home: Path) -> None:
    from tests.service_models import save_small_model

    tag = save_small_model("bike", rounds=5, name="traced")
    serve("traced", 200, 5.0, model=tag)
    report = assess("traced", "regression", "rmse", ["season"], SETTINGS, Served(tag, 10.0), None, None, NOW, 0)
    write_report(report)
    assert latest_report("traced") == report
    rid = "0-150"  # an hour inside both windows' reach: the week's
    trace = trace_request("traced", rid)
    assert trace["found"] and trace["model"] == tag and len(trace["predictions"]) == 1
    assert trace["lineage"]["data_hash"] == "test-bike-0"
    assert [label["y"] for label in trace["labels"]] == [pytest.approx(100 + 10 * np.sin(150))]
    windows = {(c["window_h"], c["slice"]) for c in trace["counted_in"]}
    assert (168, "all") in windows and (168, "season") in windows and (24, "all") not in windows
    assert not trace_request("traced", "nope")["found"]


def test_the_gate_sends_a_passing_challenger_to_shadow_only_when_live_evidence_is_required() -> None:
    from mlcycle.tasks.registry.gate import Check, decide

    passed = [Check("metric", True, "better"), Check("smoke", True, "answers")]
    assert decide("m:2", "m:1", passed, {}).decision == "promote"
    shadowed = decide("m:2", "m:1", passed, {}, live_required=True)
    assert shadowed.decision == "shadow" and not shadowed.promoted and shadowed.checks[-1].rule == "live"
    assert "put in shadow" in shadowed.summary()
    assert decide("m:1", None, passed, {}, live_required=True).decision == "promote"  # first model: no champion
    failed = [Check("metric", False, "worse")]
    assert decide("m:2", "m:1", failed, {}, live_required=True).decision == "reject"


def test_multiclass_live_accuracy_reads_the_predicted_class_and_pairs_a_shadow(home: Path) -> None:
    classes = ("Adelie", "Chinstrap", "Gentoo")
    target = LabelTarget("multiclass", classes)
    log = RequestLog("p", {"island": "str"}, RequestLogConfig())
    shadow_log = RequestLog("p", {}, RequestLogConfig(), root=shadow_dir("p"), index=False)
    truth = {}
    for h in range(120):
        at = NOW - timedelta(hours=120 - h)
        right = classes[h % 3]
        wrong = classes[(h + 1) % 3] if h % 4 == 0 else right  # the champion is wrong on every 4th: 75 %
        log.add([{"island": "Dream"}], "p:1", f"r{h}", [0.8], labels=[wrong], at=at)
        shadow_log.add([{}], "p:2", f"r{h}", [0.9], labels=[right], at=at)  # the shadow is always right
        truth[f"r{h}"] = (right, at)
    log.flush()
    shadow_log.flush()
    store = LabelStore("p")
    for rid, (right, at) in truth.items():
        store.record([Label(rid, 0, right)], log.index.lookup, target, SETTINGS, "test", at + timedelta(hours=2))  # type: ignore[union-attr]
    settings = SETTINGS.model_copy(update={"shadow": ShadowConfig(min_labels=50)})
    report = assess("p", "multiclass", "accuracy", [], settings, Served("p:1", 0.95), Served("p:2", 0.9),
                    NOW - timedelta(hours=121), NOW, 0, classes=classes)  # fmt: skip
    week = {m.model: m for m in report.metrics if m.window_h == 168 and m.slice == "all"}
    assert week["p:1"].live == pytest.approx(0.75, abs=0.01) and week["p:2"].live == 1.0
    assert report.degradation.degraded  # 0.75, all of its interval below 95 % less a tenth
    assert report.shadow_decision == "promote"
