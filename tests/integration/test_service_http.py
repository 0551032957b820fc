"""A real `bentoml serve` answering HTTP: the same predictions as offline, 4xx for what it cannot use, a champion
change picked up without downtime, 32 clients for a minute without an error, and a built Bento that answers."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from mlcycle.schemas import resolve_schema
from mlcycle.schemas.adult import NATIVE_COUNTRY
from mlcycle.tasks.ingest.read import read_source
from mlcycle.tasks.ingest.validate import validate_frame
from mlcycle.tasks.paths import mlcycle_home
from mlcycle.tasks.records import check_records
from mlcycle.tasks.registry.bundle import load_bundle
from mlcycle.tasks.registry.smoke import ServeError, serving_model
from tests.conftest import ADULT_RECORD, BIKE_RECORD, ROOT
from tests.service_models import save_small_model

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


def test_the_python_api_answers_exactly_what_the_service_answers(adult_run, served_adult: str) -> None:  # type: ignore[no-untyped-def]
    """`mlcycle.load(tag).predict(frame)` and `.explain(frame)` are the service's own path: the same bits."""
    import mlcycle

    config, result = adult_run
    rows = _test_rows(config, 200).set_index(pd.RangeIndex(1000, 1200))
    records = [{k: (None if pd.isna(v) else v) for k, v in r.items()} for r in rows.to_dict("records")]
    model = mlcycle.load(result.tag)
    served = httpx.post(f"{served_adult}/predict", json={"records": records}, timeout=30).json()["predictions"]
    answered = model.predict(rows.assign(income_note="ignored: not a request field"))
    assert list(answered.index) == list(rows.index)
    assert answered["probability"].tolist() == [p["probability"] for p in served]
    assert answered["label"].tolist() == [p["label"] for p in served]
    explained = httpx.post(f"{served_adult}/explain", json={"records": records[:20]}, timeout=60).json()["explanations"]
    mine = model.explain(rows.head(20))
    for (_, row), theirs in zip(mine.iterrows(), explained, strict=True):
        assert row["bias"] == theirs["bias"] and row["margin"] == theirs["margin"]
        assert {f: row[f] for f in model.fields} == theirs["contributions"]
    broken = rows.head(3).assign(age=[39, "old", 40])
    with pytest.raises(mlcycle.ValidationError, match=r"row 1001, field 'age'") as error:
        model.predict(broken)
    assert [(e.row, e.field) for e in error.value.errors] == [(1001, "age")]


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


DEEP = b"[" * 5000 + b"]" * 5000  # past orjson's 1,024 levels and Python's recursion limit


@pytest.mark.parametrize(
    "body", [b'{"records": [bad', b'{"records": 5}', b"[1, 2]", DEEP, b'{"records": ' + DEEP + b"}"]
)
@pytest.mark.parametrize("route", ["/predict", "/explain"])
def test_malformed_requests_get_4xx_not_500(served_adult: str, route: str, body: bytes) -> None:
    response = httpx.post(f"{served_adult}{route}", content=body, headers={"content-type": "application/json"})
    assert 400 <= response.status_code < 500, response.text
    if DEEP in body:
        assert response.status_code == 400 and "nested too deep" in response.json()["error"]


def test_model_endpoint_says_which_model_answers(adult_run, served_adult: str) -> None:  # type: ignore[no-untyped-def]
    _, result = adult_run
    body = httpx.post(f"{served_adult}/model", json={}, timeout=10).json()
    assert body["model"] == result.tag
    assert body["lineage"]["data_hash"]
    metadata = httpx.get(f"{served_adult}/metadata", timeout=10).json()
    assert metadata["model"] == result.tag and metadata["schema"]["properties"]["age"]["minimum"] == 16
    assert metadata["metrics"] == load_bundle(result.tag).metrics


def test_health_probes_and_mlcycle_counters(served_adult: str) -> None:
    assert httpx.get(f"{served_adult}/healthz", timeout=10).status_code == 200
    assert httpx.get(f"{served_adult}/readyz", timeout=10).status_code == 200
    httpx.post(f"{served_adult}/predict", json={"records": [{**ADULT_RECORD, "age": 1}]}, timeout=10)
    httpx.post(f"{served_adult}/predict", json={"records": [ADULT_RECORD] * 2}, timeout=10)
    metrics = httpx.get(f"{served_adult}/metrics", timeout=10).text
    assert re.search(r'^mlcycle_predictions_total\{model="[^"]+"\} [1-9]', metrics, re.M), metrics[-2000:]
    assert re.search(r'^mlcycle_validation_failures_total\{.*status="422".*\} [1-9]', metrics, re.M)


def test_thirty_two_clients_for_a_minute_get_no_errors(served_adult: str) -> None:
    """Load on loopback: 32 concurrent clients send single-record requests for 60 s; every answer is a 200."""
    statuses: dict[int | str, int] = {}

    async def client(http: httpx.AsyncClient, stop: float) -> None:
        while time.monotonic() < stop:
            try:
                response = await http.post("/predict", json={"records": [ADULT_RECORD]})
                key: int | str = response.status_code
            except httpx.HTTPError as exc:
                key = type(exc).__name__
            statuses[key] = statuses.get(key, 0) + 1

    async def run() -> None:
        limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
        # A generous timeout: the machine is shared, and a slow answer is not an error; a refused or dropped one is.
        async with httpx.AsyncClient(base_url=served_adult, timeout=120, limits=limits) as http:
            stop = time.monotonic() + 60
            await asyncio.gather(*(client(http, stop) for _ in range(32)))

    asyncio.run(run())
    assert set(statuses) == {200} and statuses[200] > 100, statuses
    assert httpx.get(f"{served_adult}/readyz", timeout=10).status_code == 200  # healthy afterwards
    after = httpx.post(f"{served_adult}/predict", json={"records": [ADULT_RECORD]}, timeout=10)
    assert after.status_code == 200


@contextmanager
def _serve(target: str, env: dict[str, str], cwd: Path = ROOT) -> Iterator[str]:
    """A real `bentoml serve` of `target` on a free loopback port, stopped at the end (MLCYCLE_MODEL_TAG only if
    `env` sets it)."""
    try:
        with serving_model(env.get("MLCYCLE_MODEL_TAG"), 120, target=target, cwd=cwd, env=env) as url:
            yield url
    except ServeError as exc:
        pytest.fail(str(exc))


def test_champion_change_is_served_without_downtime() -> None:
    """Served by name, the service follows real promotions: at once on POST /reload, and by polling the registry;
    requests sent all along are all answered."""
    from mlcycle.tasks import registry

    name = "svc-reload"  # a model name of this test's own (bike schema), so no other test's champion moves
    first, second, third = (save_small_model("bike", seed=s, name=name) for s in (1, 2, 3))
    registry.promote(first, reason="test: initial champion")
    settings = {"reload_poll_s": 1, "request_log": {"flush_s": 1}}
    with _serve("mlcycle.serving.service:MLCycleService", {"MLCYCLE_MODEL_TAG": name,
                                                   "MLCYCLE_SERVING": json.dumps(settings)}) as url:  # fmt: skip
        answers: list[tuple[int, str | None]] = []
        stop = threading.Event()

        def traffic() -> None:
            with httpx.Client(base_url=url, timeout=30) as http:
                while not stop.is_set():
                    response = http.post("/predict", json={"records": [BIKE_RECORD]})
                    answers.append((response.status_code, response.json().get("model")))

        sender = threading.Thread(target=traffic)
        sender.start()
        try:
            time.sleep(1)
            registry.promote(second, reason="test: promote by request")
            reloaded = httpx.post(f"{url}/reload", timeout=60).json()
            # The registry poll (every second) may have switched first; either way the answer is the new champion.
            assert reloaded["model"] == second and (reloaded["changed"] or reloaded["previous"] == second)
            assert httpx.post(f"{url}/predict", json={"records": [BIKE_RECORD]}).json()["model"] == second
            registry.promote(third, reason="test: promote, found by polling")
            deadline = time.monotonic() + 60
            while httpx.get(f"{url}/metadata").json()["model"] != third and time.monotonic() < deadline:
                time.sleep(0.5)
            metadata = httpx.get(f"{url}/metadata").json()
            assert metadata["model"] == third and metadata["champion"] is True
            assert metadata["champion_since"] == registry.champion_since(name)
            time.sleep(2)  # the request log flushes every second
        finally:
            stop.set()
            sender.join(timeout=60)
    assert answers and all(status == 200 for status, _ in answers), [a for a in answers if a[0] != 200][:5]
    served = [model for _, model in answers]
    assert served[0] == first and served[-1] == third and set(served) == {first, second, third}
    assert served == sorted(served, key=[first, second, third].index)  # never back to an older model
    logged = pq.read_table(mlcycle_home() / "requests" / name).to_pandas()
    assert set(logged["_model"]) <= {first, second, third} and len(logged) > 0
    assert {"temp", "hr", "_ts", "_request_id", "_prediction"} <= set(logged.columns)


def test_built_bento_holds_the_model_and_answers(adult_run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """`mlcycle build`, then `bentoml serve` of the built Bento from an empty folder (not the source tree)."""
    _, result = adult_run
    env = {**os.environ, "MLCYCLE_MODEL_TAG": ""}
    build = subprocess.run([sys.executable, "-c", "from mlcycle.flows.cli import main; main()", "build", result.tag],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert build.returncode == 0, build.stdout + build.stderr
    bento = re.search(r"built (mlcycle-adult:[a-z0-9]+)", build.stdout)
    assert bento, build.stdout
    info = subprocess.run([sys.executable, "-m", "bentoml", "get", bento.group(1), "-o", "json"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.tag in info.stdout  # the Bento pins the model it was built with
    version = bento.group(1).partition(":")[2]
    bento_home = Path(os.environ["BENTOML_HOME"]) / "bentos" / "mlcycle-adult" / version
    assert (bento_home / "src" / "mlcycle" / "serving" / "service.py").is_file()  # the tool, not a checkout
    requirements = (bento_home / "env" / "python" / "requirements.txt").read_text()
    assert re.search(r"^xgboost==", requirements, re.M)  # the versions the service ran with here
    golden = json.loads((ROOT / "serving/examples/adult.json").read_text())
    with _serve(bento.group(1), {}, cwd=Path("/")) as url:  # no MLCYCLE_MODEL_TAG: the Bento's own model
        response = httpx.post(f"{url}/predict", json={"records": golden}, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["model"] == result.tag
    served = np.array([p["probability"] for p in response.json()["predictions"]])
    np.testing.assert_allclose(served, load_bundle(result.tag).predict_raw(_frame(golden)), rtol=0, atol=1e-6)


def _frame(records: list[dict]) -> pd.DataFrame:  # type: ignore[type-arg]
    from mlcycle.schemas.adult import AdultFeatures

    frame, errors = check_records(records, AdultFeatures, max_records=100)
    assert frame is not None and not errors
    return frame
