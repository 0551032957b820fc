"""The performance-check flow: is the model serving now still good on the traffic it sees?

It ingests the label files of the feedback landing folder, joins every label that has come back (HTTP or file) to
the prediction the service logged, and computes the champion's live primary metric over rolling windows, overall and
per slice, with bootstrap intervals (tasks/monitor/feedback.py). It publishes them as Prefect artifacts and as the
report the service turns into `/metrics` gauges, and emits `mlcycle.performance.degraded` on
`mlcycle.dataset.<name>` when the live metric is worse than the champion's own test metric by more than
`feedback.degradation_margin` with confidence; `retrain/<name>-on-degradation` reacts to it. With a challenger in
shadow it also judges the live rule of the gate (the paired comparison on the same labelled requests) and promotes or
rejects the challenger.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from pydantic import BaseModel, Field

from mlcycle.flows.models import emit_dataset_event, emit_promoted, mirror_champion_task
from mlcycle.schemas import PipelineConfig
from mlcycle.tasks import registry
from mlcycle.tasks.monitor.feedback import (
    LIVE_METRIC,
    PerformanceReport,
    Served,
    assess,
    metrics_markdown,
    utc_now,
    write_report,
)
from mlcycle.tasks.monitor.labels import FileOutcome, LabelTarget, ingest_label_folder
from mlcycle.tasks.monitor.request_log import RequestIndex, requests_dir

_pure = {"cache_policy": NO_CACHE}


class PerformanceResult(BaseModel):
    """What the check found; `degraded` is what the event reports."""

    dataset: str
    champion: str | None
    shadow: str | None
    labelled: int = Field(description="Labelled predictions read for the windows.")
    judged: bool
    degraded: bool
    detail: str
    shadow_decision: str | None = Field(default=None, description="promote, reject or wait; None: no shadow.")
    label_files: list[dict[str, Any]] = Field(default_factory=list)
    report: str = Field(default="", description="The report file the service reads for its gauges.")


def bundle_file(tag: str, name: str) -> dict[str, Any]:
    """One of a bundle's JSON files (no booster is loaded)."""
    import json

    import bentoml

    return json.loads((Path(bentoml.models.get(tag).path) / name).read_text())  # type: ignore[no-any-return]


def label_target(config: PipelineConfig, tag: str | None) -> LabelTarget:
    """How this dataset's labels read: the champion's classes for a classification task."""
    if config.task == "regression" or tag is None:
        return LabelTarget(config.task)
    return LabelTarget(config.task, tuple(bundle_file(tag, "lineage.json").get("classes", [])))


def served(tag: str | None, metric: str) -> Served | None:
    """A model's tag and its own test value of the live metric."""
    return Served(tag, bundle_file(tag, "metrics.json")["test"].get(metric)) if tag else None


@task(name="ingest_label_files", retries=2, **_pure)
def ingest_labels_task(config: PipelineConfig, champion: str | None, now: datetime) -> list[FileOutcome]:
    """The feedback landing folder's new label files, each row judged as POST /feedback judges a label."""
    index = RequestIndex(requests_dir(config.name))
    return ingest_label_folder(config.name, config.feedback, index.lookup, label_target(config, champion), now)


@task(name="assess_live_performance", **_pure)
def assess_task(config: PipelineConfig, champion: str | None, shadow: str | None, now: datetime) -> PerformanceReport:
    since = registry.shadow_since(config.name) if shadow else None
    metric = LIVE_METRIC[config.task]
    earlier = {v.tag: v.metric if v.primary_metric == metric else None for v in registry.versions(config.name)
               if v.tag not in (champion, shadow)}  # fmt: skip
    return assess(config.name, config.task, metric, config.slices, config.feedback, served(champion, metric),
                  served(shadow, metric), datetime.fromisoformat(since) if since else None, now, config.seed, earlier,
                  label_target(config, champion).classes)  # fmt: skip


@task(name="decide_shadow", **_pure)
def decide_shadow_task(report: PerformanceReport) -> str | None:
    """Promote or reject the shadow on its live evidence (the gate's live rule); None while it waits."""
    if report.shadow is None or report.shadow_decision in (None, "wait"):
        return None
    check = report.shadow_check or {}
    reason = f"live rule: {check.get('detail', '')}"
    evidence = {"live": check, "checked_at": report.checked_at}
    run_id = str(flow_run.id) if flow_run.id else None
    if report.shadow_decision == "promote":
        registry.promote(report.shadow, reason=reason, evidence=evidence, flow_run_id=run_id)
        emit_promoted(report.dataset, report.shadow, report.champion, "promote", reason)
        mirror_champion_task(report.dataset, report.shadow, "promote")
    else:
        registry.reject(report.shadow, reason=reason, evidence=evidence, flow_run_id=run_id)
    print(f"shadow {report.shadow}: {report.shadow_decision} ({reason})")
    return report.shadow_decision


@task(name="publish_performance", retries=2, **_pure)
def publish_task(report: PerformanceReport) -> Path:
    """The live metrics as artifacts and as the report file; `mlcycle.performance.degraded` when degraded."""
    key = f"performance-{report.dataset}".replace("_", "-")
    path = write_report(report)
    create_table_artifact(key=key, table=[m.__dict__ for m in report.metrics if m.slice == "all" or m.live is not None],
                          description=f"Live {report.metric} per window and slice")  # fmt: skip
    create_markdown_artifact(key=f"{key}-summary", markdown=metrics_markdown(report), description="Performance check")
    degradation = report.degradation
    if degradation.degraded:
        emit_dataset_event(
            "mlcycle.performance.degraded",
            report.dataset,
            report.champion,
            {
                "champion": report.champion,
                "metric": degradation.metric,
                "live": degradation.live,
                "low": degradation.low,
                "high": degradation.high,
                "test": degradation.test,
                "line": degradation.line,
                "window_h": degradation.window_h,
                "labelled": degradation.labelled,
            },
        )
    return path


@flow(name="performance-check", log_prints=True)
def performance_flow(config: PipelineConfig) -> PerformanceResult:
    """Ingest label files, join labels to logged predictions, compute live metrics; report, emit an event when the
    champion has degraded, and decide a shadow challenger on its live evidence."""
    now = utc_now()
    champion, shadow = registry.champion(config.name), registry.shadow(config.name)
    files = ingest_labels_task(config, champion, now)
    report = assess_task(config, champion, shadow, now)
    report.ingested = [{**f.counts(), "file": f.file, "reasons": f.reasons} for f in files]
    decided = decide_shadow_task(report)
    path = publish_task(report)
    print(f"performance check {config.name}: {report.degradation.detail}"
          + (f"; shadow {shadow}: {decided or 'waits'}" if shadow else ""))  # fmt: skip
    return PerformanceResult(dataset=config.name, champion=champion, shadow=shadow, labelled=report.labels,
                             judged=report.degradation.judged, degraded=report.degradation.degraded,
                             detail=report.degradation.detail, shadow_decision=report.shadow_decision,
                             label_files=report.ingested, report=str(path))  # fmt: skip
