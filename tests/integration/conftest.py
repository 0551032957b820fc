"""Integration fixtures: a real training flow run, once per session, and a real `bentoml serve` of its model."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from schemas import load_config
from tests.conftest import ROOT

SMALL_RUN = {"source.sample_rows": 1500, "tune.num_samples": 2, "tune.max_rounds": 60, "tune.report_every": 5,
             "tune.grace_period": 10, "tune.early_stopping_rounds": 10, "tune.searcher": "random",
             "tune.time_budget_s": None}  # fmt: skip


def run_training(dataset: str):  # type: ignore[no-untyped-def]
    from flows.training import train_flow

    config = load_config(ROOT / "configs" / f"{dataset}.yaml", SMALL_RUN)
    return config, train_flow(config)


@pytest.fixture(scope="session")
def adult_run(prefect_server: None, local_ray: None):  # type: ignore[no-untyped-def]
    """The real training flow under Prefect, on a 1,500-row sample per Adult file, with a two-trial search."""
    return run_training("adult")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def served_adult(adult_run) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A real `bentoml serve` subprocess on loopback, serving the model the flow just trained."""
    _, result = adult_run
    port = _free_port()
    env = {**os.environ, "MLCYCLE_MODEL_TAG": result.tag}
    cmd = [sys.executable, "-m", "bentoml", "serve", "serving.service:MLCycleService",
           "--host", "127.0.0.1", "--port", str(port), "--timeout-keep-alive", "75"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(
                    f"bentoml serve exited with {proc.returncode}:\n{proc.stdout.read() if proc.stdout else ''}"
                )
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail("bentoml serve was not ready within 120 s")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
