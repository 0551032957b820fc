"""The gate's rules, each able to reject a challenger, on small real bundles in the model store (the smoke test is
switched off here; tests/integration/test_gate_flow.py starts the real service)."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlcycle.schemas import load_config
from mlcycle.schemas.config import GateConfig
from mlcycle.tasks import registry
from mlcycle.tasks.preprocess import apply_preprocessor, fit_preprocessor
from mlcycle.tasks.registry.bundle import save_bundle
from mlcycle.tasks.registry.gate import check_slices, decide, gate_challenger, improvement, paired_bootstrap
from mlcycle.tasks.train.boost import TrainingData, fit_rounds, xgb_params
from mlcycle.tasks.train.prepare import encode_target
from tests.conftest import ROOT, adult_rows

_names = itertools.count()
# The latency budget is out of reach here except where a test lowers it: tests never depend on wall time.
FAST = {"bootstrap_samples": 100, "latency_rows": 10, "latency_p99_ms": 1e6, "smoke_test": False}


def noisy_adult(n: int, seed: int) -> pd.DataFrame:
    """Adult-shaped rows whose label depends on age and hours with noise, so models differ in quality."""
    rng = np.random.default_rng(seed)
    frame = adult_rows(n)
    frame = frame.assign(age=rng.integers(18, 80, n), hours_per_week=rng.integers(5, 80, n))
    logit = (frame["age"] - 45) / 8 + (frame["hours_per_week"] - 40) / 10 + rng.normal(scale=0.8, size=n)
    return frame.assign(income=np.where(logit > 0, ">50K", "<=50K"))


def make_bundle(name: str, train: pd.DataFrame, rounds: int, depth: int = 3, gate: dict[str, Any] | None = None,
                shuffle_labels: bool = False) -> tuple[str, Any]:  # fmt: skip
    """Fit a small booster on `train` and save it as a challenger of `name`."""
    config = load_config(
        ROOT / "configs/adult.yaml", {"name": name, **{f"gate.{k}": v for k, v in {**FAST, **(gate or {})}.items()}}
    )
    features = [c for c in train.columns if c != "income"]
    spec = fit_preprocessor(train, features, config.preprocess)
    y = encode_target(train["income"], config)
    if shuffle_labels:
        y = np.random.default_rng(1).permutation(y)
    data = TrainingData(apply_preprocessor(spec, train), y, apply_preprocessor(spec, train[:10]), y[:10])
    booster = fit_rounds(
        data.x_train, data.y_train, xgb_params("binary", {"max_depth": depth, "eta": 0.3}, 1, 0), rounds
    )
    metrics = {"primary": "roc_auc", "test": {"roc_auc": 0.0}, "baseline": {"roc_auc": 0.5}}
    return save_bundle(booster, spec, config, ["<=50K", ">50K"], metrics, {"data_hash": "unit"}), config


@pytest.fixture
def holdout() -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    test = noisy_adult(600, seed=2)
    y = (test["income"] == ">50K").to_numpy(dtype="float64")
    return test, y, np.full(len(y), 0.3)


def _rules(config: Any, **changes: Any) -> GateConfig:
    return config.gate.model_copy(update=changes)


def test_improvement_points_the_right_way_for_both_kinds_of_metric() -> None:
    assert improvement("roc_auc", 0.9, 0.8) == pytest.approx(0.1)
    assert improvement("rmse", 60.0, 70.0) == pytest.approx(10.0)  # a lower error is an improvement
    assert improvement("rmse", 70.0, 60.0) == pytest.approx(-10.0)


def test_bootstrap_interval_on_a_regression_metric_is_oriented_by_improvement() -> None:
    rng = np.random.default_rng(0)
    y = rng.normal(100, 30, 400)
    better, worse = y + rng.normal(0, 5, 400), y + rng.normal(0, 20, 400)
    up = paired_bootstrap("regression", "rmse", y, better, worse, 300, 0.95, seed=0)
    down = paired_bootstrap("regression", "rmse", y, worse, better, 300, 0.95, seed=0)
    assert up["low"] > 0 and up["observed"] > 10
    assert down["high"] < 0


def test_first_model_is_promoted_when_it_beats_the_trivial_baseline(holdout) -> None:  # type: ignore[no-untyped-def]
    test, y, trivial = holdout
    tag, config = make_bundle(f"gt{next(_names)}", noisy_adult(800, seed=1), rounds=30)
    record = gate_challenger(tag, test, y, trivial, config.gate, champion=None)
    assert record.promoted, record.reasons
    rules = {c.rule: c for c in record.checks}
    assert rules["baseline"].passed and rules["baseline"].evidence["low"] > 0
    assert rules["latency"].passed and rules["size"].passed
    assert rules["slices"].passed is None and rules["smoke"].passed is None  # nothing to compare; switched off


def test_first_model_that_does_not_beat_the_trivial_baseline_is_rejected(holdout) -> None:  # type: ignore[no-untyped-def]
    test, y, trivial = holdout
    tag, config = make_bundle(f"gt{next(_names)}", noisy_adult(800, seed=1), rounds=30, shuffle_labels=True)
    record = gate_challenger(tag, test, y, trivial, config.gate, champion=None)
    assert not record.promoted
    assert [c.rule for c in record.checks if c.passed is False] == ["baseline"]
    assert "trivial baseline" in record.reasons[0]


def test_challenger_no_better_than_the_champion_is_rejected_on_the_margin(holdout) -> None:  # type: ignore[no-untyped-def]
    test, y, trivial = holdout
    name = f"gt{next(_names)}"
    champion, _ = make_bundle(name, noisy_adult(800, seed=1), rounds=30)
    registry.promote(champion, reason="unit test champion")
    weaker, config = make_bundle(name, noisy_adult(800, seed=1), rounds=1, depth=1)
    record = gate_challenger(weaker, test, y, trivial, config.gate, champion=champion)
    assert not record.promoted
    metric = next(c for c in record.checks if c.rule == "metric")
    assert metric.passed is False and metric.evidence["low"] <= config.gate.margin
    assert metric.evidence["against"] == f"champion {champion}"
    # the same model again: no improvement at all, so even a zero margin is not cleared
    same, _ = make_bundle(name, noisy_adult(800, seed=1), rounds=30)
    assert not gate_challenger(same, test, y, trivial, config.gate, champion=champion).promoted
    # a clearly better one is promoted over the weak one by the same rules
    assert gate_challenger(champion, test, y, trivial, config.gate, champion=weaker).promoted


def test_latency_and_size_budgets_reject_a_challenger(holdout) -> None:  # type: ignore[no-untyped-def]
    test, y, trivial = holdout
    tag, config = make_bundle(f"gt{next(_names)}", noisy_adult(800, seed=1), rounds=30)
    slow = gate_challenger(tag, test, y, trivial, _rules(config, latency_p99_ms=1e-4), champion=None)
    assert not slow.promoted and [c.rule for c in slow.checks if c.passed is False] == ["latency"]
    assert slow.checks[[c.rule for c in slow.checks].index("latency")].evidence["p99_ms"] > 1e-4
    big = gate_challenger(tag, test, y, trivial, _rules(config, max_size_mb=1e-6), champion=None)
    assert not big.promoted and [c.rule for c in big.checks if c.passed is False] == ["size"]
    assert "over budget" in big.reasons[0]


def test_a_slice_that_gets_worse_rejects_the_challenger() -> None:
    rng = np.random.default_rng(0)
    n = 400
    groups = pd.DataFrame({"sex": np.where(np.arange(n) % 2, "Female", "Male")})
    y = rng.integers(0, 2, n).astype(float)
    champion = np.clip(y * 0.6 + rng.uniform(0, 0.4, n), 0, 1)
    challenger = champion.copy()
    female = groups["sex"].to_numpy() == "Female"
    challenger[female] = rng.uniform(0, 1, female.sum())  # no better than chance on women
    rules = GateConfig(slice_tolerance=0.02)
    check = check_slices("binary", "roc_auc", y, challenger, champion, groups, rules)
    assert check.passed is False and "sex=Female" in check.detail
    record = decide("m:2", "m:1", [check], {"rows": n})
    assert record.decision == "reject" and record.reasons[0].startswith("slices:")
    assert check_slices("binary", "roc_auc", y, champion, champion, groups, rules).passed


def test_latency_is_timed_on_the_service_path(holdout, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """The budget is judged on what the service does per request (JSON validation, `encode_records`, the booster's
    `inplace_predict`), not on the pandas path: a slow `inplace_predict` fails it, a slow pandas path does not."""
    import time

    import xgboost as xgb

    import mlcycle.tasks.registry.bundle

    test, y, trivial = holdout
    tag, config = make_bundle(f"gate-path-{next(_names)}", noisy_adult(400, seed=1), rounds=10)
    # Far above the service path's own time (well under a millisecond), below each slowed call's 0.35 s.
    rules = _rules(config, latency_p99_ms=300.0, latency_rows=10)
    slow_pandas = mlcycle.tasks.registry.bundle.apply_preprocessor

    def pandas_path(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.35)
        return slow_pandas(*args, **kwargs)

    monkeypatch.setattr(mlcycle.tasks.registry.bundle, "apply_preprocessor", pandas_path)
    passed = gate_challenger(tag, test, y, trivial, rules, champion=None).checks
    assert next(c for c in passed if c.rule == "latency").passed, [c.detail for c in passed]
    real = xgb.Booster.inplace_predict

    def service_path(self: Any, *args: Any, **kwargs: Any) -> Any:
        time.sleep(0.35)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(xgb.Booster, "inplace_predict", service_path)
    failed = next(c for c in gate_challenger(tag, test, y, trivial, rules, champion=None).checks if c.rule == "latency")
    assert failed.passed is False and failed.evidence["p99_ms"] >= 350 and "service's path" in failed.detail


def test_a_project_dataset_named_like_a_demo_is_smoke_tested_with_its_own_rows() -> None:
    """The demo's golden requests are the demo's: a project's `penguins`, with its own schema, is smoke-tested with
    rows of its own holdout (the demo's `"year": 2007` does not fit a schema that types the year as a code)."""
    import json

    from mlcycle.schemas import load_config
    from mlcycle.tasks.registry.smoke import golden_records
    from tests.conftest import ROOT

    demo = load_config(ROOT / "configs" / "penguins.yaml")
    examples = json.loads((ROOT / "serving" / "examples" / "penguins.json").read_text())
    assert golden_records(demo) == examples
    project = demo.model_copy(update={"features_schema_ref": "schemas/penguins.py:PenguinsFeatures"})
    holdout = pd.DataFrame({"island": ["Biscoe", "Dream"], "year": ["2007", "2009"]})
    assert golden_records(project, holdout) == [
        {"island": "Biscoe", "year": "2007"},
        {"island": "Dream", "year": "2009"},
    ]
    with pytest.raises(FileNotFoundError, match="no golden requests for penguins"):
        golden_records(project)
