"""Multiclass for real: the penguins (a CSV inside the pinned `palmerpenguins` wheel) through the training flow under
Prefect with a real Ray Tune search, the gate with its real smoke test, a real `bentoml serve`, export parity, the
drift check on the predicted classes, and a refresh."""

from __future__ import annotations

import zipfile
from pathlib import Path

import httpx
import numpy as np
import pytest

from mlcycle.schemas import load_config, resolve_schema
from mlcycle.schemas.penguins import SPECIES
from mlcycle.tasks.paths import mlcycle_home
from mlcycle.tasks.registry.bundle import load_bundle
from mlcycle.tasks.registry.export import PARITY_TOLERANCE, export_model, records_of
from mlcycle.tasks.registry.reproduce import rebuild_splits
from mlcycle.tasks.registry.smoke import ServeError, golden_records, serving_model
from tests.conftest import ROOT
from tests.integration.conftest import SMALL_RUN

pytestmark = pytest.mark.integration

# 344 birds: the whole file, not a sample; the drift check judges the few served rows
SETTINGS = {**{k: v for k, v in SMALL_RUN.items() if k != "source.sample_rows"}, "drift.min_rows": 20}


@pytest.fixture(scope="module")
def penguins_run(prefect_server: None, local_ray: None):  # type: ignore[no-untyped-def]
    from mlcycle.flows.training import train_flow

    config = load_config(ROOT / "configs" / "penguins.yaml", SETTINGS)
    return config, train_flow(config)


def _records(tag: str) -> tuple[list[dict], np.ndarray]:  # type: ignore[type-arg]
    """The golden requests and the model's own test rows, as request records, with the offline predictions."""
    bundle = load_bundle(tag)
    fields = list(resolve_schema(bundle.config.features_schema_ref).to_schema().columns)
    test = rebuild_splits(bundle).test
    records = golden_records(bundle.config) + records_of(test, fields)
    from mlcycle.tasks.records import check_records

    frame, errors = check_records(records, resolve_schema(bundle.config.features_schema_ref), 10_000)
    assert frame is not None, errors
    return records, bundle.predict_raw(frame)


def test_the_flow_trains_evaluates_and_gates_a_multiclass_model(penguins_run) -> None:  # type: ignore[no-untyped-def]
    config, result = penguins_run
    assert result.task == "multiclass" and result.primary_metric == "log_loss"
    assert {"log_loss", "accuracy", "f1_macro", "f1_weighted", "roc_auc_ovr"} <= set(result.test)
    assert set(result.references) == {"linear", "default_xgboost", "trivial"}
    assert result.test["log_loss"] < result.baseline["log_loss"] and result.test["accuracy"] > 0.9
    bundle = load_bundle(result.tag)
    assert bundle.classes == SPECIES and bundle.booster.num_boosted_rounds() > 0
    assert [r["class"] for r in bundle.metrics["per_class"]] == SPECIES
    assert sum(map(sum, bundle.metrics["confusion"]["counts"])) == result.rows["test"]
    report = Path(result.report).parent
    assert (report / "confusion_matrix.png").stat().st_size > 0 and not (report / "roc.png").exists()
    assert result.decision in ("promote", "reject") and result.gate_reasons
    from mlcycle.flows.models import GATE_FILE, bundle_folder

    gate = __import__("json").loads((bundle_folder(result.tag) / GATE_FILE).read_text())
    smoke = next(c for c in gate["checks"] if c["rule"] == "smoke")
    assert smoke["passed"] is True, smoke["detail"]  # the real service answered as the model does offline


def test_the_real_service_answers_a_label_and_probabilities_equal_to_offline(penguins_run) -> None:  # type: ignore[no-untyped-def]
    from mlcycle.tasks.monitor.drift import read_request_log

    config, result = penguins_run
    records, offline = _records(result.tag)
    try:
        with serving_model(result.tag, timeout_s=120) as url:
            response = httpx.post(f"{url}/predict", json={"records": records}, timeout=60)
            metadata = httpx.get(f"{url}/metadata", timeout=30).json()
    except ServeError as exc:
        pytest.fail(str(exc))
    assert response.status_code == 200, response.text
    assert metadata["classes"] == SPECIES and metadata["task"] == "multiclass"
    predictions = response.json()["predictions"]
    served = np.array([[p["probabilities"][c] for c in SPECIES] for p in predictions])
    np.testing.assert_allclose(served.sum(axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(served, offline, rtol=0, atol=1e-6)
    assert [p["label"] for p in predictions] == [SPECIES[i] for i in offline.argmax(axis=1)]
    logged = read_request_log(mlcycle_home() / "requests" / config.name)
    assert len(logged) >= len(records) and set(logged["_label"].dropna()) <= set(SPECIES)


def test_the_drift_check_compares_the_predicted_classes(penguins_run) -> None:  # type: ignore[no-untyped-def]
    from mlcycle.flows.drift import drift_flow

    config, result = penguins_run
    if not any(True for _ in (mlcycle_home() / "requests" / config.name).glob("*.parquet")):
        pytest.skip("needs the request log of the service test")
    checked = drift_flow(config)
    prediction = next(r for r in checked.rows if r.source == "requests" and r.feature == "prediction")
    assert prediction.detail.startswith("predicted class") and prediction.psi >= 0


@pytest.mark.parametrize("fmt", ["onnx", "xgboost-json"])
def test_the_exported_model_matches_the_registered_one(penguins_run, fmt: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, result = penguins_run
    records, _ = _records(result.tag)
    report = export_model(result.tag, fmt, tmp_path / fmt, records=records)  # type: ignore[arg-type]
    assert report.parity_max_abs_diff <= PARITY_TOLERANCE and report.parity_rows == len(records) > 60


def test_a_refresh_keeps_the_classes_and_boosts_on_the_new_batch(penguins_run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from mlcycle.flows.ingest import ingest_flow
    from mlcycle.flows.training import refresh_flow

    config, result = penguins_run
    wheel = next((mlcycle_home() / "cache" / "wheels").glob("palmerpenguins-*.whl"))
    lines = zipfile.ZipFile(wheel).read("palmerpenguins/data/penguins.csv").decode().splitlines()
    new_file = tmp_path / "penguins-new.csv"
    new_file.write_text("\n".join([lines[0], *lines[1::2]]) + "\n")  # every other bird again, as a new batch
    ingest_flow(config, [str(new_file)])
    refreshed = refresh_flow(config, result.tag)
    assert refreshed is not None and refreshed.task == "multiclass"
    bundle = load_bundle(refreshed.tag)
    assert bundle.classes == SPECIES and bundle.lineage["parent_tag"] == result.tag
    assert "log_loss" in bundle.metrics["parent_on_same_test"]
    assert bundle.booster.num_boosted_rounds() >= load_bundle(result.tag).booster.num_boosted_rounds()
