"""The gate's interval on the primary metric: the vectorised bootstrap draws the same resamples as a row-by-row
loop and gives the same interval; DeLong's interval, used for ROC AUC on large holdouts, agrees with it."""

from __future__ import annotations

import numpy as np
import pytest

from mlcycle.tasks.registry import gate
from mlcycle.tasks.registry.gate import improvement, metric_value, paired_bootstrap


def scores(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.25).astype(float)
    better = np.clip(0.35 * y + 0.65 * rng.random(n), 0, 1)
    worse = np.round(np.clip(0.2 * y + 0.8 * rng.random(n), 0, 1), 2)  # rounded: ties in the scores
    return y, better, worse


@pytest.mark.parametrize(("task", "metric"), [("binary", "roc_auc"), ("regression", "rmse"), ("regression", "mae")])
def test_the_vectorised_bootstrap_is_the_row_by_row_bootstrap(task: str, metric: str) -> None:
    y, better, worse = scores(400)
    result = paired_bootstrap(task, metric, y, better, worse, 300, 0.9, seed=5)  # type: ignore[arg-type]
    rng = np.random.default_rng(5)
    loop = []
    for _ in range(300):
        rows = rng.integers(0, 400, 400)
        loop.append(improvement(metric, metric_value(task, metric, y[rows], better[rows]),  # type: ignore[arg-type]
                                metric_value(task, metric, y[rows], worse[rows])))  # type: ignore[arg-type]  # fmt: skip
    assert result["method"] == "bootstrap" and result["samples"] == 300
    assert result["low"] == pytest.approx(np.quantile(loop, 0.05), abs=1e-12)
    assert result["high"] == pytest.approx(np.quantile(loop, 0.95), abs=1e-12)


def test_delong_on_a_large_holdout_agrees_with_the_bootstrap(monkeypatch: pytest.MonkeyPatch) -> None:
    y, better, worse = scores(30_000, seed=1)
    delong = paired_bootstrap("binary", "roc_auc", y, better, worse, 1000, 0.95, seed=2)
    assert delong["method"] == "delong" and delong["rows"] == 30_000
    monkeypatch.setattr(gate, "DELONG_ROWS", 10**9)
    boot = paired_bootstrap("binary", "roc_auc", y, better, worse, 1000, 0.95, seed=2)
    assert boot["method"] == "bootstrap"
    assert delong["observed"] == pytest.approx(boot["observed"], abs=1e-12)
    width = boot["high"] - boot["low"]
    assert abs(delong["low"] - boot["low"]) < 0.1 * width and abs(delong["high"] - boot["high"]) < 0.1 * width
