"""The MLflow mirror against a real `mlflow server` (SQLite, loopback, a temporary folder), read back through
MLflow's own client: runs, a child run per trial, metrics equal to the bundle's evidence, model versions and where
the `champion` alias points; and a training whose server is down, caught up later by `mlcycle tracking sync`."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlcycle.schemas import load_config
from tests.conftest import ROOT
from tests.integration.conftest import SMALL_RUN

pytestmark = [
    pytest.mark.integration,
    # mlflow 3.17's client-side model logging touches these; they are mlflow's to fix, not warnings about our code
    pytest.mark.filterwarnings("ignore::DeprecationWarning:mlflow.*"),
    pytest.mark.filterwarnings("ignore::FutureWarning:mlflow.*"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def mlflow_server(folder: Path, port: int) -> Iterator[str]:
    """A real `mlflow server` on loopback, its runs in SQLite and its artifacts in `folder`; stopped at the end."""
    folder.mkdir(parents=True, exist_ok=True)
    command = [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
               "--workers", "1", "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
               "--artifacts-destination", str(folder / "artifacts")]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    with open(folder / "server.log", "wb") as log:
        server = subprocess.Popen(command, cwd=folder, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                  # no job runner: eight worker processes of 250 MB each for MLflow's GenAI jobs
                                  env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true",
                                       "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})  # fmt: skip
        try:
            deadline = time.monotonic() + 180  # 6 s on this 2-core machine, more when it is busy
            while True:
                if server.poll() is not None:
                    pytest.fail(f"mlflow server exited: {(folder / 'server.log').read_text()[-2000:]}")
                try:
                    if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"mlflow server not up in 180 s: {(folder / 'server.log').read_text()[-2000:]}")
                time.sleep(1)
            yield url
        finally:
            os.killpg(server.pid, signal.SIGTERM)  # the server, its uvicorn worker and its job runner
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()


@pytest.fixture
def own_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A registry, store and queue of the test's own, so its promotions and rollbacks of `adult` (whose golden
    requests the smoke test needs) leave the session's `adult` alone; the BentoML store stays shared."""
    home = tmp_path / "home"
    monkeypatch.setenv("MLCYCLE_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return home


def client(url: str) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=url, registry_uri=url)


def parent_runs(ml: Any, experiment: str = "mlcycle-adult") -> dict[str, Any]:
    """The mirrored parent runs by bundle tag."""
    found = ml.get_experiment_by_name(experiment)
    runs = ml.search_runs([found.experiment_id]) if found else []
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len({r.data.tags["mlcycle.tag"] for r in parents}) == len(parents), "a run was mirrored twice"
    return {r.data.tags["mlcycle.tag"]: r for r in parents}


def children_of(ml: Any, run: Any) -> list[Any]:
    return list(ml.search_runs([run.info.experiment_id], f"tags.`mlflow.parentRunId` = '{run.info.run_id}'"))


def versions(ml: Any, name: str = "adult") -> dict[str, Any]:
    return {v.tags["mlcycle.tag"]: v for v in ml.search_model_versions(f"name = '{name}'")}


def champion_alias(ml: Any, name: str = "adult") -> str | None:
    return ml.get_registered_model(name).aliases.get("champion")


def assert_mirrors_evidence(ml: Any, run: Any, tag: str, report: str | None) -> None:
    """The run's metrics are the bundle's; its trials are the search's, each with its learning curve."""
    from mlcycle.tasks.registry.bundle import load_bundle

    bundle = load_bundle(tag)
    expected = {f"test/{k}": v for k, v in bundle.metrics["test"].items()}
    for reference, scores in bundle.metrics["references"].items():
        expected.update({f"{reference}/{k}": v for k, v in scores.items()})
    assert {k: run.data.metrics[k] for k in expected} == expected
    assert run.data.params["lineage.data_hash"] == bundle.lineage["data_hash"]
    assert run.data.params["lineage.schema_hash"] == bundle.lineage["schema_hash"]
    assert run.data.params["tune.num_samples"] == str(bundle.config.tune.num_samples)
    assert run.info.status == "FINISHED"
    artifacts = {a.path for a in ml.list_artifacts(run.info.run_id, "report")}
    assert {"report/report.html", "report/trials.json"} <= artifacts
    if report is None:
        return
    trials = json.loads((Path(report).parent / "trials.json").read_text())
    children = {c.data.tags["mlcycle.trial_id"]: c for c in children_of(ml, run)}
    assert set(children) == {t["trial_id"] for t in trials["trials"]}
    for trial in trials["trials"]:
        child = children[trial["trial_id"]]
        assert child.data.params["eta"] == str(trial["eta"])
        curve = ml.get_metric_history(child.info.run_id, "valid_logloss")
        # one point per round: the reports after a trial's best repeat its best round and score
        rounds = {p["rounds"]: p["valid_score"] for p in reversed(trials["curves"][trial["trial_id"]])}
        assert sorted((m.step, m.value) for m in curve) == sorted(rounds.items())


def test_mirror_follows_training_promotion_and_rollback(prefect_server: None, local_ray: None, own_home: Path,
                                                        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    from mlcycle.flows.models import rollback_flow
    from mlcycle.flows.training import train_flow
    from mlcycle.tasks import registry
    from mlcycle.tasks.registry.bundle import load_bundle

    with mlflow_server(tmp_path / "mlflow", free_port()) as url:
        settings = {**SMALL_RUN, "tracking.mlflow_uri": url}
        first = train_flow(load_config(ROOT / "configs" / "adult.yaml", settings))
        assert first.decision == "promote" and "pushed" in first.tracking and url in first.tracking
        second = train_flow(load_config(ROOT / "configs" / "adult.yaml", {**settings, "seed": 7}))
        assert "pushed" in second.tracking

        ml = client(url)
        runs = parent_runs(ml)
        assert set(runs) == {first.tag, second.tag}
        assert_mirrors_evidence(ml, runs[first.tag], first.tag, first.report)
        assert_mirrors_evidence(ml, runs[second.tag], second.tag, second.report)
        assert runs[second.tag].data.tags["mlcycle.decision"] == second.decision
        mirrored = versions(ml)
        assert set(mirrored) == {first.tag, second.tag}
        assert mirrored[first.tag].run_id == runs[first.tag].info.run_id
        assert champion_alias(ml) == mirrored[registry.champion("adult")].version

        if registry.champion("adult") != second.tag:  # the gate kept the first: an operator picks the second
            rollback_flow("adult", to=second.tag, reason="the seed-7 model, by hand")
        assert champion_alias(ml) == mirrored[second.tag].version
        rollback_flow("adult", reason="back to the first")
        assert registry.champion("adult") == first.tag
        assert champion_alias(ml) == mirrored[first.tag].version
        statuses = {tag: v.tags["mlcycle.status"] for tag, v in versions(ml).items()}
        assert statuses == {first.tag: "champion", second.tag: "retired"}
        # the registered model is the champion's booster itself
        import mlflow.xgboost

        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        booster = mlflow.xgboost.load_model("models:/adult@champion")
        assert booster.num_boosted_rounds() == load_bundle(first.tag).booster.num_boosted_rounds()
        assert len(parent_runs(ml)) == 2 and len(versions(ml)) == 2  # rollbacks add no run or version


def test_server_down_training_completes_and_sync_catches_up(prefect_server: None, local_ray: None, own_home: Path,
                                                            tmp_path: Path) -> None:  # fmt: skip
    from mlcycle.flows.training import train_flow
    from mlcycle.tasks import tracking

    port = free_port()  # no server there yet
    url = f"http://127.0.0.1:{port}"
    result = train_flow(load_config(ROOT / "configs" / "adult.yaml",
                                    {**SMALL_RUN, "tracking.mlflow_uri": url, "tracking.timeout_s": 2}))  # fmt: skip
    assert result.decision == "promote"  # the run went on as if nothing were configured
    assert f"MLflow server {url} not reached" in result.tracking and "mlcycle tracking sync" in result.tracking
    (queued,) = tracking.pending()
    record = queued.read_text()

    def sync() -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(Path(sys.executable).parent / "mlcycle"), "tracking", "sync"], cwd=ROOT,
                              capture_output=True, text=True, timeout=600, env=dict(os.environ))  # fmt: skip

    refused = sync()
    assert refused.returncode == 1 and url in refused.stderr and len(tracking.pending()) == 1
    with mlflow_server(tmp_path / "mlflow", port):
        done = sync()
        assert done.returncode == 0, done.stderr[-3000:]
        assert tracking.pending() == []
        ml = client(url)
        runs = parent_runs(ml)
        assert set(runs) == {result.tag}
        assert_mirrors_evidence(ml, runs[result.tag], result.tag, result.report)
        assert champion_alias(ml) == versions(ml)[result.tag].version
        # a replay of the same record (a sync that died before it could dequeue it) writes nothing twice
        (tracking.queue_dir() / queued.name).write_text(record)
        again = sync()
        assert again.returncode == 0, again.stderr[-3000:]
        assert len(parent_runs(ml)) == 1 and len(versions(ml)) == 1
        assert len(children_of(ml, parent_runs(ml)[result.tag])) == len(
            json.loads((Path(result.report).parent / "trials.json").read_text())["trials"]
        )


def test_training_with_tracking_off_never_imports_mlflow(tmp_path: Path) -> None:
    """The real training flow in a fresh interpreter (its own temporary Prefect server and Ray), tracking off."""
    code = f"""
import sys
from mlcycle.flows.training import train_flow
from mlcycle.schemas import load_config
result = train_flow(load_config("configs/adult.yaml", {{**{SMALL_RUN!r}, "gate.smoke_test": False}}))
assert result.tracking == "tracking off", result.tracking
print(sorted(name for name in sys.modules if name.partition(".")[0] == "mlflow"))
"""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL")}
    env |= {
        "MLCYCLE_HOME": str(tmp_path / "home"),
        "BENTOML_HOME": str(tmp_path / "bentoml"),
        "PREFECT_HOME": str(tmp_path / "prefect"),
    }
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
