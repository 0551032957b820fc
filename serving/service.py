"""The prediction service: one BentoML service serving the champion model of a dataset.

`MLCYCLE_MODEL_TAG` picks the model at start: a bare name (default `adult`) serves that name's champion (its newest
version before any promotion) and follows later promotions (POST /reload, and a registry poll every
`serving.reload_poll_s`); a full tag pins one version. Requests are validated by the record model generated from
the dataset's pandera features schema (schemas/api.py) and encoded by the preprocessing spec that training fitted
(tasks/preprocess.py), without pandas on the single-record path; answers name the model that gave them.

Endpoints: POST /predict, /predict_batch (CSV or Parquet body), /explain, /reload, /model, /feedback (labels for
earlier answers, serving/feedback.py); GET /metadata; /healthz, /readyz, /metrics from BentoML. GET /docs.json is
the contract the service keeps (serving/openapi.py): a JSON record is held to JSON's own types as documented (the
pandera coercions apply to CSV and Parquet uploads, which have no types of their own), and client mistakes get a
documented 400/401/404/409/413/415/422 with reasons, never 500. A bare name is served only through its champion;
a version the gate rejected only when pinned by its full tag, with a warning in the log and in /metadata; a new
champion with another request contract is not loaded. A challenger the registry puts in shadow scores every logged
request too, off the answer's path (serving/shadow.py).
POST /predict is answered by the `DirectPredict` middleware (the same `predict_body` as the API method, documented
by the API in OpenAPI), inside BentoML's metrics and limits but past its per-request API dispatch, and untraced
unless `serving.trace_predict` (BentoML records spans it never samples).
"""

from __future__ import annotations

import asyncio
import functools
import gc
import hmac
import io
import json
import logging
import os
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bentoml
import numpy as np
import orjson
from _bentoml_sdk.io_models import IODescriptor
from bentoml._internal.server.http import traffic as _traffic
from pydantic import BaseModel, ConfigDict, Field, create_model
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mlcycle.schemas.api import FieldError, RecordValidator, record_model
from mlcycle.schemas.config import PipelineConfig, ServingConfig
from mlcycle.schemas.feedback import FeedbackLabel, FeedbackResponse
from mlcycle.serving.batching import MicroBatcher
from mlcycle.serving.feedback import FeedbackDesk, LiveGauges, feedback_metrics
from mlcycle.serving.shadow import ShadowScorer, shadow_refusal
from mlcycle.tasks.monitor.labels import LabelTarget
from mlcycle.tasks.monitor.request_log import RequestLog
from mlcycle.tasks.preprocess import encode_columns, encode_records, input_fields, record_columns
from mlcycle.tasks.records import request_fields
from mlcycle.tasks.registry.bundle import (
    IntegrityError,
    ModelBundle,
    answer_records,
    contributions,
    load_bundle,
    predict_features,
)

log = logging.getLogger("mlcycle.serving")
EXAMPLES = Path(__file__).parent / "examples"
SERVING_ENV = (
    "MLCYCLE_SERVING"  # JSON overrides of the `serving:` config section, e.g. '{"batching": {"enabled": true}}'
)


def model_ref() -> str:
    """What to serve: MLCYCLE_MODEL_TAG (a full tag or a model name); else, inside a built Bento, the model it
    pinned at build time; else `adult` (its champion)."""
    return os.environ.get("MLCYCLE_MODEL_TAG") or bento_pinned_tag() or "adult"


def bento_pinned_tag() -> str | None:
    """The model tag a built Bento holds (its bento.yaml sits above the copied sources), or None outside one."""
    manifest = Path(__file__).resolve().parents[3] / "bento.yaml"  # <bento>/src/mlcycle/serving/service.py
    if not manifest.exists():
        return None
    import yaml

    services = yaml.safe_load(manifest.read_text()).get("services") or []
    tags = [m["tag"] for s in services for m in s.get("models", [])]
    return tags[0] if tags else None


def serving_config(bundle: ModelBundle) -> ServingConfig:
    """The bundle's `serving:` section with the overrides of MLCYCLE_SERVING applied (deep merge)."""
    base = bundle.config.serving.model_dump()
    extra = os.environ.get(SERVING_ENV)
    if extra:
        base = _merge(base, json.loads(extra))
    return ServingConfig.model_validate(base)


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


# --- the model being served ------------------------------------------------------------------------------------


@dataclass
class Predictor:
    """One loaded model with its validator; replaced as a whole when the champion changes."""

    bundle: ModelBundle
    validator: RecordValidator
    feature_sources: list[str]  # per model feature, the request field it comes from (derived → its source)

    @classmethod
    def load(cls, ref: str, threads: int = 1) -> Predictor:
        bundle = load_bundle(ref)
        bundle.booster.set_param({"nthread": threads})
        schema = bundle.features_schema
        sources = {d.name: d.source for d in bundle.preprocessor.derived}
        fields = request_fields(schema, bundle.preprocessor, bundle.config.preprocess.categorical)
        example = _example_for(example_records(bundle.config), fields.ignored)
        return cls(bundle, record_model(schema, example, fields),
                   [sources.get(n, n) for n in bundle.preprocessor.feature_names])  # fmt: skip

    @property
    def tag(self) -> str:
        return self.bundle.tag

    @functools.cached_property
    def columns(self) -> list[str]:
        """The request fields a served request is taken apart into, once: what encoding reads and what the request
        log keeps (the schema's columns)."""
        logged = self.validator.schema.to_schema().columns
        return list(dict.fromkeys([*input_fields(self.bundle.preprocessor), *logged]))

    def values(self, rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
        return record_columns(rows, self.columns)

    def predict(self, features: np.ndarray) -> np.ndarray:
        return predict_features(self.bundle.booster, features)

    def answers(self, raw: np.ndarray) -> list[dict[str, Any]]:
        return answer_records(self.bundle.config.task, self.bundle.classes, raw)

    def logged(self, raw: np.ndarray) -> tuple[list[float], list[str] | None]:
        """What the request log keeps per record: the prediction as one number (the positive class's probability,
        the predicted class's probability, or the value) and the predicted label (classification)."""
        classes = self.bundle.classes
        if raw.ndim == 2:
            return raw.max(axis=1).tolist(), [classes[i] for i in raw.argmax(axis=1).tolist()]
        if self.bundle.config.task == "binary":
            return raw.tolist(), [classes[1] if p >= 0.5 else classes[0] for p in raw.tolist()]
        return raw.tolist(), None

    def explain(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per model feature SHAP values and the bias column (`contributions`)."""
        return contributions(self.bundle.booster, features, self.predict(features))


def example_records(config: PipelineConfig) -> list[dict[str, Any]]:
    """A built-in demo's golden records (serving/examples/<name>.json); none for a project's dataset, whatever its
    name: its schema is its own."""
    path = EXAMPLES / f"{config.name}.json"
    if not path.exists() or not config.features_schema_ref.startswith(f"mlcycle.schemas.{config.name}:"):
        return []
    return list(json.loads(path.read_text()))


def _example_for(records: list[dict[str, Any]], ignored: frozenset[str]) -> dict[str, Any] | None:
    """The documented example record: the first golden record without the fields the model ignores."""
    return {k: v for k, v in records[0].items() if k not in ignored} if records else None


# --- request bodies: read once, limits and API key checked before parsing --------------------------------------


@dataclass(frozen=True)
class Refusal:
    status: int
    error: str
    errors: tuple[FieldError, ...] = ()

    def response(self, request_id: str, model: str | None) -> Response:
        body = {"error": self.error, "errors": [e.as_dict() for e in self.errors], "model": model,
                "request_id": request_id}  # fmt: skip
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else None
        return Response(orjson.dumps(body), status_code=self.status, media_type="application/json", headers=headers)


@dataclass
class Guard:
    """The limits and API key the request readers enforce; set by the service when it starts."""

    api_key: str | None = None
    max_body_bytes: int = 4 * 1024 * 1024
    max_upload_bytes: int = 64 * 1024 * 1024


GUARD = Guard()


def check_key(headers: Any) -> Refusal | None:
    if not GUARD.api_key:
        return None
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return Refusal(401, "this endpoint needs an API key: send 'Authorization: Bearer <key>'")
    if not hmac.compare_digest(token.strip().encode(), GUARD.api_key.encode()):
        return Refusal(401, "the API key is not valid")
    return None


async def read_body(request: Request, limit: int, keyed: bool = True) -> bytes | Refusal:
    """The request body, or 401 (`keyed`: the endpoint needs the API key) or 413 before it is read in full."""
    refused = check_key(request.headers) if keyed else None
    if refused:
        return refused
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        return Refusal(413, f"request body is {int(declared)} bytes; the limit is {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return Refusal(413, f"request body exceeds {limit} bytes; the limit is {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class RecordsInput(IODescriptor):
    """`{"records": [...]}`; the record model is set from the features schema when the service module loads."""

    records: list[dict[str, Any]]

    @classmethod
    async def from_http_request(cls, request: Request, serde: Any) -> IODescriptor:
        # The body reaches the API method unparsed: the method validates it with the model being served now,
        # and answers 400/413/422 itself (BentoML's own input errors are all 400 without record index).
        return cls.model_construct(records=await read_body(request, GUARD.max_body_bytes))  # type: ignore[arg-type]


class UploadInput(IODescriptor):
    """A CSV or Parquet file as the raw request body (Content-Type text/csv or application/vnd.apache.parquet)."""

    file: bytes

    @classmethod
    def mime_type(cls) -> str:
        return "application/octet-stream"

    @classmethod
    async def from_http_request(cls, request: Request, serde: Any) -> IODescriptor:
        body = await read_body(request, GUARD.max_upload_bytes)
        content_type = request.headers.get("content-type", "")
        return cls.model_construct(file=(body, content_type))  # type: ignore[arg-type]


class FeedbackInput(IODescriptor):
    """`{"labels": [...]}` (schemas/feedback.py), read unparsed: the desk answers 400/404/409/413/422 itself."""

    labels: list[FeedbackLabel]

    @classmethod
    async def from_http_request(cls, request: Request, serde: Any) -> IODescriptor:
        return cls.model_construct(labels=await read_body(request, GUARD.max_body_bytes))  # type: ignore[arg-type]


_NOTHING = re.compile(rb"(\s*\{\s*\}\s*)?")  # no body, or the JSON object {} (whitespace alone is not JSON)


class NoBody(IODescriptor):
    """No body: nothing, or `{}` (what BentoML's clients send); anything else is refused (400), unread."""

    refusal: Any = None

    @classmethod
    async def from_http_request(cls, request: Request, serde: Any) -> IODescriptor:
        body = await read_body(request, 64 * 1024, keyed=False)
        if isinstance(body, Refusal) or _NOTHING.fullmatch(body):
            return cls.model_construct(refusal=body if isinstance(body, Refusal) else None)
        message = f"{request.url.path} takes no body: send nothing, or {{}}"
        return cls.model_construct(refusal=Refusal(400, message))


def _input_spec(base: type[IODescriptor], record: type[BaseModel], max_records: int, example: Any,
                kind: str = "") -> type:  # fmt: skip
    """A RecordsInput whose documented record type is the generated model (for the OpenAPI document); `kind`
    names a second request of the same records with another limit (`Explain`)."""
    # extra="forbid": the document says what the service refuses, a top-level field other than `records`.
    config = ConfigDict(extra="forbid", json_schema_extra={"example": {"records": example}} if example else None)
    return create_model(  # type: ignore[call-overload, no-any-return]
        f"{record.__name__}{kind}Request", __base__=base, __config__=config,
        records=(list[record], Field(min_length=1, max_length=max_records,  # type: ignore[valid-type]
                                     description=f"1 to {max_records} records")),
    )  # fmt: skip


class PredictResponse(BaseModel):
    model: str = Field(description="The tag of the model that answered.")
    request_id: str
    predictions: list[dict[str, Any]] = Field(
        description="Per record: `probability` (of the positive class) and `label` (binary); `label` (the most "
        "probable class) and `probabilities` (class → probability, summing to 1) (multiclass); `value` (regression)."
    )
    unseen_categories: dict[str, int] = Field(description="Per feature, values never seen in training.")


def _serving_tag(ref: str) -> str:
    """The tag to serve for `ref`: a full tag as given (a built Bento pins one: no registry needed there); a bare
    name only through its champion. Raises RegistryError naming the fix when the name has none."""
    if ":" in ref:
        return ref
    from mlcycle.tasks import registry

    return registry.serving_tag(ref)


# The record model documented in OpenAPI: the one of the model chosen at start (a reload keeps its dataset). The
# /explain request takes the same records, fewer of them (`serving.explain_max_records`: exact SHAP values cost far
# more than a prediction), so it is a model of its own: the document states each limit as `maxItems`.
def _startup_spec() -> tuple[type, type, ServingConfig]:
    try:
        startup = Predictor.load(_serving_tag(model_ref()))
    except Exception as exc:  # no model yet (e.g. `bentoml build` before training): a generic record model
        log.warning("cannot load %s for the OpenAPI document: %s", model_ref(), exc)
        return RecordsInput, RecordsInput, ServingConfig()
    config = serving_config(startup.bundle)
    examples = example_records(startup.bundle.config)[:2]
    record = startup.validator.model
    predict = _input_spec(RecordsInput, record, config.max_records, examples)
    return predict, _input_spec(RecordsInput, record, config.explain_max_records, examples, "Explain"), config


STARTUP_SPEC, EXPLAIN_SPEC, STARTUP_CONFIG = _startup_spec()


def _feedback_spec() -> type:
    """The /feedback request documented in OpenAPI: labels typed as the startup model's task takes them (read from
    its bundle's files: no booster is loaded a second time)."""
    from mlcycle.schemas import PipelineConfig
    from mlcycle.schemas.feedback import feedback_model

    try:
        folder = Path(bentoml.models.get(_serving_tag(model_ref())).path)
        config = PipelineConfig.model_validate(json.loads((folder / "config.json").read_text()))
        classes = json.loads((folder / "lineage.json").read_text()).get("classes", [])
    except Exception:  # no model yet: the generic label (a number, a text or a boolean)
        return FeedbackInput
    model = feedback_model(config.name, config.task, classes, config.feedback.max_labels)
    return create_model(  # type: ignore[call-overload, no-any-return]
        model.__name__, __base__=FeedbackInput, __config__=ConfigDict(extra="forbid"),
        labels=(model.model_fields["labels"].annotation, model.model_fields["labels"]),
    )  # fmt: skip


FEEDBACK_SPEC = _feedback_spec()
metadata_app = Starlette(routes=[])  # GET /metadata (BentoML APIs are POST only), mounted on the service below
_LIVE: dict[str, Any] = {}
COUNTERS: dict[str, Any] = {}  # Prometheus counters, registered once per process


async def _metadata_route(request: Request) -> Response:
    service = _LIVE.get("service")
    if service is None:
        return JSONResponse({"error": "service is starting"}, status_code=503)
    return Response(orjson.dumps(service.metadata_body(), default=str), media_type="application/json")


metadata_app.router.routes.append(Route("/metadata", _metadata_route, methods=["GET"]))


# BentoML records every request's spans even when it samples none: /predict is left out unless asked for (profile
# in docs/performance.md#serving). A regular expression searched in the URL: /predict, not /predict_batch.
PREDICT_UNTRACED = {} if STARTUP_CONFIG.trace_predict else {"excluded_urls": [r"/predict(\?|$)"]}


@bentoml.service(name="mlcycle", traffic={"timeout": 60}, logging={"access": {"enabled": STARTUP_CONFIG.access_log}},
                 tracing=PREDICT_UNTRACED)  # fmt: skip
@bentoml.asgi_app(metadata_app, path="/")
class MLCycleService:
    # Resolved when BentoML imports the service, so `bentoml build` pins the champion into the Bento.
    model = bentoml.models.BentoModel(_serving_tag(model_ref()))

    def __init__(self) -> None:
        self.ref = model_ref()
        self.predictor = Predictor.load(_serving_tag(self.ref))
        self.config = serving_config(self.predictor.bundle)
        self.predictor.bundle.booster.set_param({"nthread": self.config.predict_threads})
        GUARD.api_key = os.environ.get(self.config.api_key_env) or None
        GUARD.max_body_bytes = self.config.max_body_bytes
        GUARD.max_upload_bytes = self.config.max_upload_bytes
        batching = self.config.batching
        self.batcher = MicroBatcher(batching.max_batch_size, batching.max_latency_ms) if batching.enabled else None
        self.request_log = self._request_log(self.predictor)
        self.desk = self._feedback_desk(self.predictor)
        self.shadow: ShadowScorer | None = None
        self.gauges = LiveGauges(self.predictor.bundle.config.name)
        self._reload_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._metrics()
        self.refused_reload: str | None = None  # why the newest champion is not served (another contract)
        log.info("serving %s (ref %s, batching %s)", self.predictor.tag, self.ref, batching.enabled)
        warning = rejected_warning(self.predictor.tag)
        if warning:
            log.warning(warning)

    def _metrics(self) -> None:
        if not COUNTERS:  # one registration per process; BentoML's /metrics exports prometheus_client's registry
            from prometheus_client import Counter

            labels = ["model"]
            COUNTERS.update(
                {
                    "predictions": Counter(
                        name="mlcycle_predictions", documentation="Records predicted", labelnames=labels
                    ),  # fmt: skip
                    "failures": Counter(
                        name="mlcycle_validation_failures",
                        documentation="Requests refused by validation (4xx)",
                        labelnames=[*labels, "status"],
                    ),  # fmt: skip
                    "unseen": Counter(
                        name="mlcycle_unseen_categories",
                        documentation="Category values never seen in training",
                        labelnames=[*labels, "feature"],
                    ),  # fmt: skip
                    "reloads": Counter(
                        name="mlcycle_model_reloads", documentation="Champion changes picked up", labelnames=labels
                    ),  # fmt: skip
                }
            )

    def _request_log(self, predictor: Predictor) -> RequestLog | None:
        settings = self.config.request_log
        if not settings.enabled or settings.sample_rate <= 0:
            return None
        columns = {n: str(c.dtype) for n, c in predictor.validator.schema.to_schema().columns.items()}
        return RequestLog(predictor.bundle.config.name, columns, settings)

    # --- lifecycle --------------------------------------------------------------------------------------------

    @bentoml.on_startup
    async def start_background(self) -> None:
        _LIVE["service"] = self  # the instance BentoML serves (tests create others): GET /metadata, POST /predict
        # What is alive now (the model, the libraries, about 240,000 objects) lives as long as the worker: out of
        # the collector's sight, a full collection walks only what requests created, not 240,000 objects more
        # (a 95 ms pause every few seconds under load, before).
        gc.collect()
        gc.freeze()
        loop = asyncio.get_running_loop()
        if self.request_log is not None:
            self._tasks.append(loop.create_task(self._flush_every(self.config.request_log.flush_s)))
        if ":" not in self.ref and self.config.reload_poll_s > 0:
            self._tasks.append(loop.create_task(self._poll_champion(self.config.reload_poll_s)))
        self._tasks.append(loop.create_task(self._watch_feedback(self.config.reload_poll_s or 30.0)))

    @bentoml.on_shutdown
    async def stop_background(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self.batcher is not None:
            await self.batcher.close()
        if self.shadow is not None:
            await self.shadow.drain()
        if self.request_log is not None:
            await asyncio.to_thread(self.request_log.flush)

    async def _flush_every(self, seconds: float) -> None:
        assert self.request_log is not None
        while True:
            await asyncio.sleep(seconds)
            try:
                await asyncio.to_thread(self.request_log.flush)
            except Exception:  # a full disk must not stop predictions; the next flush tries again
                log.exception("request log flush failed")

    async def _poll_champion(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await self.reload_model()
            except ContractChanged:
                pass  # logged once by reload_model; the service keeps serving what it has
            except Exception:
                log.exception("champion poll failed; still serving %s", self.predictor.tag)

    async def reload_model(self) -> dict[str, Any]:
        """Serve the current champion of the name given at start; the old model answers until the new one is
        loaded, then one assignment switches (no request is refused or dropped). A champion with another request
        contract (features schema, task or classes) is not served: ContractChanged says why."""
        async with self._reload_lock:
            previous = self.predictor.tag
            target = await asyncio.to_thread(_resolve, self.ref)
            if target == previous:
                return {"model": previous, "previous": previous, "changed": False}
            if self.refused_reload and target in self.refused_reload:  # the poll asks again: no second load
                raise ContractChanged(self.refused_reload)
            try:
                fresh = await asyncio.to_thread(Predictor.load, target, self.config.predict_threads)
            except IntegrityError as exc:  # logged and emitted by the check; the last good model keeps answering
                self.refused_reload = f"not serving {target}: {exc}; still serving {previous}"
                raise ContractChanged(self.refused_reload) from exc
            change = contract_change(self.predictor, fresh)
            if change:
                self.refused_reload = (f"not serving the new champion {target}: {change}, which would change the "
                                       f"request contract of this service (its OpenAPI document); still serving "
                                       f"{previous}; restart the service to serve {target}")  # fmt: skip
                log.warning(self.refused_reload)
                raise ContractChanged(self.refused_reload)
            self.refused_reload = None
            if self.request_log is not None and fresh.bundle.config.name != self.predictor.bundle.config.name:
                await asyncio.to_thread(self.request_log.flush)
                self.request_log = self._request_log(fresh)
                self.desk = self._feedback_desk(fresh)
            self.predictor = fresh
            COUNTERS["reloads"].labels(model=fresh.tag).inc()
            log.info("now serving %s (was %s)", fresh.tag, previous)
            return {"model": fresh.tag, "previous": previous, "changed": True}

    # --- the work, callable directly (tier-1 tests) -------------------------------------------------------------

    def parse(self, body: bytes, predictor: Predictor, limit: int | None = None,
              route: str = "/predict") -> list[dict[str, Any]] | Refusal:  # fmt: skip
        """Validate a JSON body `{"records": [...]}` against the documented contract, JSON's own types (no
        pandera coercion: "39" is not an integer here, as the OpenAPI document says): 400 if it is not JSON or is
        nested too deep to read, 413 over the record limit (`limit`, default `max_records`; the message names
        `route`'s), 422 with record index and field for every broken record."""
        limit = limit or self.config.max_records
        validator = predictor.validator
        rows = validator.validate_json_fast(body, limit)  # the common case: well-formed, checked in one pass
        if rows is not None:
            return _verdict(rows, validator.check_leftover(rows), len(rows))
        parsed = load_json(body)
        if isinstance(parsed, Refusal):
            return parsed
        if not isinstance(parsed, dict) or "records" not in parsed:
            return Refusal(422, 'body must be a JSON object {"records": [{field: value, ...}, ...]}')
        extra = sorted(set(parsed) - {"records"})
        if extra:
            return Refusal(422, f"unexpected top-level field(s) {extra}; only 'records' is allowed")
        records = parsed["records"]
        if not isinstance(records, list):
            return Refusal(422, f"'records' must be a list of objects, got {type(records).__name__}")
        if not records:
            return Refusal(422, f"'records' is empty; send 1 to {limit} records")
        if len(records) > limit:
            if route == "/predict":
                return Refusal(413, f"at most {limit} records per request, got {len(records)}")
            return Refusal(413, f"at most {limit} records per {route} request (serving.explain_max_records), got "
                           f"{len(records)}; send the rest in further requests")  # fmt: skip
        return _verdict(*validator.validate_python(records, strict=True), len(records))

    async def score(self, values: dict[str, list[Any]], count: int,
                    predictor: Predictor) -> tuple[np.ndarray, dict[str, int]]:  # fmt: skip
        """The predictions for `count` records taken apart by `Predictor.values`."""
        features, unseen = encode_columns(predictor.bundle.preprocessor, values, count)
        if self.batcher is not None:
            raw = await self.batcher.predict(features, predictor.predict)
        elif count <= 64:  # a few rows: cheaper on the event loop than a thread hop
            raw = predictor.predict(features)
        else:
            raw = await asyncio.to_thread(predictor.predict, features)
        return raw, unseen

    def account(self, predictor: Predictor, rows: list[dict[str, Any]], values: dict[str, list[Any]],
                raw: np.ndarray, unseen: dict[str, int], request_id: str) -> None:  # fmt: skip
        counters = COUNTERS
        counters["predictions"].labels(model=predictor.tag).inc(len(rows))
        for feature, count in unseen.items():
            counters["unseen"].labels(model=predictor.tag, feature=feature).inc(count)
        if self.request_log is not None and self.request_log.sampled():
            due = self.request_log.add_fields(values, len(rows), predictor.tag, request_id, *predictor.logged(raw))
            if self.shadow is not None:
                self.shadow.submit(rows, request_id, predictor)
            if due:
                asyncio.get_running_loop().run_in_executor(None, self.request_log.flush)

    def refuse(self, refusal: Refusal, request_id: str, model: str) -> Response:
        COUNTERS["failures"].labels(model=model, status=str(refusal.status)).inc()
        return refusal.response(request_id, model)

    async def predict_body(self, body: bytes | Refusal) -> Response:
        request_id = uuid.uuid4().hex
        predictor = self.predictor  # one model per request, even if a reload switches mid-way
        if self.shadow is not None:  # a canary share of answers may come from the challenger
            predictor = self.shadow.answering(predictor)
        rows = body if isinstance(body, Refusal) else self.parse(body, predictor)
        if isinstance(rows, Refusal):
            return self.refuse(rows, request_id, predictor.tag)
        values = predictor.values(rows)
        raw, unseen = await self.score(values, len(rows), predictor)
        self.account(predictor, rows, values, raw, unseen, request_id)
        answer = {"model": predictor.tag, "request_id": request_id, "predictions": predictor.answers(raw),
                  "unseen_categories": unseen}  # fmt: skip
        return Response(orjson.dumps(answer), media_type="application/json")

    def metadata_body(self) -> dict[str, Any]:
        from mlcycle.tasks import registry

        predictor = self.predictor
        bundle = predictor.bundle
        name = bundle.config.name
        try:
            since = registry.champion_since(name) if registry.champion(name) == bundle.tag else None
        except Exception:
            since = None
        return {
            "model": bundle.tag,
            "name": name,
            "task": bundle.config.task,
            "classes": bundle.classes,
            "status": registry_status(bundle.tag),
            "warning": rejected_warning(bundle.tag),
            "reload_refused": self.refused_reload,
            "champion": since is not None,
            "champion_since": since,
            "served_ref": self.ref,
            "schema": predictor.validator.model.model_json_schema(),
            "features": bundle.preprocessor.feature_names,
            "metrics": bundle.metrics,
            "lineage": bundle.lineage,
            "serving": self.config.model_dump(exclude={"api_key_env"}),
            "api_key_required": GUARD.api_key is not None,
            "shadow": self.shadow.tag if self.shadow is not None else None,
        }

    # --- labels that come back, and the shadow challenger ---------------------------------------------------------

    def _feedback_desk(self, predictor: Predictor) -> FeedbackDesk:
        bundle = predictor.bundle
        target = LabelTarget(bundle.config.task, tuple(bundle.classes))
        return FeedbackDesk(bundle.config.name, bundle.config.feedback, target, self.request_log)

    async def _watch_feedback(self, seconds: float) -> None:
        while True:
            try:
                await self.refresh_shadow()
                await asyncio.to_thread(self.gauges.refresh)
            except Exception:  # the registry or a report unreadable for a moment: the next look tries again
                log.exception("shadow or live-metric refresh failed")
            await asyncio.sleep(seconds)

    async def refresh_shadow(self) -> str | None:
        """Follow the registry's shadow of the served name: start, switch or stop scoring a challenger."""
        from mlcycle.tasks import registry

        name = self.predictor.bundle.config.name
        wanted = await asyncio.to_thread(registry.shadow, name)
        if wanted == (self.shadow.tag if self.shadow else None):
            return wanted
        old, self.shadow = self.shadow, None
        if old is not None:
            if old.task is not None:
                old.task.cancel()
            await old.drain()
        if wanted is None or self.request_log is None:  # without the request log there is nothing to compare
            return None
        challenger = await asyncio.to_thread(Predictor.load, wanted, self.config.predict_threads)
        refusal = shadow_refusal(self.predictor, challenger)
        unread = sorted(self.predictor.validator.ignored - challenger.validator.ignored)
        if refusal is None and unread:  # the champion's records hold None there
            refusal = f"{wanted} reads {unread}, which {self.predictor.tag} ignores"
        if refusal:
            log.warning("not scoring %s in shadow: %s", wanted, refusal)
            return None
        scorer = ShadowScorer(challenger, lambda: self.predictor, self.predictor.bundle.config.feedback.shadow,
                              self.config.request_log, feedback_metrics()["shadow"])  # fmt: skip
        scorer.task = asyncio.get_running_loop().create_task(scorer.run())
        self.shadow = scorer
        log.info("scoring %s in shadow beside %s", wanted, self.predictor.tag)
        return wanted

    # --- HTTP endpoints -----------------------------------------------------------------------------------------

    @bentoml.api(route="/predict", input_spec=STARTUP_SPEC, output_spec=PredictResponse)
    async def predict(self, records: Any) -> Any:
        """Predict for 1 to `max_records` records. 422 names the record index and field of every problem."""
        return await self.predict_body(records)

    @bentoml.api(route="/explain", input_spec=EXPLAIN_SPEC)
    async def explain(self, records: Any) -> Any:
        """Per-record, per-field exact SHAP contributions (XGBoost pred_contribs; derived features count to their
        source field), in log-odds for binary, target units for regression; they sum to `margin` with `bias`.
        Multiclass: those of each record's predicted class (`label`), in that class's softmax margin. 1 to
        `explain_max_records` records (fewer than /predict takes: exact SHAP values cost far more)."""
        request_id = uuid.uuid4().hex
        predictor = self.predictor
        limit = self.config.explain_max_records
        rows = records if isinstance(records, Refusal) else self.parse(records, predictor, limit, "/explain")
        if isinstance(rows, Refusal):
            return self.refuse(rows, request_id, predictor.tag)
        features, unseen = encode_records(predictor.bundle.preprocessor, rows)
        contribs, bias = await asyncio.to_thread(predictor.explain, features)
        raw = predictor.predict(features)
        fields = predictor.validator.fields
        explanations = []
        for i in range(len(rows)):
            by_field = dict.fromkeys(fields, 0.0)
            for j, source in enumerate(predictor.feature_sources):
                by_field[source] += float(contribs[i, j])
            explanations.append({"bias": float(bias[i]), "contributions": by_field,
                                 "margin": float(bias[i] + contribs[i].sum()), **predictor.answers(raw[i:i + 1])[0]})  # fmt: skip
        units = {"binary": "log-odds", "multiclass": "softmax margin of the predicted class"}.get(
            predictor.bundle.config.task, "target")  # fmt: skip
        answer = {"model": predictor.tag, "request_id": request_id, "units": units, "explanations": explanations,
                  "unseen_categories": unseen}  # fmt: skip
        return Response(orjson.dumps(answer), media_type="application/json")

    @bentoml.api(route="/predict_batch", input_spec=UploadInput)
    async def predict_batch(self, file: Any) -> Any:
        """Score a CSV or Parquet file sent as the request body; a bad row is reported by its 0-based row index."""
        request_id = uuid.uuid4().hex
        predictor = self.predictor
        body, content_type = file
        if isinstance(body, Refusal):
            return self.refuse(body, request_id, predictor.tag)
        started = time.perf_counter()
        rows = await asyncio.to_thread(self.parse_upload, body, content_type, predictor)
        if isinstance(rows, Refusal):
            return self.refuse(rows, request_id, predictor.tag)
        values = await asyncio.to_thread(predictor.values, rows)
        features, unseen = await asyncio.to_thread(encode_columns, predictor.bundle.preprocessor, values, len(rows))
        raw = await asyncio.to_thread(predictor.predict, features)
        self.account(predictor, rows, values, raw, unseen, request_id)
        answer = {"model": predictor.tag, "request_id": request_id, "rows": len(rows),
                  "predictions": predictor.answers(raw), "unseen_categories": unseen,
                  "seconds": round(time.perf_counter() - started, 4)}  # fmt: skip
        return Response(orjson.dumps(answer), media_type="application/json")

    def parse_upload(self, body: bytes, content_type: str, predictor: Predictor) -> list[dict[str, Any]] | Refusal:
        import pandas as pd

        from mlcycle.serving.openapi import PARQUET, UPLOAD_TYPES
        from mlcycle.tasks.ingest.validate import text_columns

        media = content_type.partition(";")[0].strip().lower()
        if media and media not in UPLOAD_TYPES:
            return Refusal(415, f"Content-Type {media} is not a file this endpoint reads: send the file with "
                           f"Content-Type {' or '.join(UPLOAD_TYPES[:2])}")  # fmt: skip
        if not body:
            return Refusal(400, "the upload is empty; send a CSV or Parquet file as the request body")
        is_parquet = body[:4] == b"PAR1" or media == PARQUET
        # A text field of the CSV is read as written: a code "02134" stays "02134", not the number 2134.
        texts = dict.fromkeys(text_columns(predictor.validator.schema), str)
        try:
            frame = pd.read_parquet(io.BytesIO(body)) if is_parquet else pd.read_csv(io.BytesIO(body), dtype=texts)
        except Exception as exc:  # any parser error is the upload's fault
            kind = "Parquet" if is_parquet else "CSV"
            return Refusal(400, f"cannot read the upload as {kind}: {type(exc).__name__}: {exc}")
        limit = self.config.max_upload_rows
        if len(frame) > limit:
            return Refusal(413, f"at most {limit} rows per upload, got {len(frame)}")
        if frame.empty:
            return Refusal(422, "the upload has no rows")
        records = frame.astype(object).where(frame.notna(), None).to_dict("records")
        rows, errors = predictor.validator.validate_python(records)
        if errors:
            broken = len({e.record for e in errors})
            return Refusal(422, f"{broken} of {len(records)} row(s) failed validation (row = 0-based data row)",
                           tuple(errors[:1000]))  # fmt: skip
        return rows

    @bentoml.api(route="/feedback", input_spec=FEEDBACK_SPEC, output_spec=FeedbackResponse)
    async def feedback(self, labels: Any) -> Any:
        """Labels for earlier answers, by `request_id` and `record`: all stored or none, a duplicate counted once.
        404 names each label of an unknown request id or record, 409 each contradicting a recorded label, 422 each
        the model's task cannot take or that came too late. Needs the API key if set."""
        request_id, model = uuid.uuid4().hex, self.predictor.tag
        answer = labels if isinstance(labels, Refusal) else await self.desk.answer(labels, model, request_id)
        if not isinstance(answer, dict):
            return self.refuse(answer if isinstance(answer, Refusal) else Refusal(*answer), request_id, model)
        return Response(orjson.dumps(answer), media_type="application/json")

    @bentoml.api(route="/reload", input_spec=NoBody)
    async def reload(self, refusal: Any, ctx: bentoml.Context) -> Any:
        """Switch to the current champion of the served name now (a pinned tag stays); 409 if it has another
        request contract. Needs the API key if set."""
        refusal = check_key(ctx.request.headers) or refusal
        if refusal is None:
            try:
                return await self.reload_model()
            except ContractChanged as exc:
                refusal = Refusal(409, str(exc))
        ctx.response.status_code = refusal.status  # BentoML gives an API with a context its status
        return refusal.response(uuid.uuid4().hex, self.predictor.tag)

    @bentoml.api(route="/model", input_spec=NoBody)
    def model_info(self, refusal: Any) -> Any:
        """Which model answers, with its metrics and lineage (GET /metadata has more)."""
        bundle = self.predictor.bundle
        if refusal is not None:
            return refusal.response(uuid.uuid4().hex, bundle.tag)
        return {"model": bundle.tag, "metrics": bundle.metrics, "lineage": bundle.lineage}


class DirectPredict:
    """ASGI middleware that answers `POST /predict` with the served instance's `predict_body`, the same work and
    answer as the `predict` API below, without BentoML's per-request dispatch (routing, its request context, the
    IO descriptor and API call machinery), which cost more than mlcycle's whole prediction for one record
    (README, serving benchmark). It sits inside BentoML's own middlewares, so BentoML's HTTP metrics, access log,
    timeout and concurrency limit (and tracing, with `serving.trace_predict`) still see every request. Off
    (`serving.direct_predict: false`) or with BentoML's CORS on (its headers come from a middleware inside this
    one), BentoML's route answers."""

    def __init__(self, app: Any) -> None:
        from bentoml._internal.configuration.containers import BentoMLContainer

        self.app = app
        self.cors = bool(BentoMLContainer.http.cors.enabled.get())
        self.trace_id_header = bool(BentoMLContainer.http.response.trace_id.get())
        self.id_format = BentoMLContainer.logging_formatting.get()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        service = _LIVE.get("service")
        if scope["type"] == "http" and scope["path"] == "/predict":
            _request_id()
        if (scope["type"] != "http" or scope["path"] != "/predict" or scope["method"] != "POST" or self.cors
                or service is None or not service.config.direct_predict):  # fmt: skip
            await self.app(scope, receive, send)
            return
        try:
            response = await service.predict_body(await read_body(Request(scope, receive), GUARD.max_body_bytes))
        except Exception:  # what BentoML's API wrapper answers for a server fault
            log.exception("POST /predict failed")
            response = JSONResponse({"error": "An unexpected error has occurred, please check the server log."},
                                    status_code=500)  # fmt: skip
        self._headers(response)
        await response(scope, receive, send)

    def _headers(self, response: Response) -> None:
        """The headers BentoML's API route adds (its service name, the request's span id as request id)."""
        from bentoml._internal.context import trace_context

        response.headers["Server"] = "BentoML Service/mlcycle"
        if trace_context.request_id is not None:
            response.headers["X-BentoML-Request-ID"] = format(trace_context.request_id, self.id_format["span_id"])
        if self.trace_id_header and trace_context.trace_id is not None:
            response.headers["X-BentoML-Trace-ID"] = format(trace_context.trace_id, self.id_format["trace_id"])


def _request_id() -> None:
    """Give an untraced request (`serving.trace_predict` off) the request id its span would have given it, which
    BentoML's route and `DirectPredict` send as X-BentoML-Request-ID."""
    from bentoml._internal.context import trace_context

    if trace_context.request_id is None:
        trace_context.request_id = int.from_bytes(os.urandom(8), "big") or 1


class ContractDocument:
    """ASGI middleware answering `GET /docs.json` (the OpenAPI document, also behind BentoML's Swagger UI at /)
    with the contract the service keeps (serving/openapi.py) rather than BentoML's generic one."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != "/docs.json" or scope["method"] not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        from mlcycle.serving.openapi import contract_document

        service = _LIVE.get("service")
        checked = set(service.predictor.validator.leftover) if service is not None else set()
        spec = MLCycleService.openapi_spec.asdict()  # type: ignore[attr-defined]
        document = contract_document(spec, GUARD.api_key is not None, checked)
        await Response(orjson.dumps(document), media_type="application/json")(scope, receive, send)


class CancellingTimeout(_traffic.TimeoutMiddleware):
    """BentoML's request timeout (the same 504 after `traffic.timeout` seconds), whose timer is cancelled when the
    request ends. BentoML 1.4's leaves every request's timer scheduled for the whole timeout (60 s by default), with
    the request's future and context: under 32 clients, 38,000 live timers at one full garbage collection, which
    walked them with the rest of the heap in 90-190 ms pauses (p99 at 32 clients up to 4.7× the floor's, issue #29).
    Installed in place of BentoML's class, which its app factory looks up when it builds the middlewares."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        timer = loop.call_later(self.timeout, self._set_timer_out, waiter)

        async def _send(message: Any) -> None:
            if not waiter.done():
                waiter.set_result(None)
            await send(message)

        work = asyncio.ensure_future(self.app(scope, receive, _send), loop=loop)
        try:
            await waiter
        except TimeoutError:
            if work.cancel():
                answer = {"error": f"Not able to process the request in {self.timeout} seconds"}
                await JSONResponse(answer, status_code=504)(scope, receive, send)
        else:
            await work
        finally:
            timer.cancel()


_traffic.TimeoutMiddleware = CancellingTimeout  # type: ignore[misc]
MLCycleService.add_asgi_middleware(DirectPredict)
MLCycleService.add_asgi_middleware(ContractDocument)


class ContractChanged(RuntimeError):
    """A new champion the service does not serve, with the reason: another request contract, or a file that fails
    the digest recorded when the model was saved."""


def contract_change(current: Predictor, fresh: Predictor) -> str | None:
    """How `fresh` would change the service's request or answer contract (None: it would not)."""
    from mlcycle.schemas import schema_fingerprint

    now, new = current.bundle, fresh.bundle
    if now.config.task != new.config.task:
        return f"its task is {new.config.task}, not {now.config.task}"
    if now.classes != new.classes:
        return f"its classes are {new.classes}, not {now.classes}"
    if schema_fingerprint(current.validator.schema) != schema_fingerprint(fresh.validator.schema):
        return f"its features schema {new.config.features_schema_ref} differs from {now.config.features_schema_ref}"
    for what, before, after in (("code fields", current.validator.codes, fresh.validator.codes),
                                ("fields it ignores", current.validator.ignored, fresh.validator.ignored)):  # fmt: skip
        if before != after:
            return f"its {what} are {sorted(after) or 'none'}, not {sorted(before) or 'none'}"
    return None


def load_json(body: bytes) -> Any:
    """The parsed JSON body, or a 400 Refusal naming why it cannot be read."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if "depth" in str(exc):  # orjson reads 1,024 levels; a request needs 3
            return Refusal(400, f'body is nested too deep to read ({exc}); send {{"records": [{{field: value}}]}}')
        error = exc
    try:  # NaN and Infinity are not JSON, but common encoders write them: refuse them by field (422)
        return json.loads(body)
    except RecursionError:
        return Refusal(400, f'body is nested too deep to read; send {{"records": [{{field: value}}]}} ({error})')
    except (ValueError, UnicodeDecodeError):
        return Refusal(400, f"body is not valid JSON: {error}")


def registry_status(tag: str) -> str | None:
    """The version's status in the registry; None where there is none (inside a built Bento)."""
    from mlcycle.tasks import registry

    try:
        return registry.version(tag).status
    except Exception:
        return None


def rejected_warning(tag: str) -> str | None:
    """A warning when the served version is one the promotion gate rejected (served only because pinned)."""
    if registry_status(tag) != "rejected":
        return None
    return (f"{tag} was REJECTED by the promotion gate (mlcycle models show {tag}); it is served only because it "
            f"was pinned by its full tag")  # fmt: skip


def _verdict(rows: list[dict[str, Any]], errors: list[FieldError], count: int) -> list[dict[str, Any]] | Refusal:
    """The validated rows, or 422 naming every broken record of the `count` sent."""
    if not errors:
        return rows
    broken = len({e.record for e in errors})
    return Refusal(422, f"{broken} of {count} record(s) failed validation", tuple(errors))


def _resolve(ref: str) -> str:
    return _serving_tag(ref)
