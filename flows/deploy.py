"""`mlcycle deploy` / `mlcycle undeploy`: the local production setup in one command.

`deploy` starts, unless `PREFECT_API_URL` names a server already: a Prefect server on loopback; then it creates the
process work pool `mlcycle`, starts a worker for it, publishes each dataset config as Prefect variables
(`mlcycle_<name>_config`, `..._retrain_cron`, ...) that `prefect.yaml` reads, and runs `prefect deploy --all`.
Everything it starts is recorded with its pid under `$MLCYCLE_HOME/deploy/`; `undeploy` stops exactly those, with
every process they started (flow runs, the server's own workers), and waits until they are gone. A deploy that fails
or is interrupted half-way stops what it had started.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import httpx

from schemas import PipelineConfig
from tasks.errors import UserError
from tasks.paths import configure_environment, mlcycle_home
from tasks.processes import stop_tree

WORK_POOL = "mlcycle"
PROJECT_DIR = Path(__file__).resolve().parent.parent


class DeployError(UserError, RuntimeError):
    """The setup cannot be brought up: already running, or the server or `prefect deploy` failed (with its output)."""


@dataclass(frozen=True)
class Deployed:
    api_url: str
    started: dict[str, int]  # process name -> pid, only those this command started
    state_dir: Path


def state_dir() -> Path:
    return mlcycle_home() / "deploy"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def prefect_cli() -> list[str]:
    return [sys.executable, "-m", "prefect"]


def variables_for(config: PipelineConfig) -> dict[str, object]:
    """The Prefect variables `prefect.yaml` reads for one dataset."""
    prefix = f"mlcycle_{config.name.replace('-', '_')}"
    return {
        f"{prefix}_config": config.model_dump(mode="json"),
        f"{prefix}_retrain_cron": config.schedule.retrain_cron,
        f"{prefix}_drift_cron": config.schedule.drift_cron,
        f"{prefix}_timezone": config.schedule.timezone,
        f"{prefix}_watch_cron": config.schedule.watch_cron,
        f"{prefix}_cooldown_s": config.retrain.cooldown_s,
    }


def publish_variables(api_url: str, configs: Iterable[PipelineConfig]) -> list[str]:
    """Create or overwrite the variables of every config on the server at `api_url`."""
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.variables import Variable

    names = []
    with temporary_settings({PREFECT_API_URL: api_url}):
        for config in configs:
            for name, value in variables_for(config).items():
                Variable.set(name, value, overwrite=True)  # type: ignore[arg-type]
                names.append(name)
    return names


def wait_healthy(api_url: str, proc: subprocess.Popen[bytes] | None, timeout_s: float, log: Path | None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-3000:] if log and log.exists() else ""
            raise DeployError(f"prefect server exited with {proc.returncode}:\n{tail}")
        try:
            if httpx.get(f"{api_url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise DeployError(f"prefect server at {api_url} not healthy within {timeout_s:.0f} s (log: {log})")


def _spawn(name: str, cmd: list[str], env: dict[str, str], folder: Path) -> subprocess.Popen[bytes]:
    """A process in its own session (so `undeploy` can stop it and its children), logged and recorded by pid."""
    log = (folder / f"{name}.log").open("ab")
    proc = subprocess.Popen(cmd, env=env, cwd=PROJECT_DIR, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip
    (folder / f"{name}.pid").write_text(str(proc.pid))
    return proc


def deployment_env(api_url: str, overrides: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of the worker and the CLI calls: the API, the project folder, mlcycle's home."""
    configure_environment()
    return {**os.environ, **(overrides or {}), "PREFECT_API_URL": api_url, "MLCYCLE_PROJECT_DIR": str(PROJECT_DIR),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}  # fmt: skip


def deploy(configs: list[PipelineConfig], names: list[str] | None = None, startup_timeout_s: float = 180,
           env_overrides: dict[str, str] | None = None) -> Deployed:  # fmt: skip
    """Server (unless PREFECT_API_URL is set), work pool, worker, variables, then `prefect deploy`.

    `env_overrides` go to every process started (and only there), e.g. a temporary PREFECT_HOME in tests."""
    folder = state_dir()
    folder.mkdir(parents=True, exist_ok=True)
    running = [p.stem for p in folder.glob("*.pid") if _alive(int(p.read_text()))]
    if running:
        raise DeployError(
            f"already deployed ({', '.join(running)} running, pids in {folder}); `mlcycle undeploy` first"
        )
    try:
        return _deploy(configs, names, startup_timeout_s, env_overrides or {}, folder)
    except BaseException:
        # A failure or an interruption (Ctrl-C, SIGTERM) half-way: nothing it started is left running.
        undeploy()
        raise


def _deploy(configs: list[PipelineConfig], names: list[str] | None, startup_timeout_s: float,
            overrides: dict[str, str], folder: Path) -> Deployed:  # fmt: skip
    started: dict[str, int] = {}
    api_url = overrides.get("PREFECT_API_URL", os.environ.get("PREFECT_API_URL", ""))
    if not api_url:
        port = free_port()
        api_url = f"http://127.0.0.1:{port}/api"
        env = {**deployment_env(api_url, overrides), "PREFECT_SERVER_API_HOST": "127.0.0.1"}
        server = _spawn("server", [*prefect_cli(), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                        env, folder)  # fmt: skip
        started["server"] = server.pid
        wait_healthy(api_url, server, startup_timeout_s, folder / "server.log")
    else:
        wait_healthy(api_url, None, 30, None)
    (folder / "api_url").write_text(api_url)
    env = deployment_env(api_url, overrides)
    _run([*prefect_cli(), "work-pool", "create", WORK_POOL, "--type", "process", "--overwrite"], env)
    worker = _spawn("worker", [*prefect_cli(), "worker", "start", "--pool", WORK_POOL, "--type", "process"],
                    env, folder)  # fmt: skip
    started["worker"] = worker.pid
    publish_variables(api_url, configs)
    selection = [arg for name in names for arg in ("--name", name)] if names else ["--all"]
    _run([*prefect_cli(), "--no-prompt", "deploy", *selection], env)
    return Deployed(api_url=api_url, started=started, state_dir=folder)


def _run(cmd: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(cmd, env=env, cwd=PROJECT_DIR, capture_output=True, text=True)
    if done.returncode != 0:
        raise DeployError(
            f"{' '.join(cmd[2:])} failed ({done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        )


def _alive(pid: int) -> bool:
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:  # our own child that has exited (the tests start it)
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def undeploy(timeout_s: float = 30) -> list[str]:
    """Stop the worker and the server `deploy` started, by the recorded pids: their process groups and every
    process below them (a flow run in a session of its own too), and wait until all are gone."""
    folder = state_dir()
    stopped = []
    for name in ("worker", "server"):  # the worker first: it reports its runs to the server
        pid_file = folder / f"{name}.pid"
        if not pid_file.exists():
            continue
        pid = int(pid_file.read_text())
        if _alive(pid) and os.getpgid(pid) == pid:  # still the session leader we started, not a reused pid
            stop_tree(pid, timeout_s)
            with contextlib.suppress(ChildProcessError):  # our own child (the tests start it): reap it
                os.waitpid(pid, os.WNOHANG)
            stopped.append(f"{name} (pid {pid})")
        pid_file.unlink()
    (folder / "api_url").unlink(missing_ok=True)
    return stopped


def summary(result: Deployed) -> str:
    return json.dumps({"api_url": result.api_url, "started": result.started, "state": str(result.state_dir)})
