"""The mirror to MLflow: what a run or a change of champion sends to an MLflow server, and the queue it waits in.

mlcycle's registry and evidence (the bundle's metrics and lineage, the report, `trials.json`) stay the source of
truth; MLflow gets a copy so teams can compare runs where they already look. A flow writes a small record into a
durable queue under `$MLCYCLE_HOME/tracking/queue/` and then tries to push the queue with a short timeout: an
unreachable or slow server leaves the record there and is a warning, never a failed run. `mlcycle tracking sync`
replays the queue later. A push reads the evidence the record names, so a replay sends what mlcycle recorded,
and it is idempotent: runs and model versions are found by mlcycle's keys before anything is created.

Nothing here imports mlflow: only `push_pending`, through `tasks.tracking.mlflow_mirror`, does, and only when there is
something to push.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlcycle.schemas.config import PipelineConfig
from mlcycle.tasks.paths import mlcycle_home
from mlcycle.tasks.secrets import resolve_secrets, scrub

log = logging.getLogger("mlcycle.tracking")

ENV_URI = "MLFLOW_TRACKING_URI"
OFF = "tracking off"  # what `mirror` says when no server is configured


def tracking_uri(config: PipelineConfig) -> str | None:
    """Where this config's runs are mirrored: `tracking.mlflow_uri`, else `MLFLOW_TRACKING_URI`, else nowhere.

    As written, secret references included (`${MLFLOW_URI}`): this is what queued records keep and messages show;
    `_mirror` and `probe` resolve it when they connect. The variable is named, not copied, for the same reason."""
    if config.tracking.mlflow_uri:
        return config.tracking.mlflow_uri
    return f"${{{ENV_URI}}}" if os.environ.get(ENV_URI) else None


def experiment_of(config: PipelineConfig) -> str:
    return config.tracking.experiment or f"mlcycle-{config.name}"


def tracking_dir() -> Path:
    return mlcycle_home() / "tracking"


def queue_dir() -> Path:
    return tracking_dir() / "queue"


def failed_dir() -> Path:
    return tracking_dir() / "failed"


def _targets_file() -> Path:
    return tracking_dir() / "targets.json"


@dataclass(frozen=True)
class FlowRunInfo:
    """The Prefect flow run a record comes from, for the MLflow run's name, link and times."""

    id: str | None
    name: str | None
    url: str | None
    started_ms: int | None


def run_record(config: PipelineConfig, flow: str, tag: str, report: Path | None, flow_run: FlowRunInfo,
               decision: str, reasons: list[str]) -> dict[str, Any] | None:  # fmt: skip
    """The record of one training or refresh run and the model version it saved; None when tracking is off."""
    uri = tracking_uri(config)
    if uri is None:
        return None
    return {
        "kind": "run",
        "uri": uri,
        "experiment": experiment_of(config),
        "name": config.name,
        "flow": flow,
        # one MLflow run per flow run: the flow run's id is the key a replay finds it by
        "key": flow_run.id or f"local-{uuid.uuid4().hex}",
        "tag": tag,
        "report": str(report) if report else None,
        "flow_run": {"id": flow_run.id, "name": flow_run.name, "url": flow_run.url},
        "started_ms": flow_run.started_ms or int(time.time() * 1000),
        "ended_ms": int(time.time() * 1000),
        "decision": decision,
        "reasons": reasons,
    }


def champion_record(name: str, tag: str, action: str) -> dict[str, Any] | None:
    """The record of a change of champion, for wherever the name's versions were mirrored; None if nowhere."""
    target = _targets().get(name)
    if target is None:
        return None
    return {"kind": "champion", "uri": target["uri"], "experiment": target["experiment"], "name": name, "tag": tag,
            "action": action, "key": f"{action}-{tag}-{time.time_ns()}"}  # fmt: skip


def _targets() -> dict[str, dict[str, str]]:
    path = _targets_file()
    return json.loads(path.read_text()) if path.exists() else {}


def enqueue(record: dict[str, Any]) -> Path:
    """Write a record to the queue (atomically: a reader sees all of it or nothing); it stays until pushed."""
    folder = queue_dir()
    folder.mkdir(parents=True, exist_ok=True)
    if record["kind"] == "run":
        targets = _targets()
        targets[record["name"]] = {"uri": record["uri"], "experiment": record["experiment"]}
        _write_json(_targets_file(), targets)
    # the time first: the queue is replayed in the order things happened
    path = folder / f"{time.time_ns():020d}-{record['kind']}-{record['name']}.json"
    _write_json(path, record)
    return path


def _write_json(path: Path, payload: Any) -> None:
    staged = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    staged.write_text(json.dumps(payload, indent=1, sort_keys=True, default=str))
    staged.replace(path)


def pending() -> list[Path]:
    """Queued records, oldest first."""
    folder = queue_dir()
    return sorted(folder.glob("*.json")) if folder.exists() else []


@dataclass
class PushOutcome:
    """What a push did: records pushed, still queued (per unreachable server, why) and set aside as failing."""

    pushed: int = 0
    servers: set[str] = field(default_factory=set)
    queued: int = 0
    failed: list[str] = field(default_factory=list)
    unreachable: dict[str, str] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return self.queued == 0 and not self.failed

    def summary(self) -> str:
        parts = [
            f"{self.pushed} record(s) pushed to MLflow"
            + (f" at {', '.join(sorted(self.servers))}" if self.servers else "")
        ]
        for uri, why in self.unreachable.items():
            parts.append(f"MLflow server {uri} not reached ({why})")
        if self.queued:
            parts.append(f"{self.queued} record(s) queued in {queue_dir()}: `mlcycle tracking sync` pushes them")
        parts += [f"set aside in {failed_dir()}: {line}" for line in self.failed]
        return "; ".join(parts)


class Transient(Exception):
    """The server did not answer in time, or not at all: the record stays queued."""


def push_pending(timeout_s: float, budget_s: float, uri: str | None = None, patient: bool = False) -> PushOutcome:
    """Push queued records, oldest first, each to its own server (or to `uri`).

    A server that cannot be reached keeps its records queued; a record the server refuses, or whose evidence is
    gone, moves to `failed/` with the reason. `patient` (sync) keeps MLflow's own retries; a flow does not wait
    for them. One pusher at a time: a second waits for the first, at most `timeout_s`.
    """
    outcome = PushOutcome()
    records = pending()
    if not records:
        return outcome
    with _exclusive(timeout_s if not patient else None) as held:
        if not held:
            outcome.queued = len(pending())
            outcome.unreachable["(queue)"] = "another process is pushing the queue"
            return outcome
        deadline = time.monotonic() + budget_s
        mirrors: dict[str, Any] = {}
        for path in pending():  # again: another pusher may have emptied it while this one waited
            try:
                record = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                _set_aside(path, None, f"unreadable record: {exc}", outcome)
                continue
            target = uri or record["uri"]
            if target in outcome.unreachable or time.monotonic() > deadline:
                outcome.queued += 1
                continue
            try:
                if target not in mirrors:
                    probe(target, timeout_s)
                    mirrors[target] = _mirror(target, None if patient else timeout_s)
                why = mirrors[target].push(record, deadline)
                if why is not None:
                    raise Transient(why)
            except Transient as exc:
                outcome.unreachable[target] = scrub(str(exc), target, "tracking.mlflow_uri")
                outcome.queued += 1
                continue
            except Exception as exc:  # the server refused it, or the evidence it names is gone
                why = scrub(f"{type(exc).__name__}: {exc}", target, "tracking.mlflow_uri")
                _set_aside(path, record, why, outcome)
                continue
            path.unlink()
            outcome.pushed += 1
            outcome.servers.add(target)
    return outcome


def _mirror(uri: str, timeout_s: float | None) -> Any:
    # mlflow reads DO_NOT_TRACK only as "true", not the "1" mlcycle sets (entry points set this too)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # nor two lines on stdout and one more request for every run it ends (a search's trials are hundreds)
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    try:
        from mlcycle.tasks.tracking.mlflow_mirror import Mirror
    except ImportError as exc:  # the records wait for the package as they would for the server
        raise Transient(f"{exc}; install the extra: pip install -e '.[mlflow]'") from None
    return Mirror(resolve_secrets(uri, "tracking.mlflow_uri"), timeout_s)


def probe(uri: str, timeout_s: float) -> None:
    """A quick look at an HTTP server's health page before mlflow is even imported; raises `Transient`."""
    uri = resolve_secrets(uri, "tracking.mlflow_uri")
    if not uri.startswith(("http://", "https://")):
        return  # a local store (file:, sqlite:) has no server to be down
    import httpx

    try:
        response = httpx.get(uri.rstrip("/") + "/health", timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise Transient(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from None
    if response.status_code >= 500:
        raise Transient(f"health check answered {response.status_code}")


def _set_aside(path: Path, record: dict[str, Any] | None, reason: str, outcome: PushOutcome) -> None:
    folder = failed_dir()
    folder.mkdir(parents=True, exist_ok=True)
    _write_json(folder / path.name, {"reason": reason, "record": record})
    path.unlink()
    outcome.failed.append(f"{path.name}: {reason}")
    log.warning("tracking: %s set aside: %s", path.name, reason)


@contextlib.contextmanager
def _exclusive(wait_s: float | None) -> Iterator[bool]:
    """An advisory lock on the queue; yields whether it was had within `wait_s` (None: wait for it)."""
    folder = tracking_dir()
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a") as handle:
        give_up = None if wait_s is None else time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | (fcntl.LOCK_NB if give_up is not None else 0))
                break
            except BlockingIOError:
                if give_up is not None and time.monotonic() >= give_up:
                    yield False
                    return
                time.sleep(0.2)
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def mirror(record: dict[str, Any] | None, timeout_s: float, budget_s: float) -> str:
    """Queue a record and push the queue; the outcome in one line, logged as a warning unless all went."""
    if record is None:
        return OFF
    enqueue(record)
    outcome = push_pending(timeout_s, budget_s)
    line = outcome.summary()
    if outcome.complete:
        log.info("tracking: %s", line)
    else:
        log.warning("tracking: %s", line)
    return line
