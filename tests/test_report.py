"""The run report: plots are real PNGs, the HTML page embeds them, the markdown carries every section."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlcycle.tasks.train.boost import TrainingData, dmatrix, fit_booster, xgb_params
from mlcycle.tasks.train.evaluate import evaluate_model
from mlcycle.tasks.train.prepare import LeakageReport
from mlcycle.tasks.train.report import markdown_report, write_report

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("task", ["binary", "regression"])
def test_report_writes_plots_html_and_markdown(tmp_path: Path, task: str) -> None:
    rng = np.random.default_rng(0)
    x = pd.DataFrame({"a": rng.normal(size=300), "b": rng.normal(size=300)})
    y = (x["a"] > 0).to_numpy(dtype=float) if task == "binary" else x["a"].to_numpy() * 3 + 10
    data = TrainingData(x[:200], y[:200], x[200:250], y[200:250])
    booster = fit_booster(data, xgb_params(task, {"max_depth": 2}, 1, 0), 20, 5)  # type: ignore[arg-type]
    x_test, y_test = x[250:], y[250:]
    pred = booster.predict(dmatrix(x_test, None, 1))
    refs = {"trivial": np.full(50, y[:200].mean())}
    groups = pd.DataFrame({"g": ["p", "q"] * 25})
    metrics = evaluate_model(task, y_test, pred, refs, groups, groups, groups)  # type: ignore[arg-type]
    leakage = LeakageReport(suspects=[], duplicated_in_train={"valid": 0, "test": 0})

    files = write_report(tmp_path / "r", "demo:1", task, y_test, pred, refs, metrics, booster, leakage)  # type: ignore[arg-type]

    expected = {"roc.png", "calibration.png"} if task == "binary" else {"residuals.png"}
    assert expected | {"feature_importance.png", "slices.png"} == {p.name for p in files.plots}
    assert all(p.read_bytes().startswith(PNG) for p in files.plots)
    page = files.html.read_text()
    assert page.count("data:image/png;base64,") == len(files.plots)
    text = markdown_report("demo:1", metrics, leakage, files)
    for heading in ("against references", "Slices by `g`", "Bias by `g`", "Leakage checks", "Plots"):
        assert heading in text
