"""The retrain flow: what the scheduled, new-data and drift deployments run.

`full` tunes again on every accepted batch (the training flow); `refresh` keeps boosting the champion on the
batches that arrived after its snapshot (the refresh flow). New data retrains only once enough new rows have been
accepted since the newest model's snapshot (`retrain.min_new_rows`); the deployment trigger's window
(`retrain.cooldown_s`) keeps a burst of files from starting more than one run. Degraded live performance retrains
once `retrain.min_new_rows` rows have arrived since the newest version (a challenger the gate rejected included:
the same rows would make the same model again), and not while a challenger waits in shadow for its live evidence.
"""

from __future__ import annotations

from typing import Literal

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from mlcycle.flows.training import refresh_flow, train_flow
from mlcycle.schemas import PipelineConfig
from mlcycle.tasks import registry
from mlcycle.tasks.ingest.store import DatasetStore, list_batches, load_snapshot
from mlcycle.tasks.registry.bundle import load_bundle

Cause = Literal["manual", "schedule", "new-data", "drift", "degradation"]


class RetrainResult(BaseModel):
    """What a retraining decided and produced (`tag` is None when it had nothing to do)."""

    dataset: str
    cause: str
    mode: str
    new_rows: int
    tag: str | None
    base: str | None
    reason: str


@task(name="count_new_rows", retries=2, cache_policy=NO_CACHE)
def new_rows_task(config: PipelineConfig) -> tuple[int, str | None]:
    """Accepted rows the newest model (champion, else newest version) has not been trained on, and its tag."""
    if not registry.versions(config.name):
        store = DatasetStore.for_dataset(config.name)
        return sum(b.rows_accepted for b in list_batches(store, status="accepted")), None
    base = load_bundle(config.name)
    store = DatasetStore.for_dataset(config.name)
    trained_on = set(load_snapshot(store, base.lineage["data_hash"]).batch_ids)
    fresh = [b for b in list_batches(store, status="accepted") if b.batch_id not in trained_on]
    return sum(b.rows_accepted for b in fresh), base.tag


@task(name="count_rows_since_newest", retries=2, cache_policy=NO_CACHE)
def rows_since_newest_task(config: PipelineConfig) -> tuple[int, str | None]:
    """Accepted rows the newest version of any status has not been trained on, and its tag."""
    newest = registry.versions(config.name)
    if not newest:
        return new_rows_task.fn(config)
    store = DatasetStore.for_dataset(config.name)
    trained_on = set(load_snapshot(store, load_bundle(newest[0].tag).lineage["data_hash"]).batch_ids)
    return sum(b.rows_accepted for b in list_batches(store, status="accepted") if b.batch_id not in trained_on), newest[
        0
    ].tag


def mode_for(config: PipelineConfig, cause: Cause, mode: str | None) -> str:
    if mode is not None:
        return mode
    return {"new-data": config.retrain.on_new_data, "drift": config.retrain.on_drift,
            "degradation": config.retrain.on_degradation}.get(cause, config.retrain.mode)  # fmt: skip


@flow(name="retrain", log_prints=True)
def retrain_flow(
    config: PipelineConfig,
    cause: Cause = "manual",
    mode: Literal["full", "refresh"] | None = None,
    event: str = "",
) -> RetrainResult:
    """Retrain the dataset's model: a full re-tune or an incremental refresh (default: the config's choice for
    the cause); on new data, only once `retrain.min_new_rows` rows have arrived since the newest model."""
    chosen = mode_for(config, cause, mode)
    new_rows, base = new_rows_task(config)
    tag, reason = None, ""
    pending = registry.shadow(config.name) if cause == "degradation" else None
    fresh, newest = rows_since_newest_task(config) if cause == "degradation" else (new_rows, base)
    if pending is not None:
        reason = f"{pending} is in shadow already, waiting for live evidence against the champion"
    elif cause == "degradation" and base is not None and fresh < config.retrain.min_new_rows:
        reason = f"{fresh} new rows since {newest}, fewer than retrain.min_new_rows={config.retrain.min_new_rows}"
    elif cause == "new-data" and base is not None and new_rows < config.retrain.min_new_rows:
        reason = f"{new_rows} new rows since {base}, fewer than retrain.min_new_rows={config.retrain.min_new_rows}"
    elif chosen == "refresh" and base is not None:
        refreshed = refresh_flow(config, base)
        tag = refreshed.tag if refreshed else None
        reason = "refreshed" if refreshed else f"nothing new since {base}'s snapshot"
    else:
        reason = "retrained" if chosen == "full" else "no model yet: full training instead of a refresh"
        chosen, tag = "full", train_flow(config).tag
    result = RetrainResult(dataset=config.name, cause=cause, mode=chosen, new_rows=new_rows, tag=tag, base=base,
                           reason=reason)  # fmt: skip
    create_markdown_artifact(
        key=f"retrain-{config.name}".replace("_", "-"),
        markdown=f"# Retraining {config.name}\n\n| cause | event | mode | new rows | from | new model | note |\n"
        f"|---|---|---|---:|---|---|---|\n| {cause} | {event or '-'} | {chosen} | {new_rows} | {base or '-'} | "
        f"{tag or '-'} | {result.reason} |",
        description=f"Why {config.name} was retrained, and into what",
    )
    print(f"retrain {config.name} ({cause}, {chosen}): {result.reason}; new model {tag or 'none'}")
    return result
