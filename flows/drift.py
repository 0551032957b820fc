"""The drift-check flow: recent batches and served requests against the champion's training data.

It publishes a drift report (a table and a markdown summary) as Prefect artifacts and emits
`mlcycle.drift.detected` on `mlcycle.dataset.<name>` when a feature or the predictions cross the threshold.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from mlcycle.flows.models import emit_dataset_event
from mlcycle.schemas import PipelineConfig
from mlcycle.tasks import registry
from mlcycle.tasks.ingest.store import (
    ROW_COLUMN,
    DatasetStore,
    list_batches,
    load_snapshot,
    read_curated_batch,
    read_snapshot,
)
from mlcycle.tasks.monitor.drift import REQUEST_COLUMNS, FeatureDrift, feature_drift, prediction_drift, read_request_log
from mlcycle.tasks.paths import mlcycle_home
from mlcycle.tasks.registry.bundle import ModelBundle, load_bundle
from mlcycle.tasks.train.prepare import feature_columns

_pure = {"cache_policy": NO_CACHE}


class DriftRow(BaseModel):
    source: str
    feature: str
    kind: str
    psi: float
    drifted: bool
    detail: str


class DriftResult(BaseModel):
    """What the check compared and what it found; `detected` is what the event reports."""

    dataset: str
    champion: str | None
    reference_rows: int
    recent_rows: dict[str, int]
    rows: list[DriftRow]
    detected: bool
    drifted: list[str]
    notes: list[str]


@task(name="load_champion", retries=2, **_pure)
def load_champion_task(name: str) -> ModelBundle:
    return load_bundle(name)


@task(name="read_reference", retries=2, **_pure)
def read_reference_task(config: PipelineConfig, bundle: ModelBundle) -> tuple[pd.DataFrame, set[str]]:
    """The champion's training snapshot (seeded sample) and the ids of the batches in it."""
    store = DatasetStore.for_dataset(config.name)
    snapshot = load_snapshot(store, bundle.lineage["data_hash"])
    frame = read_snapshot(store, snapshot).frame
    if len(frame) > config.drift.reference_rows:
        frame = frame.sample(n=config.drift.reference_rows, random_state=config.seed).reset_index(drop=True)
    return frame, set(snapshot.batch_ids)


@task(name="read_recent_batches", retries=2, **_pure)
def read_recent_task(config: PipelineConfig, trained_on: set[str]) -> tuple[pd.DataFrame, list[str]]:
    """The newest accepted batches the champion has not been trained on."""
    store = DatasetStore.for_dataset(config.name)
    new = [b.batch_id for b in list_batches(store, status="accepted") if b.batch_id not in trained_on]
    chosen = new[-config.drift.recent_batches :]
    frames = [read_curated_batch(store, i).drop(columns=ROW_COLUMN) for i in chosen]
    return (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()), chosen


@task(name="read_request_log", retries=2, **_pure)
def read_requests_task(config: PipelineConfig) -> pd.DataFrame:
    since = pd.Timestamp(datetime.now(UTC) - timedelta(hours=config.drift.request_window_h))
    return read_request_log(mlcycle_home() / "requests" / config.name, since)


@task(name="measure_drift", **_pure)
def measure_task(config: PipelineConfig, bundle: ModelBundle, reference: pd.DataFrame, recent: pd.DataFrame,
                 source: str) -> list[DriftRow]:  # fmt: skip
    """PSI per raw feature and of the champion's predictions, for one recent source."""
    features = [c for c in feature_columns(list(reference.columns), config) if c in reference.columns]
    found: list[FeatureDrift] = feature_drift(reference, recent, features, config.drift.bins)
    recent_features = recent.drop(columns=[c for c in REQUEST_COLUMNS if c in recent.columns])
    found.append(prediction_drift(bundle.predict_raw(reference), bundle.predict_raw(recent_features),
                                  config.drift.bins, bundle.classes))  # fmt: skip
    return [
        DriftRow(
            source=source,
            feature=d.feature,
            kind=d.kind,
            psi=round(d.psi, 4),
            detail=d.detail,
            drifted=d.drifted(
                config.drift.prediction_psi_threshold if d.kind == "prediction" else config.drift.psi_threshold
            ),
        )  # fmt: skip
        for d in found
    ]


@task(name="publish_drift", **_pure)
def publish_task(result: DriftResult, config: PipelineConfig) -> None:
    """The drift report as artifacts, and `mlcycle.drift.detected` when something crossed the threshold."""
    key = f"drift-{config.name}".replace("_", "-")
    rows = sorted(result.rows, key=lambda r: -r.psi)
    create_table_artifact(key=key, table=[r.model_dump() for r in rows],
                          description=f"PSI per feature against {result.champion}'s training data")  # fmt: skip
    create_markdown_artifact(key=f"{key}-summary", markdown=drift_markdown(result, config),
                             description="Drift check")  # fmt: skip
    if result.detected:
        emit_dataset_event(
            "mlcycle.drift.detected",
            config.name,
            result.champion,
            {
                "champion": result.champion,
                "drifted": result.drifted,
                "recent_rows": result.recent_rows,
                "max_psi": max(r.psi for r in result.rows if r.drifted),
            },
        )


def drift_markdown(result: DriftResult, config: PipelineConfig) -> str:
    verdict = f"**drift detected**: {', '.join(result.drifted)}" if result.detected else "no drift over the thresholds"
    lines = [
        f"# Drift check: {result.dataset}",
        f"Champion {result.champion}, reference {result.reference_rows} rows of its training snapshot; recent "
        f"{result.recent_rows}. Thresholds: PSI {config.drift.psi_threshold} per feature, "
        f"{config.drift.prediction_psi_threshold} for predictions.",
        "",
        verdict,
        "",
        "| source | feature | kind | PSI | drifted | moved most |",
        "|---|---|---|---:|---|---|",
    ]
    for r in sorted(result.rows, key=lambda r: -r.psi):
        lines.append(
            f"| {r.source} | {r.feature} | {r.kind} | {r.psi:.4f} | {'yes' if r.drifted else ''} | {r.detail} |"
        )
    lines += [f"- {note}" for note in result.notes]
    return "\n".join(lines)


@flow(name="drift-check", log_prints=True)
def drift_flow(config: PipelineConfig) -> DriftResult:
    """Compare recent curated batches and served requests with the champion's training data; report, and emit an
    event when the data has drifted."""
    if not registry.versions(config.name):
        print(f"drift check {config.name}: no model yet, nothing to compare against")
        return DriftResult(dataset=config.name, champion=None, reference_rows=0, recent_rows={}, rows=[],
                           detected=False, drifted=[], notes=["no model yet"])  # fmt: skip
    bundle = load_champion_task(config.name)
    reference, trained_on = read_reference_task(config, bundle)
    batches, batch_ids = read_recent_task(config, trained_on)
    requests = read_requests_task(config)
    rows, notes, recent_rows = [], [], {}
    for source, recent in (("batches", batches), ("requests", requests)):
        recent_rows[source] = len(recent)
        if len(recent) < config.drift.min_rows:
            notes.append(f"{source}: {len(recent)} recent rows, fewer than drift.min_rows={config.drift.min_rows}: "
                         "not judged")  # fmt: skip
            continue
        rows += measure_task(config, bundle, reference, recent, source)
    if batch_ids:
        notes.append(f"batches compared: {', '.join(batch_ids)}")
    drifted = sorted({f"{r.source}:{r.feature}" for r in rows if r.drifted})
    result = DriftResult(dataset=config.name, champion=bundle.tag, reference_rows=len(reference),
                         recent_rows=recent_rows, rows=rows, detected=bool(drifted), drifted=drifted,
                         notes=notes)  # fmt: skip
    publish_task(result, config)
    top = max(rows, key=lambda r: r.psi, default=None)
    print(f"drift check {config.name} against {bundle.tag}: "
          + (f"DRIFT in {', '.join(drifted)}" if drifted else "no drift")
          + (f"; largest PSI {top.psi:.3f} ({top.source}:{top.feature})" if top else ""))  # fmt: skip
    for note in notes:
        print(note)
    return result
