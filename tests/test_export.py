"""Export for client devices: the known XGBoost → ONNX traps, each shown to matter and to be handled, on small
boosters; the exported folder's predictor needs nothing from mlcycle. (Parity of real Adult and bike models:
tests/integration/test_export_models.py.)"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from mlcycle.schemas.adult import AdultFeatures
from mlcycle.schemas.config import PreprocessConfig
from mlcycle.tasks.preprocess import PreprocessorSpec, apply_preprocessor, fit_preprocessor
from mlcycle.tasks.registry.bundle import predict_raw
from mlcycle.tasks.registry.export import ExportError, booster_to_onnx, export_booster, parse_base_score, records_of
from mlcycle.tasks.train.boost import dmatrix
from tests.test_gate import noisy_adult

FEATURES = ["age", "workclass", "fnlwgt", "education", "education_num", "marital_status", "occupation",
            "relationship", "race", "sex", "capital_gain", "capital_loss", "hours_per_week", "native_country"]  # fmt: skip


def _frame(n: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = noisy_adult(n, seed)
    # several categories that matter, so the trees split on category sets; some missing and some never seen
    occupations = np.array(["Adm-clerical", "Sales", "Tech-support", "Craft-repair", "Exec-managerial"])
    frame = frame.assign(occupation=rng.choice(occupations, n), race=rng.choice(["White", "Black", "Other"], n))
    lift = frame["occupation"].isin(["Sales", "Exec-managerial"]) & (frame["age"] > 35)
    return frame.assign(income=np.where(lift | (frame["income"] == ">50K"), ">50K", "<=50K"))


def _fit(frame: pd.DataFrame, params: dict[str, Any], rounds: int, early_stop: bool = False,
         preprocess: PreprocessConfig | None = None) -> tuple[xgb.Booster, PreprocessorSpec]:  # fmt: skip
    spec = fit_preprocessor(frame, FEATURES, preprocess or PreprocessConfig(impute="median", scale="standard"))
    x = apply_preprocessor(spec, frame)
    y = (frame["income"] == ">50K").to_numpy(dtype="float64") if "binary" in params["objective"] else frame["age"]
    base = {"tree_method": "hist", "max_depth": 4, "eta": 0.3, "nthread": 1, "seed": 0, "max_cat_to_onehot": 1}
    if not early_stop:
        return xgb.train({**base, **params}, dmatrix(x, y, 1), rounds), spec
    half = len(x) // 2
    booster = xgb.train({**base, **params}, dmatrix(x[:half], y[:half], 1), rounds,
                        evals=[(dmatrix(x[half:], y[half:], 1), "valid")], early_stopping_rounds=3,
                        verbose_eval=False)  # fmt: skip
    return booster, spec


def _records(n: int = 60) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    frame = _frame(n, seed=7)
    frame.loc[frame.index[::9], "occupation"] = "Never-seen-occupation"  # unseen: missing, as in serving
    frame.loc[frame.index[::7], "occupation"] = None
    frame.loc[frame.index[::5], "hours_per_week"] = None  # filled with the training median
    return frame, records_of(frame, FEATURES)


def _export(tmp_path: Path, booster: xgb.Booster, spec: PreprocessorSpec, fmt: str = "onnx", task: str = "binary"):  # type: ignore[no-untyped-def]
    frame, records = _records()
    expected = predict_raw(booster, spec, frame)
    return export_booster("unit:1", booster, spec, task, ["<=50K", ">50K"] if task == "binary" else [],
                          AdultFeatures, fmt, tmp_path / fmt, records, expected, latency_calls=20)  # type: ignore[arg-type]  # fmt: skip


def test_base_score_is_read_from_xgboost_3_vector_strings() -> None:
    assert parse_base_score("[5E-1]") == 0.5
    assert parse_base_score("[4.86E-1]") == pytest.approx(0.486)
    assert parse_base_score("0.5") == 0.5
    booster, _ = _fit(_frame(), {"objective": "binary:logistic", "base_score": 0.2}, 5)
    stored = json.loads(booster.save_raw("json"))["learner"]["learner_model_param"]["base_score"]
    assert stored.startswith("[") and parse_base_score(stored) == pytest.approx(0.2)


@pytest.mark.parametrize("base_score", [0.2, None])
def test_onnx_export_keeps_the_base_score_of_a_binary_model(tmp_path: Path, base_score: float | None) -> None:
    params = {"objective": "binary:logistic", **({"base_score": base_score} if base_score else {})}
    booster, spec = _fit(_frame(), params, 20)
    report = _export(tmp_path, booster, spec)
    assert report.parity_max_abs_diff <= 1e-5


def test_a_base_score_taken_as_a_margin_would_shift_every_prediction(tmp_path: Path) -> None:
    booster, spec = _fit(_frame(), {"objective": "binary:logistic", "base_score": 0.2}, 20)
    frame, _ = _records()
    margin = booster.predict(dmatrix(apply_preprocessor(spec, frame), None, 1), output_margin=True)
    right, wrong = 1 / (1 + np.exp(-margin)), 1 / (1 + np.exp(-(margin - np.log(0.2 / 0.8) + 0.2)))
    np.testing.assert_allclose(right, predict_raw(booster, spec, frame), atol=1e-6)
    assert np.abs(wrong - right).max() > 0.05  # the trap is real; the export above avoids it


def test_regression_export_adds_the_mean_as_base_score(tmp_path: Path) -> None:
    booster, spec = _fit(_frame(), {"objective": "reg:squarederror"}, 30)
    model = json.loads(booster.save_raw("json"))
    assert parse_base_score(model["learner"]["learner_model_param"]["base_score"]) > 20  # boost_from_average: ~age
    for fmt in ("onnx", "xgboost-json"):
        assert _export(tmp_path, booster, spec, fmt, task="regression").parity_max_abs_diff <= 1e-5


def test_native_categorical_splits_export_with_set_membership(tmp_path: Path) -> None:
    booster, spec = _fit(_frame(), {"objective": "binary:logistic"}, 30)
    trees = json.loads(booster.save_raw("json"))["learner"]["gradient_booster"]["model"]["trees"]
    partitions = [
        t
        for t in trees
        if any(
            len(t["categories"][s : s + n]) > 1
            for s, n in zip(t["categories_segments"], t["categories_sizes"], strict=True)  # fmt: skip
        )
    ]
    assert partitions, "the test needs trees that split on sets of several categories"
    for fmt in ("onnx", "xgboost-json"):
        report = _export(tmp_path, booster, spec, fmt)
        assert report.parity_max_abs_diff <= 1e-5, fmt


def test_every_tree_past_the_best_iteration_is_kept_like_the_served_model(tmp_path: Path) -> None:
    booster, spec = _fit(_frame(600), {"objective": "binary:logistic", "eta": 0.8, "max_depth": 6}, 200,
                         early_stop=True)  # fmt: skip
    best = int(booster.attributes()["best_iteration"])
    assert best + 1 < booster.num_boosted_rounds(), "the test needs trees after the best iteration"
    report = _export(tmp_path, booster, spec)
    assert report.parity_max_abs_diff <= 1e-5 and report.trees == booster.num_boosted_rounds()
    assert any("best iteration" in note for note in report.notes)
    # the trap: cutting at best_iteration (as some converters do) no longer matches what the service computes
    frame, _ = _records()
    cut = predict_raw(booster[: best + 1], spec, frame)
    assert np.abs(cut - predict_raw(booster, spec, frame)).max() > 1e-3


def test_feature_order_must_be_the_preprocessors(tmp_path: Path) -> None:
    booster, spec = _fit(_frame(), {"objective": "binary:logistic"}, 5)
    assert booster.feature_names == spec.feature_names  # real names, not f0, f1, ...
    with pytest.raises(ExportError, match="same order"):
        booster_to_onnx(booster, list(reversed(spec.feature_names)))
    unnamed = xgb.Booster(model_file=bytearray(booster.save_raw("ubj")))
    unnamed.feature_names = None  # a booster trained on a bare matrix: split indices are positions
    assert _export(tmp_path, unnamed, spec).parity_max_abs_diff <= 1e-5


def test_parity_failure_fails_the_export(tmp_path: Path) -> None:
    booster, spec = _fit(_frame(), {"objective": "binary:logistic"}, 10)
    frame, records = _records()
    wrong = predict_raw(booster, spec, frame) + 1e-3
    with pytest.raises(ExportError, match="differs from the registered one"):
        export_booster("unit:1", booster, spec, "binary", ["<=50K", ">50K"], AdultFeatures, "onnx",
                       tmp_path / "x", records, wrong, latency_calls=5)  # fmt: skip


def test_the_exported_folder_runs_without_mlcycle(tmp_path: Path) -> None:
    booster, spec = _fit(_frame(), {"objective": "binary:logistic"}, 10)
    report = _export(tmp_path, booster, spec)
    folder = Path(report.folder)
    assert {"model.onnx", "preprocessor.json", "schema.json", "predict.py", "README.md", "meta.json"} <= {
        p.name for p in folder.iterdir()
    }
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(ast.parse((folder / "predict.py").read_text()))
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")])
    }
    assert not imported & {"tasks", "schemas", "flows", "serving", "pandas", "mlcycle"}, imported
    # run it as a user would, from the folder, with an isolated interpreter (-I: no cwd or user site on the path)
    answer = subprocess.run([sys.executable, "-I", "predict.py", "golden.json"], cwd=folder, capture_output=True,
                            text=True, timeout=120, check=True)  # fmt: skip
    got = [a["probability"] for a in json.loads(answer.stdout)]
    frame, _ = _records()
    np.testing.assert_allclose(got, predict_raw(booster, spec, frame), atol=1e-5)
    schema = json.loads((folder / "schema.json").read_text())
    assert {f["name"] for f in schema["fields"]} == set(FEATURES)
