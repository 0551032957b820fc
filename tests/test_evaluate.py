"""Metrics by task, next to the trivial baseline, and per slice."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tasks.evaluate import evaluate_predictions, score


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


def test_report_has_baseline_and_slices() -> None:
    y = np.array([0, 1, 0, 1, 1, 0])
    pred = np.array([0.2, 0.7, 0.4, 0.9, 0.6, 0.1])
    groups = pd.DataFrame({"sex": ["F", "F", "M", "M", "M", None]})
    report = evaluate_predictions("binary", y, pred, y_train=np.array([0, 0, 0, 1]), groups=groups)
    assert report["baseline"]["roc_auc"] == 0.5
    assert report["test"]["roc_auc"] == 1.0
    by_value = {row["value"]: row for row in report["slices"]["sex"]}
    assert by_value["M"]["rows"] == 3
    assert by_value["<missing>"]["share"] == pytest.approx(1 / 6)
