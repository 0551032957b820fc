"""mlcycle as a user gets it: the wheel built from this repository, installed with the lock file as constraints into
a fresh virtualenv outside the repository, used from empty folders that are nothing but a user's project.

Nothing here imports mlcycle from the checkout: every command runs the virtualenv's own `mlcycle` or `python`, with
none of the test session's state (MLCYCLE_HOME, BENTOML_HOME, the Prefect server) in its environment.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration

QUICK = ["--set", "tune.time_budget_s=15", "--set", "tune.num_samples=4", "--set", "tune.searcher=random"]
BARE_NAMES = ("tasks", "flows", "schemas", "serving", "configs")


@dataclass(frozen=True)
class Venv:
    bin: Path
    wheel: Path

    def env(self, project: Path, **extra: str) -> dict[str, str]:
        """A user's environment: the test session's mlcycle, BentoML and Prefect settings left out, so state goes to
        the project's `./.mlcycle` and Prefect's home is the project's own."""
        keep = {k: v for k, v in os.environ.items()
                if not k.startswith(("MLCYCLE_", "BENTOML_", "PREFECT_", "VIRTUAL_ENV", "PYTHON", "RAY_"))}  # fmt: skip
        return {**keep, "PATH": f"{self.bin}:{keep.get('PATH', '')}", "PREFECT_HOME": str(project / ".prefect"),
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "BENTOML_DO_NOT_TRACK": "True",
                "RAY_USAGE_STATS_ENABLED": "0", "DO_NOT_TRACK": "1", **extra}  # fmt: skip

    def run(self, project: Path, *args: str, timeout: float = 600, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.bin / args[0]), *args[1:]], cwd=project, env=self.env(project, **extra),
                              capture_output=True, text=True, timeout=timeout)  # fmt: skip


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Venv:
    """`uv build --wheel`, then a new virtualenv with that wheel and the locked versions of what it needs."""
    uv = str(Path(sys.executable).parent / "uv")
    out = tmp_path_factory.mktemp("dist")
    built = subprocess.run([uv, "build", "--wheel", "--out-dir", str(out), str(ROOT)], capture_output=True, text=True,
                           timeout=300)  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = out.glob("mlcycle-*.whl")
    home = tmp_path_factory.mktemp("venv") / "env"
    made = subprocess.run([uv, "venv", "--quiet", "--python", sys.executable, str(home)], capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert made.returncode == 0, made.stderr
    # --compile-bytecode: without .pyc files (PYTHONDONTWRITEBYTECODE is set here) every process compiles what it
    # imports again, as the Makefile says.
    installed = subprocess.run([uv, "pip", "install", "--quiet", "--compile-bytecode", "--python",
                                str(home / "bin" / "python"), "-c", str(ROOT / "requirements.lock"), str(wheel)],
                               capture_output=True, text=True, timeout=900)  # fmt: skip
    assert installed.returncode == 0, installed.stderr[-3000:]
    return Venv(home / "bin", wheel)


def loans_csv(folder: Path, rows: int = 900, seed: int = 3) -> Path:
    """A small messy export: ids, money as text, a numeric-looking code, `?` for missing, dates as text."""
    rng = np.random.default_rng(seed)
    amount = rng.integers(1_000, 90_000, rows)
    segment = rng.choice(["retail", "small business", "corporate"], rows)
    bad = (amount > 45_000) ^ (segment == "corporate") ^ (rng.random(rows) < 0.08)
    frame = pd.DataFrame({
        "loan_id": [f"L-{i:06d}" for i in range(rows)],
        "amount": [f"${a:,}.00" for a in amount],
        "segment": segment,
        "zip": [f"{z:05d}" for z in rng.integers(1_000, 1_200, rows)],
        "term": rng.choice(["36", "60", "?"], rows),
        "opened": [f"2021-{m:02d}-{d:02d}" for m, d in zip(rng.integers(1, 13, rows), rng.integers(1, 29, rows),
                                                           strict=True)],
        "defaulted": np.where(bad, "yes", "no"),
    })  # fmt: skip
    path = folder / "loans.csv"
    frame.to_csv(path, index=False)
    return path


REQUESTS = [
    {"amount": 52_000.0, "segment": "retail", "zip": "01020", "term": "36", "opened": "2021-05-04"},
    {"amount": 3_500.0, "segment": "corporate", "zip": "01100", "term": None, "opened": "2021-11-30"},
    {"amount": 61_000.0, "segment": "small business", "zip": "99999", "term": "60", "opened": "2021-01-15"},
]


def test_the_wheel_holds_every_module_and_data_file_under_one_name(venv: Venv) -> None:
    with zipfile.ZipFile(venv.wheel) as wheel:
        names = set(wheel.namelist())
        top_level = {n.split("/")[0] for n in names if not n.startswith("mlcycle-")}
    assert top_level == {"mlcycle"}
    expected = {f"mlcycle/{p.relative_to(ROOT / 'mlcycle')}" for p in (ROOT / "mlcycle").rglob("*.py")}
    for folder in ("flows", "tasks", "schemas", "serving"):
        expected |= {f"mlcycle/{p.relative_to(ROOT)}" for p in (ROOT / folder).rglob("*.py")}
    expected |= {f"mlcycle/{p.relative_to(ROOT)}" for p in (ROOT / "configs").glob("*.yaml")}
    expected |= {f"mlcycle/{p.relative_to(ROOT)}" for p in (ROOT / "serving" / "examples").glob("*.json")}
    expected |= {"mlcycle/serving/bentofile.yaml", "mlcycle/py.typed"}
    assert sorted(expected - names) == []


def test_only_mlcycle_is_importable(venv: Venv, tmp_path: Path) -> None:
    for name in BARE_NAMES:
        done = venv.run(tmp_path, "python", "-c", f"import {name}")
        assert done.returncode != 0 and "ModuleNotFoundError" in done.stderr, name
    done = venv.run(tmp_path, "python", "-c", "import mlcycle, mlcycle.tasks.ingest.read; print(mlcycle.__file__)")
    assert done.returncode == 0, done.stderr
    assert "site-packages" in done.stdout and str(ROOT) not in done.stdout


@pytest.fixture(scope="module")
def trained(venv: Venv, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`mlcycle init` then `mlcycle train` in an empty folder, with the installed tool."""
    project = tmp_path_factory.mktemp("loans-project")
    loans_csv(project)
    init = venv.run(project, "mlcycle", "init", "loans.csv", "--target", "defaulted", timeout=300)
    assert init.returncode == 0, init.stderr[-3000:]
    assert (project / "configs" / "loans.yaml").is_file() and (project / "schemas" / "loans.py").is_file()
    assert not (project / "schemas" / "__init__.py").exists()
    train = venv.run(project, "mlcycle", "train", "--config", "configs/loans.yaml", *QUICK, timeout=900)
    assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-3000:]
    assert "promoted" in train.stdout
    assert (project / ".mlcycle" / "models" / "registry.sqlite").is_file()  # state in the project's own folder
    return project


def test_init_train_serve_and_load_answer_the_same_from_any_folder(venv: Venv, trained: Path) -> None:
    from mlcycle.tasks.registry.smoke import free_port

    port = free_port()
    log = (trained / "serve.log").open("w")
    server = subprocess.Popen([str(venv.bin / "mlcycle"), "serve", "loans", "--port", str(port)], cwd=trained,
                              env=venv.env(trained), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, (trained / "serve.log").read_text()[-3000:]
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (trained / "serve.log").read_text()[-3000:]
            time.sleep(1)
        served = httpx.post(f"{url}/predict", json={"records": REQUESTS}, timeout=30)
        assert served.status_code == 200, served.text
        body = served.json()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
        log.close()
    # From another folder: the model carries its schema, the store is named by MLCYCLE_HOME.
    elsewhere = trained.parent / "notebook-folder"
    elsewhere.mkdir()
    script = ("import json, sys, pandas as pd, mlcycle\n"
              "model = mlcycle.load('loans')\n"
              "answer = model.predict(pd.DataFrame(json.loads(sys.argv[1])))\n"
              "print(json.dumps({'tag': model.tag, 'probability': answer['probability'].tolist(),"
              " 'label': answer['label'].tolist()}))\n")  # fmt: skip
    loaded = venv.run(elsewhere, "python", "-c", script, json.dumps(REQUESTS),
                      MLCYCLE_HOME=str(trained / ".mlcycle"))  # fmt: skip
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    mine = json.loads(loaded.stdout.strip().splitlines()[-1])
    assert mine["tag"] == body["model"]
    assert mine["probability"] == [p["probability"] for p in body["predictions"]]  # the same bits
    assert mine["label"] == [p["label"] for p in body["predictions"]]


@pytest.fixture
def deployed(venv: Venv, tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """`mlcycle deploy` of a project under git, from that project's folder, for workers that clone it (here the
    worker is local and the repository a folder); `mlcycle undeploy` after."""
    project = tmp_path / "deployed-project"
    project.mkdir()
    loans_csv(project, seed=5)
    init = venv.run(project, "mlcycle", "init", "loans.csv", "--target", "defaulted", "--name", "loansdeployed")
    assert init.returncode == 0, init.stderr[-3000:]
    (project / ".gitignore").write_text(".mlcycle/\n.prefect/\n")
    for command in (["init", "-q"], ["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"]):
        assert subprocess.run(["git", *command], cwd=project, capture_output=True).returncode == 0, command
    # Only the clone has the schema now: a run that succeeds read it from the repository the pull step cloned.
    (project / "schemas" / "loansdeployed.py").unlink()
    extra = {"PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false", "PREFECT_WORKER_QUERY_SECONDS": "3"}
    try:
        done = venv.run(project, "mlcycle", "deploy", "--name", "train_flow/loansdeployed", *QUICK,
                        "--git-repo", f"file://{project}", **extra)  # fmt: skip
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        yield project, (project / ".mlcycle" / "deploy" / "api_url").read_text().strip()
    finally:
        venv.run(project, "mlcycle", "undeploy", timeout=120)


def test_a_project_deploys_and_trains_through_prefect_deployment_run(venv: Venv,
                                                                     deployed: tuple[Path, str]) -> None:  # fmt: skip
    project, api_url = deployed
    started = venv.run(project, "prefect", "deployment", "run", "train/loansdeployed", PREFECT_API_URL=api_url)
    assert started.returncode == 0, started.stdout + started.stderr
    run_id = next(line.split()[-1] for line in started.stdout.splitlines() if "UUID" in line)
    deadline = time.monotonic() + 600
    state = None
    while time.monotonic() < deadline:
        state = httpx.get(f"{api_url}/flow_runs/{run_id}", timeout=10).json()["state"]
        if state["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            break
        time.sleep(3)
    assert state is not None and state["type"] == "COMPLETED", state
    listed = venv.run(project, "python", "-c", "import mlcycle; print(mlcycle.models('loansdeployed').to_json())")
    assert listed.returncode == 0, listed.stderr[-3000:]
    versions = pd.DataFrame(json.loads(listed.stdout.strip().splitlines()[-1]))
    assert len(versions) == 1 and bool(versions["champion"].iloc[0]) and versions["status"].iloc[0] == "champion"
