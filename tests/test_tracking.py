"""The MLflow mirror's queue and its mapping of mlcycle's evidence to MLflow names, without an MLflow server.

The server itself, a real `mlflow server`, is in tests/integration/test_tracking.py.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlcycle.schemas import load_config
from mlcycle.tasks import tracking
from tests.conftest import ROOT

ADULT = ROOT / "configs" / "adult.yaml"
NO_RUN = tracking.FlowRunInfo(None, None, None, None)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home of the test's own, so the queue starts empty; and no tracking URI from the environment."""
    monkeypatch.setenv("MLCYCLE_HOME", str(tmp_path))
    monkeypatch.delenv(tracking.ENV_URI, raising=False)
    return tmp_path


def record_for(uri: str, tag: str = "adult:nosuchversion") -> dict:
    config = load_config(ADULT, {"tracking.mlflow_uri": uri})
    record = tracking.run_record(config, "train", tag, None, NO_RUN, "promote", [])
    assert record is not None
    return record


def test_the_config_names_the_server_before_the_environment(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert tracking.tracking_uri(load_config(ADULT)) is None
    monkeypatch.setenv(tracking.ENV_URI, "http://127.0.0.1:5999")
    # named, not copied: a queued record resolves the variable when it is pushed (it may carry a password)
    assert tracking.tracking_uri(load_config(ADULT)) == "${MLFLOW_TRACKING_URI}"
    configured = load_config(ADULT, {"tracking.mlflow_uri": "http://127.0.0.1:5000"})
    assert tracking.tracking_uri(configured) == "http://127.0.0.1:5000"
    assert tracking.experiment_of(configured) == "mlcycle-adult"


def test_tracking_off_queues_nothing_and_never_imports_mlflow(tmp_path: Path) -> None:
    """In a fresh interpreter: the flows and the CLI imported, the mirror's steps taken with tracking off."""
    code = """
import sys
import mlcycle.flows.cli, mlcycle.flows.models, mlcycle.flows.retrain, mlcycle.flows.training
from mlcycle.schemas import load_config
from mlcycle.tasks import tracking
config = load_config("configs/adult.yaml")
info = tracking.FlowRunInfo(None, None, None, None)
assert tracking.run_record(config, "train", "adult:x", None, info, "promote", []) is None
assert tracking.champion_record("adult", "adult:x", "rollback") is None
assert tracking.mirror(None, 1.0, 1.0) == "tracking off"
assert tracking.push_pending(1.0, 1.0).pushed == 0
print(sorted(name for name in sys.modules if name.partition(".")[0] == "mlflow"))
"""
    env = {k: v for k, v in os.environ.items() if k != tracking.ENV_URI} | {"MLCYCLE_HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert not (tmp_path / "tracking" / "queue").exists()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_unreachable_server_keeps_the_record_and_is_named(home: Path) -> None:
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    line = tracking.mirror(record_for(uri), timeout_s=2.0, budget_s=10.0)
    assert uri in line and "mlcycle tracking sync" in line
    queued = tracking.pending()
    assert len(queued) == 1
    assert json.loads(queued[0].read_text())["uri"] == uri


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A loopback server that accepts connections and never answers: a server too slow to wait for."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.2)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join(timeout=5)
    for connection in held:
        connection.close()
    listener.close()


def test_a_silent_server_is_waited_for_only_the_timeout(home: Path, silent_server: str) -> None:
    line = tracking.mirror(record_for(silent_server), timeout_s=0.5, budget_s=5.0)
    assert silent_server in line and "Timeout" in line
    assert len(tracking.pending()) == 1


# mlflow 3.17's SQLAlchemy store (in this process here; a server's own elsewhere) uses a deprecated loader
@pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated:DeprecationWarning")
def test_a_record_whose_evidence_is_gone_is_set_aside_with_the_reason(home: Path) -> None:
    """A local MLflow store (no server to be down): the bundle the record names does not exist, so retrying
    cannot help; the record moves to failed/ and the queue goes on."""
    uri = f"sqlite:///{home / 'mlflow.db'}"
    tracking.enqueue(record_for(uri, tag="adult:nosuchversion"))
    outcome = tracking.push_pending(timeout_s=5.0, budget_s=60.0)
    assert outcome.pushed == 0 and outcome.queued == 0 and len(outcome.failed) == 1
    assert tracking.pending() == []
    (aside,) = tracking.failed_dir().glob("*.json")
    kept = json.loads(aside.read_text())
    assert "nosuchversion" in kept["reason"] and kept["record"]["tag"] == "adult:nosuchversion"


def test_run_metrics_put_the_model_next_to_its_references() -> None:
    from mlcycle.tasks.tracking.mlflow_mirror import run_metrics

    metrics = {
        "primary": "roc_auc",
        "test": {"roc_auc": 0.91, "log_loss": 0.3},
        "references": {
            "trivial": {"roc_auc": 0.5, "log_loss": 0.55},
            "linear": {"roc_auc": 0.89, "log_loss": math.nan},
        },
        "parent_on_same_test": {"roc_auc": 0.9},
        "rows": 1500,
        "slices": {"sex": [{"value": "Female", "rows": 500, "roc_auc": 0.93}, {"value": "a/b=c", "roc_auc": 0.8}]},
    }
    logged = {m.key: m.value for m in run_metrics(metrics, at_ms=1)}
    assert logged == {
        "test/roc_auc": 0.91, "test/log_loss": 0.3, "trivial/roc_auc": 0.5, "trivial/log_loss": 0.55,
        "linear/roc_auc": 0.89, "parent/roc_auc": 0.9, "slices/sex/Female/roc_auc": 0.93,
        "slices/sex/a_b_c/roc_auc": 0.8, "rows/test": 1500.0,
    }  # fmt: skip


def test_the_config_becomes_dotted_params() -> None:
    from mlcycle.tasks.tracking.mlflow_mirror import flatten

    params = flatten(load_config(ADULT).model_dump(mode="json"))
    assert params["tune.num_samples"] == 1000
    assert params["tune.space.eta"] == [0.01, 0.2] or isinstance(params["tune.space.eta"], list)
    # keyed by data values, which are no valid MLflow names: kept whole
    assert params["source.replace.income"] == {"<=50K.": "<=50K", ">50K.": ">50K"}
    assert params["tracking.mlflow_uri"] is None


def test_the_signature_is_the_features_schema() -> None:
    from mlcycle.tasks.tracking.mlflow_mirror import signature

    found = signature(load_config(ADULT))
    inputs = {c.name: (c.type.name, c.required) for c in found.inputs.inputs}
    assert inputs["age"] == ("long", True)
    assert inputs["workclass"] == ("string", False)  # nullable in AdultFeatures
    assert "income" not in inputs  # the target is no input
    assert [c.name for c in found.outputs.inputs] == ["probability"]
