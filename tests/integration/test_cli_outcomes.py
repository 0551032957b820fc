"""What scripts and supervisors see of the real `mlcycle`: exit codes of training and ingest under the session's
Prefect server, a rejected batch's traceback kept in its Prefect run but not printed, and `mlcycle serve` leaving
nothing behind when it is told to stop."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest
import yaml

from mlcycle.flows import exits
from mlcycle.tasks import registry
from mlcycle.tasks.processes import stop_tree
from mlcycle.tasks.registry.smoke import free_port
from tests.conftest import ROOT
from tests.ingest_fixtures import HEADER, good_rows, tiny_config
from tests.integration.conftest import SMALL_RUN, port_free
from tests.service_models import save_small_model
from tests.test_cli import refused

pytestmark = pytest.mark.integration


def mlcycle(*args: str, timeout_s: float = 900) -> subprocess.CompletedProcess[str]:
    """`mlcycle ARGS` in a subprocess that talks to the session's Prefect server."""
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    return subprocess.run([sys.executable, "-c", "from mlcycle.flows.cli import main; main()", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout_s)  # fmt: skip


def test_a_rejected_batch_prints_one_error_and_its_run_keeps_the_traceback(
    prefect_server: None, tmp_path: Path
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName, LogFilter, LogFilterFlowRunId

    config = tiny_config(max_quarantine_rate=0.1).model_copy(update={"name": "cli-rejected"})
    config_file = tmp_path / "tiny.yaml"
    config_file.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    (tmp_path / "a.csv").write_text(HEADER + good_rows(2) + "3,pink,1\n")

    run = mlcycle("ingest", "--config", str(config_file), str(tmp_path / "a.csv"))
    refused(run, exits.FAILED, "a.csv: rejected: 1 of 3 rows quarantined (33%), above ingest.max_quarantine_rate 10%")
    assert f"| {tmp_path / 'a.csv'} | rejected |" in run.stdout and "cli-rejected: 1 rejected" in run.stdout

    with get_client(sync_client=True) as client:
        flow_runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["ingest"])))
        (flow_run,) = [r for r in flow_runs if r.parameters["config"]["name"] == "cli-rejected"]
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run.id])))
    assert flow_run.state is not None and flow_run.state.is_failed()
    assert any("Traceback" in log.message and "IngestRejected" in log.message for log in logs)


def test_training_exit_codes_tell_promoted_from_rejected(prefect_server: None) -> None:
    small = [arg for key, value in SMALL_RUN.items() for arg in ("--set", f"{key}={yaml.safe_dump(value).split()[0]}")]
    rejected = mlcycle("train", "--config", "configs/adult.yaml", *small, "--set", "name=cli-train-rejected",
                       "--set", "gate.latency_p99_ms=1e-9", "--json")  # fmt: skip
    assert rejected.returncode == exits.REJECTED, rejected.stderr[-3000:]
    result = json.loads(rejected.stdout)
    assert result["decision"] == "reject" and result["champion"] is None
    assert any(reason.startswith("latency:") for reason in result["gate_reasons"])
    assert registry.version(result["tag"]).status == "rejected"
    assert "Traceback" not in rejected.stderr

    promoted = mlcycle("train", "--config", "configs/adult.yaml", *small, "--set", "name=cli-train-promoted",
                       "--set", "gate.smoke_test=false")  # fmt: skip
    assert promoted.returncode == exits.OK, promoted.stderr[-3000:]
    champion = registry.champion("cli-train-promoted")
    assert champion is not None and f"{champion}: test roc_auc" in promoted.stdout
    assert "promoted: the champion now" in promoted.stdout
    # Ray starts before the flow (flows.cli), so its start-up overlaps Prefect's and its workers are ready sooner
    starting = promoted.stderr.find("Ray starting in the background (local)")
    assert 0 <= starting < promoted.stderr.find("Beginning flow run"), promoted.stderr[-3000:]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_stops_with_its_workers_on_a_signal(signum: int) -> None:
    """A supervisor's SIGTERM (or a Ctrl-C) to `mlcycle serve` stops the server and its workers and frees the port
    within 10 s, so a restart can bind it again."""
    name = "cli-signals"
    if registry.champion(name) is None:
        registry.promote(save_small_model("adult", rounds=5, name=name), reason="test: a champion to serve")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", "from mlcycle.flows.cli import main; main()", "serve", name, "--port",
                               str(port)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not _answers(port):
            assert server.poll() is None, f"mlcycle serve exited with {server.returncode}"
            assert time.monotonic() < deadline, "mlcycle serve was not ready within 120 s"
            time.sleep(0.5)
        tree = [psutil.Process(server.pid), *psutil.Process(server.pid).children(recursive=True)]
        assert len(tree) >= 2  # the server and at least one worker

        os.kill(server.pid, signum)
        stopped = time.monotonic() + 10
        server.wait(timeout=10)
        while any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in tree) or not port_free(port):
            assert time.monotonic() < stopped, [p.pid for p in tree if p.is_running()]
            time.sleep(0.2)
    finally:
        if server.poll() is None:
            stop_tree(server.pid, 10)


def _answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def test_sigterm_to_train_stops_every_process_it_started(tmp_path: Path) -> None:
    """SIGTERM to `mlcycle train` mid-search (inside a flow, where Prefect turns it into an exception): Prefect's
    temporary server, Ray's processes and anything else it started are gone within 10 s of its end, and it exits 143."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}  # its own temporary Prefect server
    env.update(MLCYCLE_HOME=str(tmp_path / "home"), BENTOML_HOME=str(tmp_path / "home/bentoml"),
               PREFECT_HOME=str(tmp_path / "prefect"))  # fmt: skip
    small = [arg for key, value in {**SMALL_RUN, "tune.num_samples": 16, "tune.max_rounds": 2000,
                                    "tune.early_stopping_rounds": 2000}.items()
             for arg in ("--set", f"{key}={yaml.safe_dump(value).split()[0]}")]  # fmt: skip
    output = tmp_path / "train.log"
    with output.open("w") as log:
        train = subprocess.Popen([sys.executable, "-c", "from mlcycle.flows.cli import main; main()", "train", "--config",
                                  "configs/adult.yaml", *small], cwd=ROOT, env=env, stdout=log, stderr=log)  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while "Task run 'tune_xgboost" not in output.read_text() and "tune_xgboost" not in _running(train.pid):
            assert train.poll() is None, output.read_text()[-3000:]
            assert time.monotonic() < deadline, "the search did not start within 300 s"
            time.sleep(0.5)
        tree = psutil.Process(train.pid).children(recursive=True)
        commands = _command_lines(tree)
        assert "uvicorn" in commands and "raylet" in commands  # Prefect's temporary server and Ray's node

        train.send_signal(signal.SIGTERM)
        assert train.wait(timeout=25) == exits.TERMINATED, output.read_text()[-3000:]
        stopped = time.monotonic() + 10
        while left := [p for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]:
            assert time.monotonic() < stopped, [" ".join(p.cmdline())[:80] for p in left]
            time.sleep(0.2)
    finally:
        if train.poll() is None:
            stop_tree(train.pid, 10)


def _running(pid: int) -> str:
    """The command lines below `pid`, joined (empty when it has none yet)."""
    try:
        return _command_lines(psutil.Process(pid).children(recursive=True))
    except psutil.NoSuchProcess:
        return ""


def _command_lines(processes: list[psutil.Process]) -> str:
    """Their command lines, joined; a process that has ended (or is a zombie, its parent yet to reap it) has none."""
    lines = []
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):  # ZombieProcess is one too
            lines.append(" ".join(process.cmdline()))
    return " ".join(lines)
