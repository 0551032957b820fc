"""Small real models for the service tests: fitted on a few hundred made-up rows in a second, saved to the
session's model store through the same `save_bundle` training uses (no Ray, no Prefect)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from mlcycle.schemas import load_config
from mlcycle.tasks.preprocess import apply_preprocessor, fit_preprocessor
from mlcycle.tasks.registry.bundle import collect_lineage, save_bundle
from mlcycle.tasks.train.boost import dmatrix, fit_rounds, xgb_params
from mlcycle.tasks.train.prepare import encode_target, feature_columns
from tests.conftest import ROOT, adult_rows


def bike_rows(n: int = 300, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    days = pd.date_range("2011-01-01", periods=n, freq="37h")
    hours = ["12am", *(f"{h}am" for h in range(1, 12)), "12pm", *(f"{h}pm" for h in range(1, 12))]
    return pd.DataFrame({
        "dteday": days.strftime("%Y-%m-%d"), "season": rng.choice(["spring", "summer", "fall", "winter"], n),
        "hr": rng.choice(hours, n), "holiday": rng.choice(["No", "Yes"], n),
        "weekday": rng.choice(["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun", None], n),
        "workingday": rng.choice(["No", "Yes"], n), "weathersit": rng.choice(["Clear", "Mist", "Light Rain", None], n),
        "temp": rng.uniform(-5, 35, n).round(2), "atemp": rng.uniform(-5, 40, n).round(2),
        "hum": rng.uniform(10, 100, n).round(1), "windspeed": rng.uniform(0, 40, n).round(2),
        "casual": rng.integers(0, 50, n), "registered": rng.integers(0, 300, n),
    }).assign(cnt=lambda f: f.casual + f.registered)  # fmt: skip


def save_small_model(dataset: str, rounds: int = 20, seed: int = 0, name: str | None = None) -> str:
    """Train a small real booster for `dataset` (saved under `name`, default the dataset's) and return its tag."""
    config = load_config(ROOT / "configs" / f"{dataset}.yaml", {"name": name} if name else None)
    rows = None
    frame = rows if rows is not None else (adult_rows(300) if dataset == "adult" else bike_rows(300, seed))
    features = feature_columns(list(frame.columns), config)
    spec = fit_preprocessor(frame, features, config.preprocess)
    target = encode_target(frame[config.target], config)
    params = xgb_params(config.task, {"eta": 0.3, "max_depth": 4, "max_bin": 64}, nthread=1, seed=seed)
    booster = fit_rounds(apply_preprocessor(spec, frame), target, params, rounds)
    classes = ["<=50K", ">50K"] if config.task == "binary" else []
    metric = "roc_auc" if config.task == "binary" else "rmse"
    metrics: dict[str, Any] = {"primary": metric, "test": {metric: 0.8 if config.task == "binary" else 10.0}}
    lineage = collect_lineage(f"test-{dataset}-{seed}", "test-schema", config, {"flow_run_id": None})
    return save_bundle(booster, spec, config, classes, metrics, lineage)


def offline(tag: str, records: list[dict[str, Any]]) -> np.ndarray:
    """The offline prediction of a bundle (pandera + pandas path) for JSON records."""
    from mlcycle.schemas import resolve_schema
    from mlcycle.tasks.records import check_records
    from mlcycle.tasks.registry.bundle import load_bundle

    bundle = load_bundle(tag)
    frame, errors = check_records(records, resolve_schema(bundle.config.features_schema_ref), 10_000)
    assert frame is not None and not errors, errors
    return bundle.predict_raw(frame)


__all__ = ["bike_rows", "dmatrix", "offline", "save_small_model"]
