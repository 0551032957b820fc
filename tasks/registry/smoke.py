"""The serving smoke test: start the real `bentoml serve` with one model, send golden requests, compare the answers
with the model's offline predictions, stop it. The gate, rollback and the integration tests all start the service
through `serving_model`, so there is one way to launch it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from mlcycle.schemas.config import PipelineConfig
    from mlcycle.tasks.registry.bundle import ModelBundle

EXAMPLES = Path(str(resources.files("mlcycle.serving") / "examples"))


_STARTUP_FAILED = "Application startup failed"
# Smoke tests send golden rows, not traffic: they must not land in the request log the drift check reads.
NO_REQUEST_LOG = {"MLCYCLE_SERVING": json.dumps({"request_log": {"enabled": False}})}


class ServeError(RuntimeError):
    """The service did not start, or stopped, or did not become ready in time; carries its output."""


def free_port() -> int:
    """A port nobody listens on now, on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serving_model(tag: str | None, timeout_s: float = 120.0, *, target: str = "mlcycle.serving.service:MLCycleService",
                  cwd: Path | None = None, env: dict[str, str] | None = None) -> Iterator[str]:  # fmt: skip
    """`bentoml serve` of one model on a free loopback port; yields its base URL, stops it (and its workers) after.

    `tag` None serves what `target` pins (a built Bento) or the service's default; `env` adds variables (for example
    `MLCYCLE_SERVING` to switch the request log off, so smoke tests do not feed the drift check).
    """
    import httpx

    port = free_port()
    inherited = {k: v for k, v in os.environ.items() if k != "MLCYCLE_MODEL_TAG"}
    env = {**inherited, **({"MLCYCLE_MODEL_TAG": tag} if tag else {}), **(env or {})}
    # Keep-alive above the clients' own: uvicorn's 5 s default resets a few reused connections under load.
    cmd = [sys.executable, "-m", "bentoml", "serve", target, "--host", "127.0.0.1", "--port", str(port),
           "--timeout-keep-alive", "75"]  # fmt: skip
    # Output goes to a file, not a pipe: a chatty server must never block on a pipe nobody reads.
    with tempfile.TemporaryFile("w+") as output:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=output, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)  # fmt: skip
        url = f"http://127.0.0.1:{port}"

        def tail() -> str:
            output.seek(0)
            return output.read()[-6000:]

        try:
            deadline = time.monotonic() + timeout_s
            while True:
                if proc.poll() is not None:
                    raise ServeError(f"bentoml serve of {tag} exited with code {proc.returncode}:\n{tail()}")
                # BentoML's arbiter outlives a worker whose startup failed and keeps restarting it: fail now.
                if _STARTUP_FAILED in tail():
                    raise ServeError(f"bentoml serve of {tag} could not start the service:\n{tail()}")
                try:
                    if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise ServeError(f"bentoml serve of {tag} was not ready within {timeout_s:.0f} s:\n{tail()}")
                time.sleep(0.5)
            yield url
        finally:
            _stop(proc)


def _stop(proc: subprocess.Popen[str]) -> None:
    """Terminate the server and its workers (BentoML starts each in a session of its own), killing what does not
    go within 30 s."""
    from mlcycle.tasks.processes import stop_tree

    if proc.poll() is None:
        stop_tree(proc.pid, 30)
    proc.wait(timeout=30)


def golden_records(config: PipelineConfig, fallback: pd.DataFrame | None = None, rows: int = 5) -> list[dict[str, Any]]:
    """A built-in demo's golden requests (`serving/examples/<name>.json`), else the first rows of `fallback`. A
    project's dataset that happens to share a demo's name has its own schema: the demo's requests are not its."""
    path = EXAMPLES / f"{config.name}.json"
    if path.exists() and config.features_schema_ref.startswith(f"mlcycle.schemas.{config.name}:"):
        return list(json.loads(path.read_text()))
    if fallback is None or fallback.empty:
        raise FileNotFoundError(f"no golden requests for {config.name} ({path.name} is the demo's), and no holdout "
                                "rows to take them from")  # fmt: skip
    return list(json.loads(fallback.head(rows).to_json(orient="records", date_format="iso")))


def bundle_golden_records(bundle: ModelBundle) -> list[dict[str, Any]]:
    """A registered model's golden requests: the demo's, else the first rows of its test split, rebuilt from the
    snapshot it was trained on."""
    try:
        return golden_records(bundle.config)
    except FileNotFoundError:
        from mlcycle.tasks.registry.reproduce import rebuild_splits

        fields = list(bundle.features_schema.to_schema().columns)
        return golden_records(bundle.config, rebuild_splits(bundle).test[fields])


@dataclass
class SmokeResult:
    """What the served model answered to the golden requests against the same model offline."""

    tag: str
    passed: bool
    detail: str
    records: int = 0
    max_abs_diff: float | None = None
    served_model: str | None = None
    seconds: float = 0.0
    offline: list[dict[str, Any]] = field(default_factory=list)
    served: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def offline_answers(tag: str, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The predictions the service should give for the records: the bundle's own path, validated like a request."""
    from mlcycle.tasks.records import check_records
    from mlcycle.tasks.registry.bundle import load_bundle

    bundle = load_bundle(tag)
    schema = bundle.features_schema
    frame, errors = check_records(records, schema, max(len(records), 1))
    if frame is None:
        raise ValueError(f"golden records do not validate for {tag}: {[e.as_dict() for e in errors][:5]}")
    return bundle.predict_records(frame)[0]


def smoke_test(tag: str, records: list[dict[str, Any]], tolerance: float = 1e-6,
               timeout_s: float = 120.0) -> SmokeResult:  # fmt: skip
    """Serve `tag` for real, POST the golden records and compare each answer with the offline prediction."""
    import httpx

    started = time.monotonic()
    try:
        expected = offline_answers(tag, records)
    except Exception as exc:  # any failure to predict offline fails the smoke test with its reason
        return SmokeResult(tag, False, f"offline prediction failed: {type(exc).__name__}: {exc}")
    try:
        with serving_model(tag, timeout_s, env=NO_REQUEST_LOG) as url:
            response = httpx.post(f"{url}/predict", json={"records": records}, timeout=60)
    except ServeError as exc:
        return SmokeResult(tag, False, str(exc), len(records), seconds=time.monotonic() - started, offline=expected)
    seconds = time.monotonic() - started
    if response.status_code != 200:
        return SmokeResult(tag, False, f"POST /predict answered {response.status_code}: {response.text[:500]}",
                           len(records), seconds=seconds, offline=expected)  # fmt: skip
    body = response.json()
    served = list(body.get("predictions", []))
    result = SmokeResult(tag, False, "", len(records), served_model=body.get("model"), seconds=seconds,
                         offline=expected, served=served)  # fmt: skip
    if body.get("model") != tag:
        result.detail = f"the service answered as {body.get('model')!r}, not {tag!r}"
        return result
    if len(served) != len(expected):
        result.detail = f"{len(served)} predictions for {len(expected)} golden records"
        return result
    diffs = []
    for index, (got, want) in enumerate(zip(served, expected, strict=True)):
        if got.get("label") != want.get("label"):
            result.detail = f"record {index}: label {got.get('label')!r}, offline {want.get('label')!r}"
            return result
        if "probabilities" in want:  # multiclass: every class's probability, by class name
            served_classes = got.get("probabilities") or {}
            if sorted(served_classes) != sorted(want["probabilities"]):
                result.detail = (
                    f"record {index}: classes {sorted(served_classes)}, offline {sorted(want['probabilities'])}"
                )
                return result
            diffs.append(max(abs(float(served_classes[c]) - float(p)) for c, p in want["probabilities"].items()))
            continue
        key = "probability" if "probability" in want else "value"
        diffs.append(abs(float(got[key]) - float(want[key])))
    result.max_abs_diff = max(diffs)
    result.passed = result.max_abs_diff <= tolerance
    result.detail = (f"{len(records)} golden records answered by the real service; max |served - offline| = "
                     f"{result.max_abs_diff:.3g} (tolerance {tolerance:g})")  # fmt: skip
    return result
