"""The service answering for a multiclass model, by direct calls to the service class (tier 1: BentoML's ASGI app
registers its metrics once per process, and tests/test_service.py holds it), on a small real penguins model: per record the most probable class and every class's probability, equal to the offline
path; explanations of the predicted class; the classes in /metadata; the predicted class in the request log. (A real
`bentoml serve` of the real penguins model: tests/integration/test_multiclass.py.)"""

from __future__ import annotations

import asyncio
import importlib
import io
import json
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from mlcycle.schemas.penguins import SPECIES
from tests.conftest import ROOT
from tests.service_models import offline
from tests.test_multiclass import penguin_rows, penguins_config, save_small

GOLDEN = json.loads((ROOT / "serving/examples/penguins.json").read_text())
LIMITS = {"reload_poll_s": 0, "request_log": {"flush_rows": 10_000, "flush_s": 3600}}


@pytest.fixture(scope="module")
def service_module() -> Iterator[Any]:
    """mlcycle.serving.service imported with MLCYCLE_MODEL_TAG pinned to a fresh small penguins model."""
    tag = save_small(penguins_config(name="penguins"), penguin_rows(400, seed=0))
    with pytest.MonkeyPatch.context() as env:  # the environment as found once the module is done
        env.setenv("MLCYCLE_MODEL_TAG", tag)
        env.setenv("MLCYCLE_SERVING", json.dumps(LIMITS))
        env.delenv("MLCYCLE_API_KEY", raising=False)
        import mlcycle.serving.service

        counters = dict(mlcycle.serving.service.COUNTERS)  # Prometheus metrics register once per process: keep them
        module = importlib.reload(mlcycle.serving.service)
        module.COUNTERS.update(counters)
        module.TAG = tag  # type: ignore[attr-defined]
        yield module
        if not counters:  # registered here: leave the registry as found, for a later module's reload of the service
            from prometheus_client import REGISTRY

            for counter in module.COUNTERS.values():
                REGISTRY.unregister(counter)
            module.COUNTERS.clear()


@pytest.fixture(scope="module")
def service(service_module: Any) -> Any:
    return service_module.MLCycleService()


def call(coroutine: Any) -> dict[str, Any]:
    response = asyncio.run(coroutine)
    assert response.status_code == 200, response.body
    return dict(json.loads(response.body))


def body(records: list[dict[str, Any]]) -> bytes:
    return json.dumps({"records": records}).encode()


def check_answers(predictions: list[dict[str, Any]], expected: np.ndarray) -> None:
    assert len(predictions) == len(expected)
    for answer, row in zip(predictions, expected, strict=True):
        assert list(answer["probabilities"]) == SPECIES
        served = np.array([answer["probabilities"][c] for c in SPECIES])
        np.testing.assert_allclose(served, row, rtol=0, atol=1e-6)
        assert served.sum() == pytest.approx(1, abs=1e-5)
        assert answer["label"] == SPECIES[int(np.argmax(row))]


def test_predict_answers_a_label_and_every_class_probability(service: Any, service_module: Any) -> None:
    answer = call(service.predict_body(body(GOLDEN)))
    assert answer["model"] == service_module.TAG
    check_answers(answer["predictions"], offline(service_module.TAG, GOLDEN))
    labels = {p["label"] for p in answer["predictions"]}
    assert len(labels) >= 2  # the golden birds are of different species, and the model tells some apart


def test_batch_upload_answers_like_predict(service: Any, service_module: Any) -> None:
    frame = pd.DataFrame(GOLDEN * 20)
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    answer = call(service.predict_batch((buffer.getvalue(), "application/vnd.apache.parquet")))
    check_answers(answer["predictions"], np.tile(offline(service_module.TAG, GOLDEN), (20, 1)))


def test_explain_gives_the_predicted_classs_contributions(service: Any) -> None:
    explained = call(service.explain(body(GOLDEN)))
    assert explained["units"] == "softmax margin of the predicted class"
    predicted = call(service.predict_body(body(GOLDEN)))["predictions"]
    for item, answer in zip(explained["explanations"], predicted, strict=True):
        assert item["label"] == answer["label"]
        assert item["bias"] + sum(item["contributions"].values()) == pytest.approx(item["margin"], abs=1e-4)
    # the margins of the predicted class: with the other classes' (not shown) they give the softmax; at least the
    # predicted class's margin must be the largest, which the explanations of each class in turn would show
    first = explained["explanations"][0]
    assert first["probabilities"][first["label"]] == max(first["probabilities"].values())
    assert math.isfinite(first["margin"])


def test_metadata_lists_the_classes(service: Any, service_module: Any) -> None:
    metadata = service.metadata_body()
    assert metadata["task"] == "multiclass" and metadata["classes"] == SPECIES
    assert metadata["model"] == service_module.TAG


def test_request_log_keeps_the_predicted_class_and_its_probability(service: Any) -> None:
    assert service.request_log is not None
    service.request_log.flush()
    predictions = call(service.predict_body(body(GOLDEN)))["predictions"]
    path = service.request_log.flush()
    assert path is not None and path.parent.name == "penguins"
    table = pq.read_table(path).to_pandas()
    assert table["_label"].tolist() == [p["label"] for p in predictions]
    assert table["_prediction"].tolist() == pytest.approx([p["probabilities"][p["label"]] for p in predictions])
