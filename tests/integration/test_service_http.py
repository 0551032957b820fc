"""A real `bentoml serve` answering HTTP: the same predictions as offline, and 4xx for what it cannot use."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pandas as pd
import pytest

from schemas import resolve_schema
from schemas.adult import NATIVE_COUNTRY
from serving.requests import check_records
from tasks.bundle import load_bundle
from tasks.ingest import read_source
from tasks.paths import mlcycle_home
from tasks.validate import validate_frame
from tests.conftest import ADULT_RECORD, ROOT

pytestmark = pytest.mark.integration


def _test_rows(config, n: int) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    raw = read_source(config.source, mlcycle_home() / "cache" / "wheels", config.seed)
    valid = validate_frame(raw.frame, resolve_schema(config.schema_ref)).valid
    return valid.drop(columns=[config.target]).head(n)


def test_served_predictions_equal_offline_predictions(adult_run, served_adult: str) -> None:  # type: ignore[no-untyped-def]
    config, result = adult_run
    rows = _test_rows(config, 60)
    records = [{k: (None if pd.isna(v) else v) for k, v in r.items()} for r in rows.to_dict("records")]
    response = httpx.post(f"{served_adult}/predict", json={"records": records}, timeout=30)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == result.tag
    served = np.array([p["probability"] for p in body["predictions"]])
    offline = load_bundle(result.tag).predict_raw(rows)
    np.testing.assert_allclose(served, offline, rtol=0, atol=1e-6)
    assert {p["label"] for p in body["predictions"]} <= {"<=50K", ">50K"}


def test_golden_rows_served_equal_offline_to_1e6(adult_run, served_adult: str) -> None:  # type: ignore[no-untyped-def]
    _, result = adult_run
    golden = json.loads((ROOT / "serving/examples/adult.json").read_text())
    assert any(None in r.values() for r in golden)  # the golden rows include the missing values real data has
    response = httpx.post(f"{served_adult}/predict", json={"records": golden}, timeout=30)
    assert response.status_code == 200, response.text
    served = np.array([p["probability"] for p in response.json()["predictions"]])
    bundle = load_bundle(result.tag)
    frame, errors = check_records(golden, resolve_schema(bundle.config.features_schema_ref), max_records=100)
    assert frame is not None and not errors
    np.testing.assert_allclose(served, bundle.predict_raw(frame), rtol=0, atol=1e-6)


def test_unseen_category_and_missing_values_are_answered_and_counted(adult_run, served_adult: str) -> None:  # type: ignore[no-untyped-def]
    _, result = adult_run
    bundle = load_bundle(result.tag)
    seen = next(f.categories for f in bundle.preprocessor.features if f.name == "native_country") or []
    unseen = next(c for c in NATIVE_COUNTRY if c not in seen)
    records = [{**ADULT_RECORD, "native_country": unseen}, {**ADULT_RECORD, "workclass": None, "occupation": None}]
    response = httpx.post(f"{served_adult}/predict", json={"records": records}, timeout=30)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["unseen_categories"] == {"native_country": 1}
    assert all(0 <= p["probability"] <= 1 for p in body["predictions"])


def test_bad_record_gets_422_naming_record_and_field(served_adult: str) -> None:
    records = [ADULT_RECORD, {**ADULT_RECORD, "age": "old"}, {**ADULT_RECORD, "sex": "X"}]
    response = httpx.post(f"{served_adult}/predict", json={"records": records}, timeout=30)
    assert response.status_code == 422
    errors = {(e["record"], e["field"]) for e in response.json()["errors"]}
    assert errors == {(1, "age"), (2, "sex")}


@pytest.mark.parametrize("body", [b'{"records": [bad', b'{"records": 5}', b"[1, 2]"])
def test_malformed_requests_get_4xx_not_500(served_adult: str, body: bytes) -> None:
    response = httpx.post(f"{served_adult}/predict", content=body, headers={"content-type": "application/json"})
    assert 400 <= response.status_code < 500


def test_model_endpoint_says_which_model_answers(adult_run, served_adult: str) -> None:  # type: ignore[no-untyped-def]
    _, result = adult_run
    body = httpx.post(f"{served_adult}/model", json={}, timeout=10).json()
    assert body["model"] == result.tag
    assert body["lineage"]["data_hash"]
