"""Integration fixtures: a real training flow run, once per session, and a real `bentoml serve` of its model."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from mlcycle.schemas import load_config
from tests.conftest import ROOT

SMALL_RUN = {"source.sample_rows": 1500, "tune.num_samples": 2, "tune.max_rounds": 60, "tune.report_every": 5,
             "tune.grace_progress": 1, "tune.early_stopping_rounds": 10, "tune.searcher": "random",
             "gate.bootstrap_samples": 200, "gate.latency_p99_ms": 1e6,  # tests never depend on wall time
             "tune.time_budget_s": None}  # fmt: skip


def run_training(dataset: str):  # type: ignore[no-untyped-def]
    from mlcycle.flows.training import train_flow

    config = load_config(ROOT / "configs" / f"{dataset}.yaml", SMALL_RUN)
    return config, train_flow(config)


@pytest.fixture(scope="session")
def adult_run(prefect_server: None, local_ray: None):  # type: ignore[no-untyped-def]
    """The real training flow under Prefect, on a 1,500-row sample per Adult file, with a two-trial search."""
    return run_training("adult")


@pytest.fixture(scope="session")
def bike_run(prefect_server: None, local_ray: None):  # type: ignore[no-untyped-def]
    """The real training flow on Bike Sharing (regression, time split), same small settings."""
    return run_training("bike")


@pytest.fixture(scope="session")
def served_adult(adult_run) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A real `bentoml serve` subprocess on loopback, serving the model the flow just trained."""
    from mlcycle.tasks.registry.smoke import ServeError, serving_model

    _, result = adult_run
    try:
        with serving_model(result.tag, timeout_s=120) as url:
            yield url
    except ServeError as exc:
        pytest.fail(str(exc))


def port_free(port: int) -> bool:
    """Whether a restarted server could listen on `port` (as uvicorn does, with SO_REUSEADDR)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
