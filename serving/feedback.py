"""POST /feedback and the live-metric gauges: the service's side of labels that arrive later.

`FeedbackDesk` validates a body against the served model's `schemas.feedback.feedback_model` (the one its OpenAPI
document shows), checks each label against the request
index (a request still in this worker's request-log buffer is written first, so a label may follow its answer at
once) and stores the labels in one transaction, all or none (tasks/monitor/labels.py). `LiveGauges` turns the
newest performance report (written by the performance-check flow) into `/metrics` gauges.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from mlcycle.schemas.api import FieldError
from mlcycle.schemas.config import FeedbackConfig
from mlcycle.schemas.feedback import feedback_model
from mlcycle.tasks.monitor.feedback import latest_report, reports_dir
from mlcycle.tasks.monitor.labels import Label, LabelBatch, LabelStore, LabelTarget
from mlcycle.tasks.monitor.request_log import LoggedRequest, RequestIndex, RequestLog, requests_dir

log = logging.getLogger("mlcycle.serving")
_METRICS: dict[str, Any] = {}  # Prometheus metrics, registered once per process


Refused = tuple[int, str, tuple[FieldError, ...]]  # HTTP status, what is wrong, per label and field


class FeedbackDesk:
    """Takes labels for one model name: validation, the request-id check, storage, counters."""

    def __init__(self, name: str, settings: FeedbackConfig, target: LabelTarget, request_log: RequestLog | None,
                 root: Path | None = None) -> None:  # fmt: skip
        self.name = name
        self.settings = settings
        self.target = target
        self.request_log = request_log
        self.index = RequestIndex(request_log.root if request_log is not None else (root or requests_dir(name)))
        self.store = LabelStore(name)
        self.request = TypeAdapter(feedback_model(name, target.task, list(target.classes), settings.max_labels))

    def parse(self, body: bytes) -> list[Label] | Refused:
        """The labels of a body, or (status, error, field errors) for one that breaks the contract."""
        try:
            request = self.request.validate_json(body)
        except ValidationError as exc:
            errors = _label_errors(exc)
            if any(e.rule == "json_invalid" for e in errors):
                return 400, f"body is not valid JSON: {errors[0].message}", ()
            if any(e.rule == "too_long" and e.field == "labels" and e.record is None for e in errors):
                return 413, f"at most {self.settings.max_labels} labels per request", ()
            return 422, 'body must be {"labels": [{"request_id", "record", "label"}, ...]}', tuple(errors)
        return [Label(item.request_id, item.record, item.label) for item in request.labels]

    def lookup(self, request_ids: set[str]) -> dict[str, LoggedRequest]:
        """Logged requests by id; one still in this worker's buffer is written first (a label may follow at once)."""
        found = self.index.lookup(request_ids)
        missing = request_ids - set(found)
        if missing and self.request_log is not None and any(self.request_log.holds(rid) for rid in missing):
            self.request_log.flush()
            found.update(self.index.lookup(missing))
        return found

    def record(self, labels: list[Label]) -> LabelBatch:
        return self.store.record(labels, self.lookup, self.target, self.settings, source="http")

    async def answer(self, body: bytes, model: str, request_id: str) -> dict[str, Any] | Refused:
        """The answer to POST /feedback: the counts (200), or a refusal naming every bad label (nothing stored)."""
        parsed = self.parse(body)
        if isinstance(parsed, tuple):
            return parsed
        batch = await asyncio.to_thread(self.record, parsed)
        counter = feedback_metrics()["labels"]
        for outcome in ("accepted", "duplicate", "corrected", "refused"):
            if batch.count(outcome):  # type: ignore[arg-type]
                counter.labels(model=model, outcome=outcome).inc(batch.count(outcome))  # type: ignore[arg-type]
        if not batch.stored:
            refused = batch.refused
            statuses = {v.status for v in refused}
            status = next(code for code in (422, 404, 409) if code in statuses)
            rules = {404: "unknown", 409: "conflict", 422: "label"}
            errors = tuple(FieldError(v.index, _field_of(v.reason), rules[v.status], v.reason) for v in refused)
            return status, f"{len(refused)} of {len(parsed)} label(s) refused; none stored", errors
        summary = batch.summary()
        return {"model": model, "request_id": request_id, "labels": summary["labels"],
                "accepted": summary["accepted"], "duplicates": summary["duplicates"],
                "corrected": summary["corrected"]}  # fmt: skip


def _label_errors(exc: ValidationError) -> list[FieldError]:
    """Pydantic's errors as (label index, field, rule, message), one per label and field."""
    found: dict[tuple[int | None, str | None], FieldError] = {}
    for error in exc.errors(include_url=False, include_context=False):
        loc = error["loc"]
        index = next((p for p in loc if isinstance(p, int)), None)
        names = [p for p in loc if isinstance(p, str) and p not in ("labels",)]
        name = names[0] if names else ("labels" if "labels" in loc else None)
        kind = error["type"]
        rule = {"missing": "missing field", "extra_forbidden": "unexpected field"}.get(kind, kind)
        message = error["msg"]
        if kind == "missing":
            message = f"field {name!r} is missing"
        elif kind == "extra_forbidden":
            message = f"field {name!r} is not part of a label"
        elif kind != "json_invalid":
            message = f"{message} (got {error.get('input')!r})"
        found.setdefault((index, name), FieldError(index, name, rule, message))
    return list(found.values())


def _field_of(reason: str) -> str:
    if "request id" in reason:
        return "request_id"
    if "no record" in reason:
        return "record"
    return "label"


def feedback_metrics() -> dict[str, Any]:
    """The Prometheus metrics of feedback, shadow scoring and live performance (BentoML's /metrics exports them)."""
    if not _METRICS:
        from prometheus_client import Counter, Gauge

        live = ["model", "role", "metric", "window_h", "slice"]
        mode = "mostrecent"  # BentoML runs prometheus_client in multiprocess mode: the newest value wins
        _METRICS.update({
            "labels": Counter("mlcycle_feedback_labels", "Labels received, by outcome", ["model", "outcome"]),
            "shadow": Counter("mlcycle_shadow_records", "Records scored in shadow, or dropped from a full queue",
                              ["model", "outcome"]),  # fmt: skip
            "live": Gauge("mlcycle_live_metric", "Live primary metric of a model over a window (labelled traffic)",
                          live, multiprocess_mode=mode),  # fmt: skip
            "low": Gauge("mlcycle_live_metric_low", "Lower bound of the live metric's bootstrap interval", live,
                         multiprocess_mode=mode),  # fmt: skip
            "high": Gauge("mlcycle_live_metric_high", "Upper bound of the live metric's bootstrap interval", live,
                          multiprocess_mode=mode),  # fmt: skip
            "labelled": Gauge("mlcycle_live_labels", "Labelled predictions of a model in a window", live,
                              multiprocess_mode=mode),  # fmt: skip
            "degraded": Gauge("mlcycle_live_degraded", "1 when the champion's live metric has degraded", ["model"],
                              multiprocess_mode=mode),  # fmt: skip
        })  # fmt: skip
    return _METRICS


class LiveGauges:
    """Sets the live-metric gauges from the newest performance report, when it changes."""

    def __init__(self, name: str, root: Path | None = None) -> None:
        self.name = name
        self.root = root or reports_dir(name)
        self._seen: float | None = None

    def refresh(self) -> bool:
        """Read the newest report if it changed since the last look; True when the gauges were set."""
        latest = self.root / "latest.json"
        try:
            stamp = os.stat(latest).st_mtime
        except FileNotFoundError:
            return False
        if stamp == self._seen:
            return False
        report = latest_report(self.name, self.root)
        if report is None:
            return False
        gauges = feedback_metrics()
        for key in ("live", "low", "high", "labelled"):
            gauges[key].clear()
        for m in report.metrics:
            labels = {"model": m.model, "role": m.role, "metric": m.metric, "window_h": f"{m.window_h:g}",
                      "slice": "all" if m.slice == "all" else f"{m.slice}={m.value}"}  # fmt: skip
            gauges["labelled"].labels(**labels).set(m.labelled)
            for key, value in (("live", m.live), ("low", m.low), ("high", m.high)):
                if value is not None:
                    gauges[key].labels(**labels).set(value)
        if report.champion:
            gauges["degraded"].labels(model=report.champion).set(float(report.degradation.degraded))
        self._seen = stamp
        return True
