"""The service in-process: direct calls to the service class (tier 1) and BentoML's ASGI app under Starlette's
test client (tier 2), on a small real model saved to the session's model store. Tier 3 (a real `bentoml serve`)
is in tests/integration/test_service_http.py."""

from __future__ import annotations

import asyncio
import importlib
import io
import json
import math
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

with warnings.catch_warnings():  # starlette 1.10 nudges towards `httpx2`, which the lock does not hold
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from tests.conftest import ADULT_RECORD, ROOT
from tests.service_models import offline, save_small_model

GOLDEN = json.loads((ROOT / "serving/examples/adult.json").read_text())
LIMITS = {"max_body_bytes": 600_000, "reload_poll_s": 0, "request_log": {"flush_rows": 10_000, "flush_s": 3600}}


@pytest.fixture(scope="module")
def service_module(request: pytest.FixtureRequest) -> Iterator[Any]:
    """mlcycle.serving.service imported with MLCYCLE_MODEL_TAG pinned to a fresh small Adult model."""
    tag = save_small_model("adult", rounds=30)
    with pytest.MonkeyPatch.context() as env:  # the environment as found once the module is done
        env.setenv("MLCYCLE_MODEL_TAG", tag)
        env.setenv("MLCYCLE_SERVING", json.dumps(LIMITS))
        env.delenv("MLCYCLE_API_KEY", raising=False)
        import mlcycle.serving.service

        module = importlib.reload(mlcycle.serving.service)  # the OpenAPI record model is built at import
        module.TAG = tag  # type: ignore[attr-defined]
        yield module


@pytest.fixture(scope="module")
def client(service_module: Any) -> Iterator[TestClient]:
    with TestClient(service_module.MLCycleService.to_asgi(), raise_server_exceptions=False) as test_client:
        yield test_client


# --- tier 1: direct calls -----------------------------------------------------------------------------------------


def test_direct_predictions_equal_offline(service_module: Any) -> None:
    service = service_module.MLCycleService()
    response = asyncio.run(service.predict_body(json.dumps({"records": GOLDEN}).encode()))
    body = json.loads(response.body)
    assert response.status_code == 200 and body["model"] == service_module.TAG
    served = np.array([p["probability"] for p in body["predictions"]])
    np.testing.assert_allclose(served, offline(service_module.TAG, GOLDEN), rtol=0, atol=1e-6)
    assert body["unseen_categories"]  # the small training set lacks some golden categories, and says so


def test_direct_parse_refuses_with_record_and_field(service_module: Any) -> None:
    service = service_module.MLCycleService()
    refusal = service.parse(json.dumps({"records": [ADULT_RECORD, {**ADULT_RECORD, "age": 7}]}).encode(),
                            service.predictor)  # fmt: skip
    assert refusal.status == 422 and [(e.record, e.field) for e in refusal.errors] == [(1, "age")]


def test_batched_answers_equal_unbatched(service_module: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLCYCLE_SERVING", json.dumps({**LIMITS, "batching": {"enabled": True, "max_latency_ms": 5}}))
    service = service_module.MLCycleService()
    bodies = [json.dumps({"records": GOLDEN[i % 12 : i % 12 + 1 + i % 3]}).encode() for i in range(24)]

    async def all_at_once() -> list[Any]:
        return await asyncio.gather(*(service.predict_body(b) for b in bodies))

    answers = asyncio.run(all_at_once())
    assert service.batcher is not None and service.batcher.batches < len(bodies)  # requests did share calls
    for body, response in zip(bodies, answers, strict=True):
        records = json.loads(body)["records"]
        served = [p["probability"] for p in json.loads(response.body)["predictions"]]
        np.testing.assert_allclose(served, offline(service_module.TAG, records), rtol=0, atol=1e-6)


def test_explain_contributions_add_up_to_the_prediction(client: TestClient) -> None:
    response = client.post("/explain", json={"records": GOLDEN[:3]})
    assert response.status_code == 200, response.text
    for item in response.json()["explanations"]:
        assert set(item["contributions"]) == set(ADULT_RECORD)
        total = item["bias"] + sum(item["contributions"].values())
        assert total == pytest.approx(item["margin"], abs=1e-4)
        assert 1 / (1 + math.exp(-item["margin"])) == pytest.approx(item["probability"], abs=1e-5)


def test_direct_explain_over_its_limit_is_refused_naming_it(service_module: Any) -> None:
    service = service_module.MLCycleService()
    limit = service.config.explain_max_records
    assert limit < service.config.max_records  # exact SHAP values cost far more than a prediction
    over = asyncio.run(service.explain(json.dumps({"records": [ADULT_RECORD] * (limit + 1)}).encode()))
    assert over.status_code == 413, over.body
    assert f"at most {limit} records per /explain request" in json.loads(over.body)["error"]
    full = asyncio.run(service.explain(json.dumps({"records": [ADULT_RECORD] * limit}).encode()))
    assert full.status_code == 200 and len(json.loads(full.body)["explanations"]) == limit


# --- tier 2: the ASGI app in-process --------------------------------------------------------------------------------


def test_explain_has_a_record_limit_of_its_own(client: TestClient, service_module: Any) -> None:
    limit = service_module._LIVE["service"].config.explain_max_records
    records = [ADULT_RECORD] * (limit + 1)
    assert client.post("/predict", json={"records": records}).status_code == 200
    response = client.post("/explain", json={"records": records})
    assert response.status_code == 413, response.text
    assert f"at most {limit} records per /explain request" in response.json()["error"]
    spec = client.get("/docs.json").json()

    def request(route: str) -> dict[str, Any]:
        operation = spec["paths"][route]["post"]
        return operation["requestBody"]["content"]["application/json"]["schema"]  # type: ignore[no-any-return]

    assert request("/explain")["properties"]["records"]["maxItems"] == limit
    assert request("/predict")["properties"]["records"]["maxItems"] == 1000
    assert "explain_max_records" in spec["paths"]["/explain"]["post"]["responses"]["413"]["description"]


def test_asgi_golden_rows_equal_offline(client: TestClient, service_module: Any) -> None:
    response = client.post("/predict", json={"records": GOLDEN})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == service_module.TAG and len(body["request_id"]) == 32
    served = np.array([p["probability"] for p in body["predictions"]])
    np.testing.assert_allclose(served, offline(service_module.TAG, GOLDEN), rtol=0, atol=1e-6)
    assert {p["label"] for p in body["predictions"]} <= {"<=50K", ">50K"}


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_batch_upload_answers_like_predict(client: TestClient, service_module: Any, kind: str) -> None:
    frame = pd.DataFrame(GOLDEN * 50)
    buffer = io.BytesIO()
    if kind == "csv":
        frame.to_csv(buffer, index=False)
    else:
        frame.to_parquet(buffer, index=False)
    content_type = "text/csv" if kind == "csv" else "application/vnd.apache.parquet"
    response = client.post("/predict_batch", content=buffer.getvalue(), headers={"content-type": content_type})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["rows"] == 600 and body["model"] == service_module.TAG
    served = np.array([p["probability"] for p in body["predictions"]])
    np.testing.assert_allclose(served, np.tile(offline(service_module.TAG, GOLDEN), 50), rtol=0, atol=1e-6)


def test_metadata_names_model_schema_metrics_and_lineage(client: TestClient, service_module: Any) -> None:
    body = client.get("/metadata").json()
    assert body["model"] == service_module.TAG and body["task"] == "binary"
    assert body["schema"]["properties"]["age"]["maximum"] == 100
    assert body["metrics"]["primary"] == "roc_auc" and body["lineage"]["data_hash"]
    assert body["champion"] is False and body["champion_since"] is None  # a challenger pinned by tag


def test_openapi_documents_the_generated_record_model(client: TestClient) -> None:
    spec = client.get("/docs.json").json()
    request = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert request["example"]["records"][0] == GOLDEN[0]
    record = spec["components"]["schemas"]["AdultFeaturesRecord"]
    assert record["properties"]["sex"]["enum"] == ["Female", "Male"]
    assert record["properties"]["hours_per_week"]["minimum"] == 1


def test_request_log_holds_served_records_with_their_predictions(client: TestClient, service_module: Any) -> None:
    service = service_module._LIVE["service"]
    assert service.request_log is not None
    service.request_log.flush()
    before = service.request_log.written_rows
    response = client.post("/predict", json={"records": GOLDEN[:5]})
    path = service.request_log.flush()
    assert path is not None and service.request_log.written_rows == before + 5
    assert path.parent.name == "adult" and path.parent.parent.name == "requests"
    table = pq.read_table(path).to_pandas()
    assert list(table.columns) == [*ADULT_RECORD, "_ts", "_model", "_request_id", "_record", "_prediction", "_label"]
    assert (table["_request_id"] == response.json()["request_id"]).all()
    assert table["_prediction"].tolist() == [p["probability"] for p in response.json()["predictions"]]
    assert table["_label"].tolist() == [p["label"] for p in response.json()["predictions"]]
    assert table["age"].tolist() == [r["age"] for r in GOLDEN[:5]]


def _big_body() -> bytes:
    return json.dumps({"records": [{**ADULT_RECORD, "education": "x" * 1000}] * 700}).encode()


BAD_BODIES: list[tuple[str, bytes | Any, int, str, set[tuple[int | None, str | None]]]] = [
    ("malformed json", b'{"records": [bad', 400, "not valid JSON", set()),
    ("empty body", b"", 400, "not valid JSON", set()),
    ("truncated", b'{"records": [{"age": 39', 400, "not valid JSON", set()),
    ("a list, not an object", [1, 2], 422, "must be a JSON object", set()),
    ("no records key", {}, 422, "must be a JSON object", set()),
    ("records not a list", {"records": 5}, 422, "must be a list", set()),
    ("records empty", {"records": []}, 422, "is empty", set()),
    ("extra top-level key", {"records": [ADULT_RECORD], "model": "x"}, 422, "unexpected top-level", set()),
    ("record not an object", {"records": [7]}, 422, "failed validation", {(0, None)}),
    ("missing field", {"records": [{k: v for k, v in ADULT_RECORD.items() if k != "sex"}]}, 422, "field 'sex' is missing",
     {(0, "sex")}),
    ("extra field", {"records": [{**ADULT_RECORD, "colour": "red"}]}, 422, "'colour' is not in the schema", {(0, "colour")}),
    ("text for an integer", {"records": [{**ADULT_RECORD, "age": "old"}]}, 422, "valid integer (got 'old')",
     {(0, "age")}),
    # JSON's own types, as the OpenAPI document states them: no pandera coercion at the JSON edge.
    ("digits as text for an integer", {"records": [{**ADULT_RECORD, "age": "39"}]}, 422, "valid integer (got '39')",
     {(0, "age")}),
    ("whole float for an integer", {"records": [{**ADULT_RECORD, "age": 39.0}]}, 422, "valid integer", {(0, "age")}),
    ("number for a text field", {"records": [{**ADULT_RECORD, "sex": 1}]}, 422, "not an allowed value", {(0, "sex")}),
    ("fraction for an integer", {"records": [{**ADULT_RECORD, "age": 39.5}]}, 422, "valid integer", {(0, "age")}),
    ("boolean for an integer", {"records": [{**ADULT_RECORD, "age": True}]}, 422, "valid integer", {(0, "age")}),
    ("null for a required number", {"records": [{**ADULT_RECORD, "age": None}]}, 422, "valid integer",
     {(0, "age")}),
    ("below the range", {"records": [{**ADULT_RECORD, "age": 15}]}, 422, "greater than or equal to 16",
     {(0, "age")}),
    ("above the range", {"records": [{**ADULT_RECORD, "hours_per_week": 100}]}, 422, "less than or equal to 99",
     {(0, "hours_per_week")}),
    ("negative money", {"records": [{**ADULT_RECORD, "capital_gain": -1}]}, 422, "greater than or equal to 0",
     {(0, "capital_gain")}),
    ("unknown category", {"records": [{**ADULT_RECORD, "sex": "X"}]}, 422, "not an allowed value", {(0, "sex")}),
    ("number for a category", {"records": [{**ADULT_RECORD, "workclass": 5}]}, 422, "not an allowed value",
     {(0, "workclass")}),
    ("null for a required category", {"records": [{**ADULT_RECORD, "education": None}]}, 422, "allowed value",
     {(0, "education")}),
    ("list for a field", {"records": [{**ADULT_RECORD, "race": ["White"]}]}, 422, "allowed value", {(0, "race")}),
    ("NaN for a number", b'{"records": [' + json.dumps({**ADULT_RECORD, "age": float("nan")}).encode() + b"]}", 422,
     "valid integer (got nan)", {(0, "age")}),
    ("Infinity for a number", b'{"records": [' + json.dumps({**ADULT_RECORD, "fnlwgt": float("inf")}).encode()
     + b"]}", 422, "valid integer (got inf)", {(0, "fnlwgt")}),
    # Nesting: orjson reads 1,024 levels, Python's json fewer; neither may turn into a 500.
    ("5,000 levels deep, bare", b"[" * 5000 + b"]" * 5000, 400, "nested too deep", set()),
    ("5,000 levels deep in records", b'{"records": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400, "nested too deep",
     set()),
    ("5,000 levels deep with a NaN", b'{"records": [NaN, ' + b"[" * 5000 + b"]" * 5000 + b"]}", 400,
     "nested too deep", set()),
    ("1,000 levels deep in a field", b'{"records": [' + json.dumps({**ADULT_RECORD, "age": "X"}).encode().replace(
     b'"X"', b"[" * 1000 + b"]" * 1000) + b"]}", 422, "valid integer (got [[[[...]]]])", {(0, "age")}),
    ("1,000 levels deep as a record", b'{"records": [' + b"[" * 1000 + b"]" * 1000 + b"]}", 422, "failed validation",
     {(0, None)}),
    ("only the second record is bad", {"records": [ADULT_RECORD, {**ADULT_RECORD, "age": 200}]}, 422,
     "1 of 2 record(s)", {(1, "age")}),
    ("two bad records", {"records": [{**ADULT_RECORD, "sex": "?"}, ADULT_RECORD, {**ADULT_RECORD, "age": 1}]}, 422,
     "2 of 3 record(s)", {(0, "sex"), (2, "age")}),
    ("too many records", {"records": [ADULT_RECORD] * 1001}, 413, "at most 1000 records", set()),
    ("body over the byte limit", _big_body(), 413, "the limit is 600000 bytes", set()),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "payload", "status", "message", "located"), BAD_BODIES, ids=[c[0] for c in BAD_BODIES]
)
def test_bad_request_suite(client: TestClient, service_module: Any, monkeypatch: pytest.MonkeyPatch, name: str,
                           payload: Any, status: int, message: str,
                           located: set[tuple[int | None, str | None]]) -> None:  # fmt: skip
    content = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    service = service_module._LIVE["service"]
    # /predict on the direct route and on BentoML's API route, /explain on BentoML's: the same verdicts.
    for route, direct in (("/predict", True), ("/predict", False), ("/explain", True)):
        monkeypatch.setattr(service, "config", service.config.model_copy(update={"direct_predict": direct}))
        response = client.post(route, content=content, headers={"content-type": "application/json"})
        assert response.status_code == status, (route, direct, response.text)
        body = response.json()
        expected = message.replace("at most 1000", "at most 50") if route == "/explain" else message  # its own limit
        assert expected in body["error"] + " ".join(e["message"] for e in body["errors"]), body
        assert {(e["record"], e["field"]) for e in body["errors"]} == located


def test_direct_route_answers_like_bentoml_s_api_route(client: TestClient, service_module: Any,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    service = service_module._LIVE["service"]
    answers = {}
    for direct in (True, False):
        monkeypatch.setattr(service, "config", service.config.model_copy(update={"direct_predict": direct}))
        answers[direct] = client.post("/predict", json={"records": GOLDEN})
    for response in answers.values():
        assert response.status_code == 200 and response.headers["server"] == "BentoML Service/mlcycle"
        assert response.headers["x-bentoml-request-id"] and response.headers["content-type"] == "application/json"
    direct, routed = (answers[d].json() for d in (True, False))
    assert direct["predictions"] == routed["predictions"] and direct["model"] == routed["model"] == service_module.TAG
    assert direct["unseen_categories"] == routed["unseen_categories"] and direct["request_id"] != routed["request_id"]

    # The direct route does not use BentoML's dispatch: break its IO descriptor and only the API route fails.
    def broken(cls: Any, request: Any, serde: Any) -> Any:
        raise RuntimeError("BentoML's API route was used")

    monkeypatch.setattr(service_module.STARTUP_SPEC, "from_http_request", classmethod(broken))
    for direct, status in ((True, 200), (False, 500)):
        monkeypatch.setattr(service, "config", service.config.model_copy(update={"direct_predict": direct}))
        assert client.post("/predict", json={"records": GOLDEN[:1]}).status_code == status


def test_predict_alone_is_untraced_by_default(service_module: Any) -> None:
    """BentoML records spans it never samples; /predict skips them (`serving.trace_predict`), the rest keep them."""
    from opentelemetry.util.http import ExcludeList

    excluded = ExcludeList(service_module.MLCycleService.config["tracing"]["excluded_urls"])
    assert excluded.url_disabled("http://127.0.0.1:3000/predict")
    for route in ("/predict_batch", "/explain", "/metadata"):
        assert not excluded.url_disabled(f"http://127.0.0.1:3000{route}"), route


UPLOAD_CASES = [
    ("empty upload", b"", "text/csv", 400, "upload is empty"),
    ("not parquet", b"PAR1 this is not parquet", "application/vnd.apache.parquet", 400, "cannot read the upload"),
    ("header only", ",".join(ADULT_RECORD).encode() + b"\n", "text/csv", 422, "no rows"),
    ("bad row", None, "text/csv", 422, "1 of 3 row(s)"),
]


@pytest.mark.parametrize(("name", "content", "content_type", "status", "message"), UPLOAD_CASES,
                         ids=[c[0] for c in UPLOAD_CASES])  # fmt: skip
def test_bad_uploads(client: TestClient, name: str, content: bytes | None, content_type: str, status: int,
                     message: str) -> None:  # fmt: skip
    if content is None:
        rows = [ADULT_RECORD, {**ADULT_RECORD, "age": 300}, ADULT_RECORD]
        content = pd.DataFrame(rows).to_csv(index=False).encode()
    response = client.post("/predict_batch", content=content, headers={"content-type": content_type})
    assert response.status_code == status, response.text
    assert message in response.json()["error"]
    if name == "bad row":
        assert [(e["record"], e["field"]) for e in response.json()["errors"]] == [(1, "age")]


def test_validation_failures_and_predictions_are_counted(client: TestClient, service_module: Any) -> None:
    counters = service_module.COUNTERS
    tag = service_module.TAG

    def value(name: str, **labels: str) -> float:
        return float(counters[name].labels(model=tag, **labels)._value.get())

    failures, predictions = value("failures", status="422"), value("predictions")
    client.post("/predict", json={"records": [{**ADULT_RECORD, "age": 1}]})
    client.post("/predict", json={"records": [ADULT_RECORD] * 3})
    assert value("failures", status="422") == failures + 1 and value("predictions") == predictions + 3


def test_api_key_protects_prediction_endpoints(client: TestClient, service_module: Any,
                                              monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    # One BentoML app per process (its Prometheus metrics register once), so the key is read by a second service
    # instance, as a server would at start, and enforced by the running app through the shared guard.
    monkeypatch.setenv("MLCYCLE_API_KEY", "s3cret-token")
    try:
        service_module.MLCycleService()
        assert service_module.GUARD.api_key == "s3cret-token"
        for route in ("/predict", "/explain", "/predict_batch", "/reload", "/feedback"):
            missing = client.post(route, json={"records": [ADULT_RECORD]})
            wrong = client.post(route, json={"records": [ADULT_RECORD]}, headers={"authorization": "Bearer nope"})
            assert missing.status_code == 401 and "API key" in missing.text, (route, missing.text)
            assert wrong.status_code == 401 and "not valid" in wrong.text, (route, wrong.text)
        good = client.post("/predict", json={"records": [ADULT_RECORD]},
                           headers={"authorization": "Bearer s3cret-token"})  # fmt: skip
        assert good.status_code == 200, good.text
        assert client.get("/metadata").json()["api_key_required"] is True  # metadata stays open
    finally:
        service_module.GUARD.api_key = None


@pytest.mark.parametrize(("route", "body", "status"), [
    ("/reload", b"", 200), ("/reload", b" { } ", 200), ("/reload", b'{"records": []}', 400), ("/reload", b"[", 400),
    ("/reload", b"\t", 400),
    ("/model", b"", 200), ("/model", b"{}", 200), ("/model", b"[null, null]", 400), ("/model", b'{"x": 1}', 400),
])  # fmt: skip
def test_endpoints_without_a_body_refuse_one(client: TestClient, route: str, body: bytes, status: int) -> None:
    response = client.post(route, content=body, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    if status == 400:
        assert response.json()["error"] == f"{route} takes no body: send nothing, or {{}}"
    else:
        assert response.json()["model"]


def test_upload_of_another_content_type_gets_415(client: TestClient) -> None:
    csv = pd.DataFrame(GOLDEN[:2]).to_csv(index=False).encode()
    response = client.post("/predict_batch", content=csv, headers={"content-type": "application/json"})
    assert response.status_code == 415 and "text/csv" in response.json()["error"]
    sniffed = client.post("/predict_batch", content=csv, headers={"content-type": "application/octet-stream"})
    assert sniffed.status_code == 200 and sniffed.json()["rows"] == 2


def test_openapi_document_states_what_the_service_answers(client: TestClient) -> None:
    """The document served at /docs.json, not BentoML's generic one (schemathesis holds the running service to it:
    tests/integration/test_service_contract.py)."""
    import re

    spec = client.get("/docs.json").json()
    predict = spec["paths"]["/predict"]["post"]
    assert predict["requestBody"]["required"] is True
    assert predict["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    assert spec["components"]["schemas"]["ErrorBody"]["required"] == ["error"]
    assert "InvalidArgument" not in spec["components"]["schemas"]  # BentoML's own error model is gone
    request = predict["requestBody"]["content"]["application/json"]["schema"]
    assert request["additionalProperties"] is False  # a top-level field other than `records` is refused (422)
    csv = spec["paths"]["/predict_batch"]["post"]["requestBody"]["content"]["text/csv"]["schema"]
    pattern = re.compile(csv["pattern"])
    good = pd.DataFrame(GOLDEN[:3]).fillna("").astype(str).to_csv(index=False)
    assert pattern.search(good.replace(".0,", ","))  # the golden rows match (as whole numbers)
    assert not pattern.search(good.replace("Male", "Mal"))
    rows = pd.DataFrame([{**ADULT_RECORD, "age": 15}]).to_csv(index=False)
    assert not pattern.search(rows)  # out of range


def test_rejected_version_is_served_only_pinned_and_says_so(service_module: Any,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    from mlcycle.tasks import registry

    name = "svc-rejected"
    tag = save_small_model("adult", rounds=5, name=name)
    registry.reject(tag, reason="test: the gate said no")
    monkeypatch.setenv("MLCYCLE_MODEL_TAG", name)
    with pytest.raises(registry.RegistryError, match=f"{name} has no champion .*serve one version by its full tag"):
        service_module.MLCycleService()
    monkeypatch.setenv("MLCYCLE_MODEL_TAG", tag)
    metadata = service_module.MLCycleService().metadata_body()
    assert metadata["model"] == tag and metadata["status"] == "rejected" and metadata["champion"] is False
    assert "REJECTED by the promotion gate" in metadata["warning"]


def test_reload_refuses_a_champion_with_another_contract(service_module: Any,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """A name whose new champion has another features schema and task: the service keeps serving the model it has
    and says why (POST /reload answers 409), rather than answering requests its OpenAPI document does not describe."""
    from mlcycle.tasks import registry

    name = "svc-contract"
    first = save_small_model("adult", rounds=5, name=name)
    registry.promote(first, reason="test: initial champion")
    monkeypatch.setenv("MLCYCLE_MODEL_TAG", name)
    service = service_module.MLCycleService()
    assert service.predictor.tag == first
    other = save_small_model("bike", rounds=5, name=name)
    registry.promote(other, reason="test: a champion with another schema")
    with pytest.raises(service_module.ContractChanged, match=f"not serving the new champion {other}: its task"):
        asyncio.run(service.reload_model())
    assert service.predictor.tag == first
    assert other in service.metadata_body()["reload_refused"]
    answer = asyncio.run(service.predict_body(json.dumps({"records": GOLDEN[:1]}).encode()))
    assert answer.status_code == 200 and json.loads(answer.body)["model"] == first


def test_feedback_labels_an_answer_by_request_id_and_record(client: TestClient, service_module: Any) -> None:
    answer = client.post("/predict", json={"records": GOLDEN[:2]}).json()
    label = {"request_id": answer["request_id"], "record": 1, "label": ">50K"}
    taken = client.post("/feedback", json={"labels": [label]})
    assert taken.status_code == 200, taken.text
    assert taken.json()["accepted"] == 1 and taken.json()["model"] == service_module.TAG
    contradiction = client.post("/feedback", json={"labels": [{**label, "label": "<=50K"}]})
    assert contradiction.status_code == 409 and contradiction.json()["errors"][0]["record"] == 0
    unknown = client.post("/feedback", json={"labels": [{**label, "request_id": "f" * 32}]})
    assert unknown.status_code == 404 and unknown.json()["errors"][0]["field"] == "request_id"
    not_a_class = client.post("/feedback", json={"labels": [{**label, "label": "rich"}]})
    assert not_a_class.status_code == 422 and not_a_class.json()["errors"][0]["field"] == "label"
    feedback = client.get("/docs.json").json()["paths"]["/feedback"]["post"]
    assert set(feedback["responses"]) == {"200", "400", "401", "404", "409", "413", "422", "500"}
    body = feedback["requestBody"]["content"]["application/json"]["schema"]
    assert body["title"] == "AdultFeedbackRequest" and body["additionalProperties"] is False
    assert body["properties"]["labels"]["items"]["$ref"].endswith("/AdultFeedbackLabel")


def test_a_challenger_in_shadow_scores_what_the_champion_answers(service_module: Any, tmp_path: Any,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    from mlcycle.tasks import registry
    from mlcycle.tasks.monitor.feedback import read_logged, shadow_dir

    monkeypatch.setenv("MLCYCLE_HOME", str(tmp_path))  # a registry of its own: the session's adult has no champion
    challenger = save_small_model("adult", rounds=10, seed=5)
    registry.register(service_module.TAG)
    registry.promote(service_module.TAG, reason="test champion")
    registry.put_in_shadow(challenger, reason="test shadow")
    service = service_module.MLCycleService()

    async def serve() -> list[Any]:
        assert await service.refresh_shadow() == challenger
        answers = [await service.predict_body(json.dumps({"records": GOLDEN[i : i + 2]}).encode()) for i in range(5)]
        await asyncio.sleep(0.2)  # the shadow scores between requests, after the answers
        await service.stop_background()
        return answers

    answers = asyncio.run(serve())
    ids = {json.loads(a.body)["request_id"] for a in answers}
    assert all(json.loads(a.body)["model"] == service_module.TAG for a in answers)  # the champion answered
    shadowed = read_logged(shadow_dir("adult"))
    shadowed = shadowed[shadowed["_request_id"].isin(ids)]
    assert len(shadowed) == 10 and set(shadowed["_model"]) == {challenger}
    mine = shadowed.sort_values(["_request_id", "_record"])
    expected = {rid: offline(challenger, GOLDEN[i : i + 2]) for i, rid in
                enumerate(json.loads(a.body)["request_id"] for a in answers)}  # fmt: skip
    for rid, rows in mine.groupby("_request_id"):
        np.testing.assert_allclose(rows["_prediction"], expected[rid], rtol=0, atol=1e-6)


# --- a model whose file holds codes and a column it drops (issue 27) ----------------------------------------------

CODES_SCHEMA = """
import pandera.pandas as pa
from pandera.typing import Series


class TripsFeatures(pa.DataFrameModel):
    year: Series[str] = pa.Field()
    zip: Series[str] = pa.Field(nullable=True)
    distance: Series[float] = pa.Field(ge=0)
    start_delay: Series[float] = pa.Field(nullable=True)

    class Config:
        strict = True
        coerce = True


class TripsSchema(TripsFeatures):
    late: Series[str] = pa.Field(isin=["no", "yes"])
"""
TRIP = {"year": "95", "zip": "02134", "distance": 12.5}


@pytest.fixture(scope="module")
def trips_tag(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A small real model of a table with two codes (`year`, `zip`) and a column the config drops (`start_delay`)."""
    from mlcycle.schemas import load_config
    from mlcycle.tasks.preprocess import apply_preprocessor, fit_preprocessor
    from mlcycle.tasks.registry.bundle import collect_lineage, save_bundle
    from mlcycle.tasks.train.boost import fit_rounds, xgb_params
    from mlcycle.tasks.train.prepare import encode_target, feature_columns

    folder = tmp_path_factory.mktemp("trips")
    (folder / "trips.py").write_text(CODES_SCHEMA)
    (folder / "trips.yaml").write_text(
        f"name: trips\nschema_ref: {folder}/trips.py:TripsSchema\nfeatures_schema_ref: {folder}/trips.py:TripsFeatures\n"
        "target: late\ntask: binary\npositive_label: 'yes'\ndrop: {start_delay: known only after the trip starts}\n"
        f"source: {{kind: files, files: [{{path: {folder}/trips.csv}}]}}\n"
    )  # fmt: skip
    config = load_config(folder / "trips.yaml")
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"year": rng.choice(["91", "95", "99"], 300), "zip": rng.choice(["02134", "10001", None], 300),
                          "distance": rng.uniform(0, 50, 300).round(1), "start_delay": rng.uniform(0, 9, 300)})  # fmt: skip
    frame["late"] = np.where((frame["year"] == "95") ^ (frame["distance"] > 25), "yes", "no")
    spec = fit_preprocessor(frame, feature_columns(list(frame.columns), config), config.preprocess)
    params = xgb_params("binary", {"eta": 0.3, "max_depth": 3}, nthread=1, seed=0)
    booster = fit_rounds(apply_preprocessor(spec, frame), encode_target(frame["late"], config), params, 20)
    lineage = collect_lineage("test-trips", "test-schema", config, {"flow_run_id": None})
    metrics: dict[str, Any] = {"primary": "roc_auc", "test": {"roc_auc": 0.8}}
    return save_bundle(booster, spec, config, ["no", "yes"], metrics, lineage)


def test_a_code_is_served_from_its_number_or_its_text(service_module: Any, trips_tag: str) -> None:
    service = service_module.MLCycleService()
    trips = service_module.Predictor.load(trips_tag)
    assert trips.validator.codes == {"year", "zip"} and trips.validator.ignored == {"start_delay"}
    records = [TRIP, {**TRIP, "year": 95, "start_delay": 4.0}, {**TRIP, "year": 95.0, "zip": None}]
    rows = service.parse(json.dumps({"records": records}).encode(), trips)
    assert [r["year"] for r in rows] == ["95"] * 3 and [r["start_delay"] for r in rows] == [None] * 3
    raw, _ = asyncio.run(service.score(trips.values(rows), len(rows), trips))
    assert raw[0] == raw[1]  # the same code, whichever way it was sent
    refused = service.parse(json.dumps({"records": [{**TRIP, "year": True}, {**TRIP, "zip": 2.5}]}).encode(), trips)
    assert refused.status == 422 and [(e.record, e.field, e.rule) for e in refused.errors] == [
        (0, "year", "type"), (1, "zip", "type")]  # fmt: skip


def test_an_upload_keeps_a_code_as_the_file_writes_it(service_module: Any, trips_tag: str) -> None:
    service = service_module.MLCycleService()
    trips = service_module.Predictor.load(trips_tag)
    csv = b"year,zip,distance\n95,02134,12.5\n99,,3\n"  # no start_delay: the model does not read it
    rows = service.parse_upload(csv, "text/csv", trips)
    assert [(r["year"], r["zip"]) for r in rows] == [("95", "02134"), ("99", None)]
    buffer = io.BytesIO()
    pd.DataFrame({"year": [95, 99], "zip": ["02134", None], "distance": [12.5, 3.0], "start_delay": [1.0, None]}
                 ).to_parquet(buffer)  # fmt: skip
    assert service.parse_upload(buffer.getvalue(), "application/vnd.apache.parquet", trips) == rows


def test_the_python_api_reads_codes_and_ignores_dropped_columns_as_the_service_does(trips_tag: str) -> None:
    from mlcycle.api import Model
    from mlcycle.tasks.registry.bundle import load_bundle

    model = Model(load_bundle(trips_tag))
    as_text = model.predict(pd.DataFrame([TRIP, {**TRIP, "year": "99"}]))
    as_numbers = model.predict(
        pd.DataFrame({"year": [95.0, 99.0], "zip": ["02134", "02134"], "distance": [12.5, 12.5]})
    )
    pd.testing.assert_frame_equal(as_text, as_numbers)


def test_the_request_timeout_leaves_no_timer_behind_and_still_answers_504(service_module: Any) -> None:
    # BentoML 1.4's TimeoutMiddleware leaves each request's timer scheduled for the whole timeout; under load that
    # was tens of thousands of live timers for the garbage collector to walk. The service's app uses the cancelling
    # one instead.
    app = service_module.MLCycleService.to_asgi()
    assert service_module.CancellingTimeout in [m.cls for m in app.user_middleware]

    async def quick(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def stuck(scope: Any, receive: Any, send: Any) -> None:
        await asyncio.sleep(30)

    async def scenario() -> tuple[int, list[int]]:
        loop = asyncio.get_running_loop()
        statuses: list[int] = []

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        scope = {"type": "http", "path": "/predict", "method": "POST"}
        for _ in range(200):
            await service_module.CancellingTimeout(quick, timeout=60)(scope, receive, send)
        live = sum(1 for handle in loop._scheduled if not handle.cancelled())  # asyncio's timer heap
        await service_module.CancellingTimeout(stuck, timeout=0.05)(scope, receive, send)
        return live, statuses

    live, statuses = asyncio.run(scenario())
    assert live == 0 and statuses == [200] * 200 + [504]
