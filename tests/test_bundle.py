"""The bundle format: what training saves, the service loads, and predictions survive the round trip."""

from __future__ import annotations

import json
from pathlib import Path

import bentoml
import numpy as np

from mlcycle.schemas import load_config
from mlcycle.schemas.config import PreprocessConfig
from mlcycle.tasks.preprocess import apply_preprocessor, fit_preprocessor
from mlcycle.tasks.registry.bundle import BOOSTER_FILE, load_bundle, predict_raw, save_bundle
from mlcycle.tasks.train.boost import TrainingData, fit_booster, xgb_params
from mlcycle.tasks.train.prepare import encode_target
from tests.conftest import ROOT, adult_rows


def test_round_trip_through_the_model_store_keeps_predictions_and_has_no_pickle() -> None:
    config = load_config(ROOT / "configs/adult.yaml")
    frame = adult_rows(120)
    features = [c for c in frame.columns if c != "income"]
    spec = fit_preprocessor(frame[:80], features, PreprocessConfig(scale="robust", impute="median"))
    data = TrainingData(apply_preprocessor(spec, frame[:80]), encode_target(frame["income"][:80], config),
                        apply_preprocessor(spec, frame[80:100]), encode_target(frame["income"][80:100], config))  # fmt: skip
    booster = fit_booster(data, xgb_params("binary", {"max_depth": 2}, 1, 0), 30, 5)
    before = predict_raw(booster, spec, frame[100:])

    metrics = {"primary": "roc_auc", "test": {"roc_auc": 0.5}}
    tag = save_bundle(booster, spec, config, ["<=50K", ">50K"], metrics, {"data_hash": "abc"})
    bundle = load_bundle(tag)

    np.testing.assert_array_equal(bundle.predict_raw(frame[100:]), before)
    assert bundle.preprocessor == spec
    root = Path(bentoml.models.get(tag).path)
    assert (root / BOOSTER_FILE).exists()
    assert json.loads((root / "preprocessor.json").read_text())["features"][0]["name"] == "age"
    assert not [p for p in root.rglob("*") if p.suffix in {".pkl", ".pickle", ".joblib"}]
    records, unseen = bundle.predict_records(frame[100:102])
    assert {r["label"] for r in records} <= {"<=50K", ">50K"}
    assert unseen == {}
