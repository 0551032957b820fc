"""Metrics by task, reference models, slices, calibration, and the bias report on hand-checked data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlcycle.tasks.train.boost import TrainingData
from mlcycle.tasks.train.evaluate import bias_report, calibration_table, evaluate_model, reference_predictions, score


def test_binary_metrics_of_a_perfect_ranking() -> None:
    metrics = score("binary", np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9]))
    assert metrics["roc_auc"] == 1.0
    assert metrics["accuracy"] == 1.0
    assert metrics["brier"] == pytest.approx((0.01 + 0.04 + 0.04 + 0.01) / 4)


def test_regression_metrics() -> None:
    metrics = score("regression", np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 5.0]))
    assert metrics["rmse"] == pytest.approx(np.sqrt(4 / 3))
    assert metrics["mae"] == pytest.approx(2 / 3)
    assert "rmsle" in metrics


def test_calibration_table_bins_predictions() -> None:
    table = calibration_table(np.array([0, 1, 1, 1]), np.array([0.05, 0.05, 0.95, 0.92]))
    assert table == [
        {"bin": "0.0-0.1", "rows": 2, "predicted": pytest.approx(0.05), "observed": 0.5},
        {"bin": "0.9-1.0", "rows": 2, "predicted": pytest.approx(0.935), "observed": 1.0},
    ]


def test_bias_metrics_on_a_hand_checked_example() -> None:
    # 40 women, 40 men. Women: 10 positives, the model finds 5 of them and flags 8 rows in all.
    # Men: 20 positives, the model finds 16 and flags 20 rows in all.
    y = np.array([1] * 10 + [0] * 30 + [1] * 20 + [0] * 20)
    flagged_women = [1] * 5 + [0] * 5 + [1] * 3 + [0] * 27
    flagged_men = [1] * 16 + [0] * 4 + [1] * 4 + [0] * 16
    pred = np.array(flagged_women + flagged_men, dtype=float) * 0.8 + 0.1
    test = pd.DataFrame({"sex": ["F"] * 40 + ["M"] * 40})
    train = pd.DataFrame({"sex": ["F"] * 30 + ["M"] * 70})
    everything = pd.concat([train, test])
    report = bias_report("binary", y, pred, test, train, everything)["sex"]
    groups = {g["value"]: g for g in report["groups"]}
    assert groups["F"]["positive_rate"] == pytest.approx(8 / 40)
    assert groups["M"]["positive_rate"] == pytest.approx(20 / 40)
    assert report["demographic_parity_difference"] == pytest.approx(0.5 - 0.2)
    assert groups["F"]["true_positive_rate"] == pytest.approx(0.5)
    assert groups["M"]["true_positive_rate"] == pytest.approx(0.8)
    assert report["equal_opportunity_difference"] == pytest.approx(0.3)
    assert groups["F"]["train_share"] == pytest.approx(0.3)
    assert groups["F"]["all_share"] == pytest.approx(70 / 180)
    assert report["max_representation_gap"] == pytest.approx(70 / 180 - 0.3)
    assert report["largest_roc_auc_gap"] == pytest.approx(abs(groups["M"]["roc_auc"] - groups["F"]["roc_auc"]))


def test_small_groups_are_shown_but_not_in_the_gaps() -> None:
    y = np.array([0, 1] * 20 + [1, 0])
    pred = np.array([0.2, 0.8] * 20 + [0.1, 0.9])
    test = pd.DataFrame({"g": ["big"] * 40 + ["tiny"] * 2})
    report = bias_report("binary", y, pred, test, test, test)["g"]
    assert {g["value"] for g in report["groups"]} == {"big", "tiny"}
    assert report["demographic_parity_difference"] is None  # only one group is large enough to compare


def _data(task: str) -> tuple[TrainingData, pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(1)
    n = 400
    x = pd.DataFrame(
        {"a": rng.normal(size=n), "b": pd.Categorical(rng.choice(["u", "v", None], n), categories=["u", "v"])}
    )
    signal = x["a"].to_numpy() + (x["b"] == "u").to_numpy() * 1.0
    y = (signal + rng.normal(scale=0.3, size=n) > 0.5).astype(float) if task == "binary" else signal * 10 + 50
    return TrainingData(x[:200], y[:200], x[200:300], y[200:300]), x[300:], y[300:]


@pytest.mark.parametrize("task", ["binary", "regression"])
def test_reference_models_are_fitted_and_beat_trivial(task: str) -> None:
    data, x_test, y_test = _data(task)
    refs = reference_predictions(task, data, x_test, seed=0)  # type: ignore[arg-type]
    assert set(refs) == {"linear", "default_xgboost", "trivial"}
    report = evaluate_model(task, y_test, refs["default_xgboost"], refs, pd.DataFrame({"s": ["x"] * 100}),  # type: ignore[arg-type]
                            pd.DataFrame({"s": ["x"] * 200}), pd.DataFrame({"s": ["x"] * 400}))  # fmt: skip
    primary = report["primary"]
    better = (lambda a, b: a > b) if task == "binary" else (lambda a, b: a < b)
    assert better(report["references"]["linear"][primary], report["references"]["trivial"][primary])
    assert report["baseline"] == report["references"]["trivial"]
    assert ("calibration" in report) == (task == "binary")
