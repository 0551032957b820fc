"""Model lifecycle wiring: the gate at the end of training and rollback (what the `mlcycle models` commands show is
in `flows.model_views`, which imports none of this).

The work itself lives in `tasks.registry.gate`, `tasks.registry.smoke`, `tasks.registry`, `tasks.registry.export` and `tasks.registry.reproduce`.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np
import pandas as pd
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from pydantic import BaseModel

from mlcycle.flows.model_views import GATE_FILE, bundle_folder
from mlcycle.schemas.config import PipelineConfig, TrackingConfig
from mlcycle.tasks import registry, tracking
from mlcycle.tasks.errors import UserError
from mlcycle.tasks.registry.gate import GateRecord, gate_challenger

log = logging.getLogger("mlcycle.tracking")


class RollbackError(UserError, RuntimeError):
    """A rollback that cannot be done: no earlier champion, an unknown tag, or a target that fails its smoke test."""


@task(name="gate_challenger", cache_policy=NO_CACHE)
def gate_task(tag: str, test: pd.DataFrame, y_test: np.ndarray, trivial: np.ndarray,
              config: PipelineConfig) -> GateRecord:  # fmt: skip
    """Judge the new model against the current champion on the new model's test rows."""
    return gate_challenger(tag, test, y_test, trivial, config.gate, registry.champion(config.name),
                           config.feedback.shadow.live_gate)  # fmt: skip


@task(name="record_decision", cache_policy=NO_CACHE)
def record_decision_task(record: GateRecord) -> GateRecord:
    """Make the decision real: promote or reject in the registry, keep the record with the model, publish it."""
    run_id = str(flow_run.id) if flow_run.id else None
    evidence = record.as_dict()
    (bundle_folder(record.tag) / GATE_FILE).write_text(json.dumps(evidence, indent=2, sort_keys=True, default=str))
    if record.promoted:
        registry.promote(record.tag, reason=record.summary(), evidence=evidence, flow_run_id=run_id)
    elif record.decision == "shadow":  # live evidence decides: the performance check promotes or rejects it
        registry.put_in_shadow(record.tag, reason=record.summary(), evidence=evidence, flow_run_id=run_id)
    else:
        registry.reject(record.tag, reason=record.summary(), evidence=evidence, flow_run_id=run_id)
    name = record.tag.partition(":")[0]
    key = "gate-" + "".join(c if c.isalnum() else "-" for c in name.lower())
    create_markdown_artifact(key=key, markdown=record.markdown(), description=f"Gate decision for {record.tag}")
    create_table_artifact(
        key=f"{key}-checks",
        table=[{"rule": c.rule, "passed": c.passed, "detail": c.detail} for c in record.checks],
        description=f"Gate rules for {record.tag}",
    )
    if record.promoted:
        emit_promoted(name, record.tag, record.champion, "promote", record.summary())
    print(record.markdown())
    return record


def emit_promoted(name: str, tag: str, previous: str | None, action: str, reason: str) -> None:
    """`mlcycle.model.promoted` on `mlcycle.model.<name>`: what deployments can react to."""
    from prefect.events import emit_event

    emit_event(
        event="mlcycle.model.promoted",
        resource={"prefect.resource.id": f"mlcycle.model.{name}", "prefect.resource.name": name},
        payload={"tag": tag, "previous": previous, "action": action, "reason": reason},
    )


def emit_dataset_event(event: str, dataset: str, champion: str | None, payload: dict[str, Any]) -> None:
    """An event on `mlcycle.dataset.<dataset>`, its champion related, for the retraining triggers to react to."""
    from prefect.events import emit_event

    emit_event(
        event=event,
        resource={"prefect.resource.id": f"mlcycle.dataset.{dataset}"},
        related=[
            {
                "prefect.resource.id": f"mlcycle.model.{dataset}",
                "prefect.resource.role": "champion",
                "mlcycle.tag": champion or "",
            }
        ],  # fmt: skip
        payload=payload,
    )


class RollbackResult(BaseModel):
    name: str
    from_tag: str | None
    to_tag: str
    reason: str
    actor: str | None
    at: str
    smoke: str


def rollback_target(name: str, to: str | None) -> str:
    """The version to go back to: `to` (a full tag or the part after the colon), else the previous champion."""
    if to:
        tag = to if ":" in to else f"{name}:{to}"
        if tag.partition(":")[0] != name:
            raise RollbackError(f"{tag} is not a version of {name}")
        try:
            registry.version(tag)
        except registry.RegistryError as exc:
            raise RollbackError(str(exc)) from None
        return tag
    current = registry.champion(name)
    if current is None:
        raise RollbackError(f"{name} has no champion yet: nothing to roll back from")
    for event in reversed(registry.history(name)):
        if event.action in ("promote", "rollback") and event.to_tag == current and event.from_tag:
            return event.from_tag
    raise RollbackError(f"{name}: {current} is the only champion it ever had; name a version with --to")


@task(name="smoke_test_target", cache_policy=NO_CACHE)
def smoke_target_task(tag: str) -> dict[str, Any]:
    from mlcycle.tasks.registry.bundle import IntegrityError, load_bundle
    from mlcycle.tasks.registry.smoke import bundle_golden_records, smoke_test

    try:
        bundle = load_bundle(tag)
    except IntegrityError as exc:
        raise RollbackError(f"{tag} failed its integrity check, the champion is unchanged: {exc}") from None
    result = smoke_test(tag, bundle_golden_records(bundle))
    if not result.passed:
        raise RollbackError(f"{tag} failed its smoke test, the champion is unchanged: {result.detail}")
    return result.as_dict()


@flow(name="rollback", log_prints=True)
def rollback_flow(name: str, to: str | None = None, reason: str = "manual rollback") -> RollbackResult:
    """Make an earlier version champion again, after checking that it loads and answers the golden requests."""
    target = rollback_target(name, to)
    current = registry.champion(name)
    if target == current:
        raise RollbackError(f"{target} is already the champion of {name}")
    smoke = smoke_target_task(target)
    event = registry.promote(target, reason=reason, action="rollback", flow_run_id=str(flow_run.id or "") or None,
                             evidence={"smoke": smoke, "rolled_back_from": current})  # fmt: skip
    emit_promoted(name, target, current, "rollback", reason)
    mirror_champion_task(name, target, "rollback")
    print(f"{name}: champion {current} → {target} by {event.actor} at {event.at}: {reason}")
    return RollbackResult(name=name, from_tag=event.from_tag, to_tag=target, reason=reason, actor=event.actor,
                          at=event.at, smoke=smoke["detail"])  # fmt: skip


def flow_run_info() -> tracking.FlowRunInfo:
    """The current Prefect flow run for the MLflow mirror: id, name, link to its page, and when it began."""
    from prefect.context import FlowRunContext
    from prefect.settings import PREFECT_UI_URL

    context = FlowRunContext.get()
    run = context.flow_run if context else None
    if run is None:
        return tracking.FlowRunInfo(None, None, None, None)
    ui = PREFECT_UI_URL.value()
    state = run.state  # during the flow's body: the Running state, stamped when the run began
    started = state.timestamp if state is not None and state.is_running() else None
    return tracking.FlowRunInfo(id=str(run.id), name=run.name, url=f"{ui}/runs/flow-run/{run.id}" if ui else None,
                                started_ms=int(started.timestamp() * 1000) if started else None)  # fmt: skip


@task(name="mirror_champion", cache_policy=NO_CACHE)
def mirror_champion_task(name: str, tag: str, action: str) -> str:
    """Move MLflow's `champion` alias as mlcycle's registry moved, where the name's versions are mirrored."""
    settings = TrackingConfig()
    try:
        return tracking.mirror(tracking.champion_record(name, tag, action), settings.timeout_s, settings.budget_s)
    except Exception as exc:  # the mirror never fails what it mirrors
        log.warning("tracking: %s's %s not mirrored: %s", name, action, exc)
        return f"not mirrored: {exc}"
