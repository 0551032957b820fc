"""Faults survived, with figures: real runs and real services on loopback, a fault injected into each, the state
checked after it.

    .venv/bin/python benchmarks/faults.py            # everything below, 20 kills: 30-40 min on 2 shared cores
    .venv/bin/python benchmarks/faults.py --small    # one kill, the landing file and the reload: 2-3 min

A throw-away project (a schema file, configs, CSV files of ~200 rows each written here, 1 row in 100 failing the
schema) and a throw-away `MLCYCLE_HOME`; one `prefect server start` on 127.0.0.1 that every run uses; each
`mlcycle train` starts its own local Ray, and its gate a real `bentoml serve` for the smoke test. Faults:

- kill: SIGKILL to the whole process tree of `mlcycle train` (the supervisor, the flow's process, Ray, a smoke
  test's server), at a moment chosen by watching the run: its output lines, the store's files (the new file's raw
  copy, a staging folder of the curated store: that kill's file has 20,000 rows, so the staged parts live long
  enough to be seen), a bundle's `gate.json`, plus a random delay. Each kill records the phase it hit. Kills aimed
  at the gate or the promotion train a model name of their own (the first model of a name is promoted, after a
  smoke test; a later one of the main name is rejected). Checked after the kill: the store's accounting for every
  accepted batch and the registry (one champion or none, the one from before or a version of this run); then the
  same command again: it must end with 0 or 3, with every input row accepted or quarantined exactly once and the
  champion the re-run's decision says.
- disk full during ingest / during the bundle save: `MLCYCLE_HOME` on a 40 MB tmpfs, filled (fallocate) to leave
  too little room just before the write; a clear error, nothing half-written trusted, and the same command again
  after the space is freed finishes the work.
- the Prefect API going away (its server SIGKILLed during the search); a Ray worker SIGKILLed in a trial.
- two `mlcycle train` of the same name at once; a file still being written into a landing folder; a curated
  Parquet part truncated on disk; `/reload` to a new champion while 32 clients send requests to `bentoml serve`.

One line per fault (PASS or FAIL, what was injected, where, what was checked), then:
`faults: N injected, rows lost X, champions wrong Y, runs not resumable Z, requests failed during reload R`.
rows lost counts input rows missing from the store or held twice after the re-run (or held incompletely by an
accepted batch at any time); champions wrong counts checks that found two champions, none where one was, or one
that is neither the one before nor this run's; runs not resumable counts re-runs that did not end with 0 or 3 in
time or ended with wrong accounting; requests failed counts requests that got no 200 while the champion changed.

Options: `--kills N` (default 20, 1 with --small), `--seed S`, `--keep` (keep the work folder and its logs),
`--work DIR` (where the work folder goes), `--only kill,landing,...` (run those faults only). Nothing is sent
anywhere but 127.0.0.1; every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import itertools
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

NAME = "faults"
CLI = "from mlcycle.flows.cli import main; main()"
MARK = "MLCYCLE_FAULTS"  # every process this suite starts carries it: what it stops at the end, and nothing else
RUN_MARK = "MLCYCLE_FAULTS_RUN"  # the one run a kill is for
RUN_TIMEOUT_S = 600.0
TELEMETRY_OFF = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "BENTOML_DO_NOT_TRACK": "True",
                 "RAY_USAGE_STATS_ENABLED": "0", "DO_NOT_TRACK": "1", "MLFLOW_DISABLE_TELEMETRY": "true",
                 "PREFECT_SERVER_UI_ENABLED": "false", "PYTHONUNBUFFERED": "1"}  # fmt: skip

SCHEMA = '''"""A small credit dataset written by benchmarks/faults.py."""
from __future__ import annotations

import pandera.pandas as pa
from pandera.typing import Series


class FaultsFeatures(pa.DataFrameModel):
    age: Series[int] = pa.Field(ge=18, le=100)
    income: Series[float] = pa.Field(ge=0, nullable=True)
    region: Series[str] = pa.Field(isin=["north", "south", "east", "west"])

    class Config:
        strict = True
        coerce = True


class FaultsSchema(FaultsFeatures):
    default: Series[str] = pa.Field(isin=["no", "yes"])
'''

CONFIG = """name: {name}
schema_ref: schemas/faults.py:FaultsSchema
features_schema_ref: schemas/faults.py:FaultsFeatures
target: default
task: binary
positive_label: "yes"
slices: [region]
seed: 7
source:
{source}
split:
  strategy: stratified
tune:
  num_samples: 2
  max_rounds: 30
  early_stopping_rounds: 5
  report_every: 5
  grace_progress: 1
  searcher: random
  final_fit: train_valid    # a final fit of its own, a phase a kill can land in
gate:
  bootstrap_samples: 100
  latency_p99_ms: 1000000   # the gate never depends on this busy machine's timing
  min_slice_rows: 5
"""
FILES_SOURCE = "  kind: files\n  files:\n    - path: data/*.csv"
LANDING_SOURCE = "  kind: landing\n  landing: {{path: {path}, pattern: '*.csv', settle_s: 2}}"
RECORD = {"age": 41, "income": 52.5, "region": "north"}


# ---------------------------------------------------------------------------------------------------------- findings


@dataclass
class Finding:
    """What one injected fault did, and what the checks after it found."""

    fault: str
    where: str
    injected: str
    checked: str
    rows_lost: int = 0
    champions_wrong: int = 0
    not_resumable: int = 0
    requests_failed: int = 0
    problems: list[str] = field(default_factory=list)
    injected_count: int = 1
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return not (self.problems or self.rows_lost or self.champions_wrong or self.not_resumable
                    or self.requests_failed)  # fmt: skip

    def line(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        found = f"; found: {'; '.join(self.problems)}" if self.problems else ""
        return (f"{verdict} {self.fault} [{self.where}]: {self.injected}; checked: {self.checked}{found} "
                f"({self.seconds:.0f} s)")  # fmt: skip


# ----------------------------------------------------------------------------------------------------------- project


@dataclass(frozen=True)
class InputFile:
    """A CSV written for a run, and what ingest must make of it."""

    path: Path
    sha256: str
    rows: int
    bad: int


class Project:
    """A user's project folder: the schema file, configs and data; and the home its state goes to."""

    def __init__(self, root: Path, home: Path, rng: random.Random, name: str = NAME) -> None:
        self.root, self.home, self.rng, self.name = root, home, rng, name
        self.files: list[InputFile] = []
        (root / "schemas").mkdir(parents=True, exist_ok=True)
        (root / "configs").mkdir(exist_ok=True)
        (root / "data").mkdir(exist_ok=True)
        (root / "schemas" / "faults.py").write_text(SCHEMA)
        (root / "configs" / f"{name}.yaml").write_text(CONFIG.format(name=name, source=FILES_SOURCE))

    def dataset(self, name: str) -> Project:
        """Another dataset of the same project, home and files (its own store and model name)."""
        other = Project(self.root, self.home, self.rng, name)
        other.files = self.files  # the same list: a file added to one is an input of both
        return other

    def rows(self, n: int, bad: int) -> list[str]:
        """`n` rows, of which `bad` fail the schema (an age under 18), at random places."""
        lines = []
        for _ in range(n - bad):
            income = round(self.rng.uniform(5, 200), 1)
            default = "yes" if self.rng.random() < (0.7 if income < 40 else 0.15) else "no"
            lines.append(f"{self.rng.randint(18, 90)},{income},{self.rng.choice(['north', 'south', 'east', 'west'])},"
                         f"{default}")  # fmt: skip
        for _ in range(bad):
            lines.insert(self.rng.randrange(len(lines) + 1), f"{self.rng.randint(1, 17)},50.0,north,no")
        return lines

    def add_file(self, n: int = 200, bad: int = 2) -> InputFile:
        path = self.root / "data" / f"part-{len(self.files):03d}.csv"
        path.write_text("age,income,region,default\n" + "\n".join(self.rows(n, bad)) + "\n")
        found = InputFile(path, hashlib.sha256(path.read_bytes()).hexdigest(), n, bad)
        self.files.append(found)
        return found

    @property
    def store(self):  # type: ignore[no-untyped-def]
        from mlcycle.tasks.ingest.store import DatasetStore

        return DatasetStore.for_dataset(self.name, self.home)


# -------------------------------------------------------------------------------------------------------- processes


def marked(name: str, value: str) -> list[psutil.Process]:
    """The processes whose environment has `name=value` (this suite's own, whatever session they put themselves in)."""
    found = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if proc.pid != os.getpid() and proc.environ().get(name) == value:
                found.append(proc)
    return found


def kill_all(procs: list[psutil.Process]) -> None:
    """SIGKILL to each at once, as when a machine dies; returns once none runs."""
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(procs, timeout=30)


class Run:
    """An `mlcycle` command in its own session, its output read line by line with the time each line came."""

    def __init__(self, bench: Bench, args: list[str], project: Project, label: str) -> None:
        self.run_id = uuid.uuid4().hex[:12]
        self.label, self.started = label, time.monotonic()
        env = {**bench.env, "MLCYCLE_HOME": str(project.home), "BENTOML_HOME": str(project.home / "bentoml"),
               RUN_MARK: self.run_id}  # fmt: skip
        self.log_path = bench.logs / f"{bench.next_log()}-{label}.log"
        self.log = self.log_path.open("w")
        self.lines: list[tuple[float, str]] = []
        self.proc = subprocess.Popen([sys.executable, "-c", CLI, *args], cwd=project.root, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)  # fmt: skip
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.killed_at: float | None = None

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append((time.monotonic(), line.rstrip("\n")))
            self.log.write(line)
            self.log.flush()

    def seen(self, text: str) -> float | None:
        """When the first line holding `text` came, if one did."""
        return next((t for t, line in list(self.lines) if text in line), None)

    def wait_for(self, ready: Callable[[], bool], timeout_s: float = RUN_TIMEOUT_S, poll_s: float = 0.005) -> bool:
        """Poll `ready` until it holds (True), or the run ends or the time is up (False)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if ready():
                return True
            if self.proc.poll() is not None:
                return bool(ready())
            time.sleep(poll_s)
        return False

    def kill(self) -> None:
        """SIGKILL to the run's whole tree: its session, its descendants, and whatever carries its mark."""
        try:
            tree = [psutil.Process(self.proc.pid), *psutil.Process(self.proc.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            tree = []
        self.killed_at = time.monotonic()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        kill_all(tree)
        kill_all(marked(RUN_MARK, self.run_id))
        self.proc.wait(timeout=60)
        self.reader.join(timeout=10)

    def finish(self, timeout_s: float = RUN_TIMEOUT_S) -> int | None:
        """The exit code, or None when the run did not end in time (it is then killed)."""
        try:
            code = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            return None
        self.reader.join(timeout=30)
        deadline = time.monotonic() + 10
        while (left := marked(RUN_MARK, self.run_id)) and time.monotonic() < deadline:
            time.sleep(0.5)
        if left:  # nothing of a finished run should outlive it: noted, and stopped
            names = sorted({p.name() for p in left if p.is_running()})
            print(f"note: {len(left)} process(es) outlived {self.label} by 10 s: {names}", flush=True)
            kill_all(left)
        return code

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started

    @property
    def output(self) -> str:
        return "\n".join(line for _, line in self.lines)

    @property
    def tag(self) -> str | None:
        """The model this run saved, from its last line about it."""
        tags = re.findall(r"^([a-z][a-z0-9_-]*:[a-z0-9]+): test ", self.output, re.MULTILINE)
        return tags[-1] if tags else None

    def error(self) -> str:
        """The line that says why the run failed: its `error:` line, else the last exception line."""
        lines = [line for _, line in self.lines]
        named = [line for line in lines if line.startswith("error:")]
        if named:
            return named[-1][:240]
        raised = [line for line in lines if re.match(r"^[\w.]*(Error|Exception|Rejected)\b", line)]
        return (raised[-1] if raised else (lines[-1] if lines else "no output"))[:240]


class PrefectServer:
    """`prefect server start` on 127.0.0.1 with a home of its own; every run of the suite uses it."""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/api"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 180) -> None:
        import httpx

        env = {**self.bench.env, "PREFECT_API_URL": self.url}
        log = (self.bench.logs / f"{self.bench.next_log()}-prefect-server.log").open("w")
        self.proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                                      "--port", str(self.port), "--no-ui", "--analytics-off"], env=env, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prefect server exited with {self.proc.returncode}; see {log.name}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            time.sleep(0.5)
        raise RuntimeError(f"prefect server not ready within {timeout_s:.0f} s; see {log.name}")

    def kill(self) -> None:
        if self.proc is None:
            return
        try:
            tree = [psutil.Process(self.proc.pid), *psutil.Process(self.proc.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            tree = []
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        kill_all(tree)
        self.proc.wait(timeout=60)
        self.proc = None


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ------------------------------------------------------------------------------------------------------------ checks


@dataclass
class Accounting:
    """How the store holds the input files: rows missing or held twice, and what is wrong."""

    rows: int = 0  # input rows accounted for exactly once
    lost: int = 0
    problems: list[str] = field(default_factory=list)
    pending: int = 0


def accounting(project: Project, complete: bool) -> Accounting:
    """Every accepted batch holds exactly its file's rows, accepted or quarantined, once (curated parts, ledger and
    registry agree); no content is accepted twice; with `complete`, every input file is accepted."""
    import pandas as pd

    from mlcycle.tasks.ingest.store import list_batches, read_curated_batch, read_ledger

    store = project.store
    batches = list_batches(store)
    found = Accounting(pending=sum(b.status == "pending" for b in batches))
    for item in project.files:
        accepted = [b for b in batches if b.content_hash == item.sha256 and b.status == "accepted"]
        if not accepted:
            if complete:
                found.lost += item.rows
                found.problems.append(f"{item.path.name}: no accepted batch ({item.rows} rows missing)")
            continue
        if len(accepted) > 1:
            found.lost += item.rows * (len(accepted) - 1)
            found.problems.append(f"{item.path.name}: accepted {len(accepted)} times")
        batch = accepted[0]
        try:
            curated = read_curated_batch(store, batch.batch_id)
            ledger = read_ledger(store, [batch.batch_id])
        except Exception as exc:
            found.lost += item.rows
            found.problems.append(f"{item.path.name}: batch {batch.batch_id} unreadable: {type(exc).__name__}: {exc}")
            continue
        held = pd.concat([curated["_row"], pd.Series(ledger["row"].unique())])
        twice = int(held.duplicated().sum())
        once = int(held.nunique()) - twice
        in_store = (len(curated), int(ledger["row"].nunique()))
        in_registry = (batch.rows_accepted, batch.rows_quarantined, batch.rows_read)
        if twice or in_store != (item.rows - item.bad, item.bad) or in_registry != (*in_store, item.rows):
            found.problems.append(f"{item.path.name}: batch {batch.batch_id} holds {in_store[0]} accepted + "
                                  f"{in_store[1]} quarantined rows ({twice} twice), the registry says "
                                  f"{in_registry[0]} + {in_registry[1]} of {in_registry[2]}; the file has "
                                  f"{item.rows - item.bad} + {item.bad}")  # fmt: skip
        found.lost += abs(item.rows - once) + twice
        found.rows += min(once, item.rows)
    return found


@dataclass(frozen=True)
class RegistryState:
    champion: str | None
    statuses: dict[str, str]
    events: list[tuple[int, str, str | None, str | None]]  # (id, action, from_tag, to_tag)


def registry_state(project: Project) -> RegistryState:
    """The registry's record of the project's model name."""
    path, name = project.home / "models" / "registry.sqlite", project.name
    if not path.exists():
        return RegistryState(None, {}, [])
    with contextlib.closing(sqlite3.connect(path, timeout=60)) as conn:
        champions = conn.execute("SELECT tag FROM champions WHERE name = ?", (name,)).fetchall()
        statuses = dict(conn.execute("SELECT tag, status FROM versions WHERE name = ?", (name,)).fetchall())
        events = conn.execute("SELECT id, action, from_tag, to_tag FROM events WHERE name = ? ORDER BY id",
                              (name,)).fetchall()  # fmt: skip
    if len(champions) > 1:  # the primary key forbids it; a check that cannot see it would be blind
        return RegistryState("|".join(t for (t,) in champions), statuses, events)
    return RegistryState(champions[0][0] if champions else None, statuses, events)


def registry_problems(state: RegistryState, allowed: set[str | None]) -> list[str]:
    """One champion or none, the one allowed; statuses and the promotion log agreeing with it."""
    problems = []
    if state.champion not in allowed:
        problems.append(f"champion {state.champion}, expected one of {sorted(map(str, allowed))}")
    marked_champion = sorted(t for t, s in state.statuses.items() if s == "champion")
    if marked_champion != ([state.champion] if state.champion else []):
        problems.append(f"versions marked champion {marked_champion}, champion row {state.champion}")
    changes = [e for e in state.events if e[1] in ("promote", "rollback")]
    if changes and changes[-1][3] != state.champion:
        problems.append(f"the log's last promotion is to {changes[-1][3]}, the champion is {state.champion}")
    for before, after in itertools.pairwise(changes):
        if after[2] != before[3]:
            problems.append(f"promotion log broken: {after[3]} replaced {after[2]}, but {before[3]} was champion")
            break
    return problems


def bundle_folders(project: Project) -> set[str]:
    folder = project.home / "bentoml" / "models" / project.name
    return {p.name for p in folder.iterdir() if p.is_dir()} if folder.is_dir() else set()


# ------------------------------------------------------------------------------------------------------------- bench


class Bench:
    """The work folder, the environment every process gets, the Prefect server, and the findings so far."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.token = uuid.uuid4().hex
        self.work = Path(tempfile.mkdtemp(prefix="mlcycle-faults-", dir=args.work))
        self.logs = self.work / "logs"
        self.logs.mkdir()
        self.env = {**os.environ, **TELEMETRY_OFF, MARK: self.token, "PREFECT_HOME": str(self.work / "prefect")}
        for name in ("MLCYCLE_HOME", "BENTOML_HOME", "PREFECT_API_URL", "RAY_ADDRESS", "MLCYCLE_MODEL_TAG"):
            self.env.pop(name, None)
        self.main = Project(self.work / "project", self.work / "home", self.rng)
        self.prefect = PrefectServer(self)
        self.findings: list[Finding] = []
        self.mounts: list[Path] = []
        self._log_count = 0

    def next_log(self) -> str:
        self._log_count += 1
        return f"{self._log_count:03d}"

    def start(self) -> None:
        self.prefect.start()
        self.env["PREFECT_API_URL"] = self.prefect.url

    def train(self, project: Project, label: str, extra: list[str] | None = None) -> Run:
        return Run(self, ["train", "--config", f"configs/{project.name}.yaml", *(extra or [])], project, label)

    def record(self, finding: Finding) -> None:
        self.findings.append(finding)
        print(finding.line(), flush=True)

    def close(self) -> None:
        self.prefect.kill()
        kill_all(marked(MARK, self.token))
        for mount in self.mounts:
            subprocess.run(["umount", "-l", str(mount)], capture_output=True, check=False)
        if self.args.keep:
            print(f"work folder kept: {self.work}", flush=True)
        else:
            shutil.rmtree(self.work, ignore_errors=True)

    def summary(self) -> str:
        f = self.findings
        injected, lost = sum(x.injected_count for x in f), sum(x.rows_lost for x in f)
        wrong, stuck = sum(x.champions_wrong for x in f), sum(x.not_resumable for x in f)
        failed = sum(x.requests_failed for x in f)
        return (f"faults: {injected} injected, rows lost {lost}, champions wrong {wrong}, runs not resumable {stuck}, "
                f"requests failed during reload {failed}")  # fmt: skip


def rerun_and_check(bench: Bench, project: Project, finding: Finding, label: str, extra: list[str] | None = None,
                    expect_champion_before: str | None = None) -> Run:  # fmt: skip
    """The same command again: it must end with 0 or 3, leave every input row accepted or quarantined exactly once,
    and leave the champion its decision says (its own model when 0, the one before it when 3)."""
    before = registry_state(project).champion if expect_champion_before is None else expect_champion_before
    again = bench.train(project, label, extra)
    code = again.finish()
    books = accounting(project, complete=True)
    state = registry_state(project)
    finding.rows_lost += books.lost
    finding.problems += books.problems
    if code not in (0, 3) or books.lost or books.problems:
        finding.not_resumable += 1
        finding.problems.append(f"re-run ended with {code} in {again.seconds:.0f} s: {again.error()}"
                                if code not in (0, 3) else "re-run finished with wrong accounting")  # fmt: skip
    if books.pending:
        finding.problems.append(f"{books.pending} batch(es) still pending after the re-run")
    expected = again.tag if code == 0 else before
    problems = registry_problems(state, {expected}) if code in (0, 3) else registry_problems(state, {before, again.tag})
    if problems:
        finding.champions_wrong += 1
        finding.problems += problems
    finding.checked += (f"; re-run exit {code} in {again.seconds:.0f} s, {books.rows:,} input rows each accepted or "
                        f"quarantined once, champion {short(state.champion)}")  # fmt: skip
    return again


def short(tag: str | None) -> str:
    return "none" if tag is None else tag.split(":")[-1][:8]


def after_fault_checks(project: Project, finding: Finding, allowed: set[str | None]) -> RegistryState:
    """Right after a fault: accepted batches complete and unique, the registry's champion one of `allowed`."""
    books = accounting(project, complete=False)
    finding.rows_lost += books.lost
    finding.problems += [f"after the fault: {p}" for p in books.problems]
    state = registry_state(project)
    problems = registry_problems(state, allowed)
    if problems:
        finding.champions_wrong += 1
        finding.problems += [f"after the fault: {p}" for p in problems]
    return state


# ------------------------------------------------------------------------------------------------------------ kills

# A phase starts at the first line holding its text; a kill hits the last phase started before it.
PHASES = [("ingest", "Beginning subflow run"), ("prepare", "Task run 'scan_snapshot"), ("search", "tuning: "),
          ("final fit", "Task run 'tune_xgboost"),
          ("evaluate", "Task run 'fit_final_model"), ("bundle save", "Task run 'evaluate_model"),
          ("report", "Task run 'save_bundle"), ("gate", "Task run 'publish_reports"),
          ("promotion", "Task run 'gate_challenger"), ("after the decision", "Task run 'record_decision")]  # fmt: skip
TARGETS = ["ingest", "ingest commit", "search", "final fit", "bundle save", "gate", "promotion"]


def phase_hit(run: Run, killed_at: float) -> str:
    hit = "start-up"
    for phase, text in PHASES:
        seen = run.seen(text)
        if seen is not None and seen <= killed_at:
            hit = phase
    return hit


def ingest_state(project: Project, item: InputFile) -> str:
    """Where a kill left the new file's batch: before its claim, claimed, its files in place, or accepted."""
    from mlcycle.tasks.ingest.store import list_batches

    store = project.store
    mine = [b for b in list_batches(store) if b.content_hash == item.sha256]
    if not mine:
        raw = any(store.raw_dir.glob(f"{item.sha256}*"))
        return "raw copy kept, not claimed" if raw else "before the raw copy"
    batch = mine[-1]
    if batch.status == "accepted":
        return "batch committed"
    if batch.status == "rejected":
        return "batch recorded rejected" + (" (an internal failure)" if batch.failed_internally else "")
    staged = any(store.curated_dir.glob(f".staging-batch={batch.batch_id}-*"))
    placed = store.curated_file(batch.batch_id).parent.exists()
    if placed:
        return "curated partition in place, registry still pending (inside the commit)"
    return "claimed, rows being written to staging" if staged else "claimed, nothing written yet"


def new_bundle_with(project: Project, before: set[str], name: str) -> Callable[[], bool]:
    def ready() -> bool:
        return any((project.home / "bentoml" / "models" / project.name / v / name).exists()
                   for v in bundle_folders(project) - before)  # fmt: skip

    return ready


def kill_fault(bench: Bench, number: int, target: str) -> Finding | None:
    """One kill of `mlcycle train` aimed at `target`, the checks after it, the re-run; None when the run ended
    before the kill could land (nothing was injected).

    A kill aimed at the gate or the promotion trains a model name of its own on every file so far: the first model
    of a name is promoted (against the trivial baseline, after a smoke test), so the kill lands in a real promotion;
    a later model of the main name is rejected, its champion holding up within the bootstrap interval."""
    # a larger file for the commit: its staged parts exist long enough (tens of ms) to be seen and killed in
    item = bench.main.add_file(n=20_000, bad=20) if target == "ingest commit" else bench.main.add_file()
    project = bench.main.dataset(f"{NAME}-p{number:02d}") if target in ("gate", "promotion") else bench.main
    before = registry_state(project)
    folders_before = bundle_folders(project)
    store = project.store
    run = bench.train(project, f"kill-{number:02d}-{target.replace(' ', '-')}")
    rng = bench.rng
    if target == "ingest":
        ready, delay = (lambda: any(store.raw_dir.glob(f"{item.sha256}*"))), rng.uniform(0, 0.3)
    elif target == "ingest commit":  # the staged parts written, then renamed into place, then the registry's commit
        ready, delay = (lambda: any(store.curated_dir.glob(".staging-batch=*"))), rng.uniform(0, 0.03)
    elif target == "search":
        ready, delay = (lambda: run.seen("tuning: ") is not None), rng.uniform(0.2, 3.0)
    elif target == "final fit":
        ready, delay = (lambda: run.seen("Task run 'tune_xgboost") is not None), rng.uniform(0, 0.5)
    elif target == "bundle save":
        ready, delay = (lambda: run.seen("Task run 'evaluate_model") is not None), rng.uniform(0, 0.6)
    elif target == "gate":
        ready, delay = (lambda: run.seen("Task run 'publish_reports") is not None), rng.uniform(0, 8.0)
    else:  # promotion: gate.json is written just before the registry's transaction
        ready, delay = new_bundle_with(project, folders_before, "gate.json"), rng.uniform(0, 0.03)
    landed = run.wait_for(ready, poll_s=0.002 if target.startswith("ingest") else 0.005)
    if landed:
        time.sleep(delay)
    if not landed or run.proc.poll() is not None:
        code = run.finish()
        finding = Finding(f"kill {number:02d}", f"aimed at {target}: missed", "none: the run ended first",
                          f"exit {code}", injected_count=0, seconds=run.seconds)  # fmt: skip
        if code not in (0, 3):
            finding.problems.append(f"the run itself failed ({code}): {run.error()}")
        return finding if finding.problems else None
    run.kill()
    assert run.killed_at is not None
    hit = phase_hit(run, run.killed_at)
    if hit == "ingest" or target.startswith("ingest"):
        hit = f"{hit}: {ingest_state(project, item)}"
    new = bundle_folders(project) - folders_before
    if hit in ("bundle save", "report", "gate", "promotion", "after the decision"):
        state = registry_state(project)
        registered = [v for v in new if f"{project.name}:{v}" in state.statuses]
        hit += f": bundle {'registered' if registered else 'in the store, unregistered' if new else 'not in the store'}"
        if registered and state.champion == f"{project.name}:{registered[0]}":
            hit += ", promoted"
    into = run.killed_at - run.started
    finding = Finding(f"kill {number:02d}", hit, f"SIGKILL of the run's process tree {into:.1f} s into the run (aimed "
                      f"at {target})", "after the kill: accepted batches complete, champion the one before or this "
                      "run's")  # fmt: skip
    after = after_fault_checks(project, finding, {before.champion, *(f"{project.name}:{v}" for v in new)})
    rerun_and_check(bench, project, finding, f"kill-{number:02d}-rerun", expect_champion_before=after.champion)
    finding.seconds = run.seconds
    return finding


def kills(bench: Bench, count: int) -> None:
    first = ["ingest commit", "promotion", "search", "bundle save", "final fit", "gate", "ingest"]
    targets = [TARGETS[i % len(TARGETS)] for i in range(count)] if count >= len(TARGETS) else first[:count]
    number = 0
    for target in targets:
        for _ in range(3):  # a kill that missed (the run ended first) is aimed again, with a new delay
            number += 1
            finding = kill_fault(bench, number, target)
            if finding is None:
                continue
            bench.record(finding)
            if finding.injected_count:
                break


# ------------------------------------------------------------------------------------------------------ other faults


def baseline(bench: Bench) -> None:
    """A clean run first, so that the kills have a champion to keep or replace."""
    bench.main.add_file()
    bench.main.add_file()
    run = bench.train(bench.main, "baseline")
    code = run.finish()
    if code not in (0, 3):
        raise RuntimeError(f"the baseline run failed ({code}): {run.error()}; see {run.log_path}")
    champion = registry_state(bench.main).champion
    print(f"baseline run: exit {code} in {run.seconds:.0f} s, champion {short(champion)}", flush=True)


def concurrent_trains(bench: Bench) -> Finding:
    """Two `mlcycle train` of the same name at once, after a new file landed: both must finish, both models be
    registered with one decision each in one order, one champion."""
    project = bench.main
    project.add_file()
    before = registry_state(project)
    runs = [bench.train(project, f"concurrent-{i}") for i in (1, 2)]
    codes = [r.finish() for r in runs]
    finding = Finding("two trains at once", "same name, same config, same new file",
                      "two `mlcycle train` started together", "")  # fmt: skip
    finding.seconds = max(r.seconds for r in runs)
    tags = [r.tag for r in runs]
    state = registry_state(project)
    books = accounting(project, complete=True)
    finding.rows_lost += books.lost
    finding.problems += books.problems
    for run, code in zip(runs, codes, strict=True):
        if code not in (0, 3):
            finding.not_resumable += 1
            finding.problems.append(f"{run.label} ended with {code}: {run.error()}")
    decided = {t: [e for e in state.events if e[3] == t and e[1] in ("promote", "reject", "shadow")] for t in tags if t}
    if any(t is None or t not in state.statuses for t in tags):
        finding.problems.append(f"not both models registered: {tags}")
    if any(len(d) != 1 for d in decided.values()):
        finding.problems.append(f"decisions per model: { {short(t): len(d) for t, d in decided.items()} }")
    problems = registry_problems(state, {before.champion, *tags})
    if problems:
        finding.champions_wrong += 1
        finding.problems += problems
    order = " then ".join(f"{short(e[3])} {e[1]}" for e in sorted(e for d in decided.values() for e in d))
    finding.checked = (f"exits {codes}, both registered, decisions in one order ({order}), champion "
                       f"{short(state.champion)}, {books.rows:,} input rows each accepted or quarantined "
                       "once")  # fmt: skip
    return finding


def ray_worker_killed(bench: Bench) -> Finding:
    """A Ray worker SIGKILLed while it runs a trial; trials long enough to be killed in the middle."""
    project = bench.main
    project.add_file()
    extra = ["--set", "tune.max_rounds=3000", "--set", "tune.early_stopping_rounds=3000", "--set",
             "tune.grace_progress=1000", "--set", "tune.report_every=50"]  # fmt: skip
    before = registry_state(project)
    run = bench.train(project, "ray-worker", extra)
    finding = Finding("Ray worker killed", "search", "", "")
    victims: list[psutil.Process] = []

    def trial_worker() -> bool:
        if run.seen("tuning: ") is None:
            return False
        for proc in marked(RUN_MARK, run.run_id):
            with contextlib.suppress(psutil.Error):
                title = " ".join(proc.cmdline())
                if title.startswith("ray::") and ("run_trial" in title or "ImplicitFunc" in title or "train" in title):
                    victims.append(proc)
                    return True
        return False

    if not run.wait_for(trial_worker, poll_s=0.2) or run.proc.poll() is not None:
        code = run.finish()
        finding.injected, finding.injected_count = f"none: no trial worker found before the run ended ({code})", 0
        finding.problems.append("the fault could not be injected")
        return finding
    time.sleep(bench.rng.uniform(0.5, 2.0))
    title = " ".join(victims[0].cmdline())[:60]
    kill_all(victims[:1])
    finding.injected = (
        f"SIGKILL of the trial's Ray worker `{title}` {time.monotonic() - run.started:.0f} s into the run"
    )
    code = run.finish()
    finding.seconds = run.seconds
    if code in (0, 3):
        books = accounting(project, complete=True)
        finding.rows_lost += books.lost
        finding.problems += books.problems
        state = registry_state(project)
        problems = registry_problems(state, {run.tag if code == 0 else before.champion})
        if problems:
            finding.champions_wrong += 1
            finding.problems += problems
        errored = "an errored trial" if "error" in (json.dumps(trials_of(run)) or "") else "no errored trial"
        finding.checked = f"the run went on and ended with {code} ({errored}), champion {short(state.champion)}"
        return finding
    finding.checked = f"the run failed with {code}: {run.error()}"
    after_fault_checks(project, finding, {before.champion})
    rerun_and_check(bench, project, finding, "ray-worker-rerun", extra)
    return finding


def trials_of(run: Run) -> list[dict]:  # type: ignore[type-arg]
    """The run's trials.json, when it wrote its report."""
    found = re.findall(r"report: (\S+report\.html)", run.output)
    if not found:
        return []
    path = Path(found[-1]).parent / "trials.json"
    return list(json.loads(path.read_text()).get("trials", [])) if path.exists() else []


def prefect_api_down(bench: Bench) -> Finding:
    """The Prefect server the run talks to SIGKILLed during the search, started again a while later."""
    project = bench.main
    project.add_file()
    before = registry_state(project)
    run = bench.train(project, "prefect-down")
    finding = Finding("Prefect API gone", "search", "", "")
    if not run.wait_for(lambda: run.seen("tuning: ") is not None) or run.proc.poll() is not None:
        code = run.finish()
        finding.injected, finding.injected_count = f"none: the run ended first ({code})", 0
        finding.problems.append("the fault could not be injected")
        return finding
    bench.prefect.kill()
    finding.injected = f"SIGKILL of the Prefect server {time.monotonic() - run.started:.0f} s into the run"
    code = run.finish(timeout_s=RUN_TIMEOUT_S)
    finding.seconds = run.seconds
    bench.prefect.start()  # the same database: the API is back for the re-run and the faults after this one
    bench.env["PREFECT_API_URL"] = bench.prefect.url
    if code is None:
        finding.problems.append(f"the run did not end within {RUN_TIMEOUT_S:.0f} s of losing its API (killed)")
    outcome = f"the run ended with {code} in {run.seconds:.0f} s" + ("" if code in (0, 3) else f": {run.error()}")
    finding.checked = outcome
    after_fault_checks(project, finding, {before.champion, run.tag})
    if code not in (0, 3):
        rerun_and_check(bench, project, finding, "prefect-down-rerun")
    else:
        books = accounting(project, complete=True)
        finding.rows_lost += books.lost
        finding.problems += books.problems
    return finding


def truncated_part(bench: Bench) -> Finding:
    """A curated Parquet part cut to half its size on disk: training must refuse it, naming the file, and train
    nothing on what is left; with the file restored, the same command finishes."""
    from mlcycle.tasks.ingest.store import list_batches

    project = bench.main
    accepted = list_batches(project.store, status="accepted")
    victim = project.store.curated_file(accepted[-1].batch_id)
    backup = bench.work / "part-backup.parquet"
    shutil.copy2(victim, backup)
    size = victim.stat().st_size
    os.chmod(victim, 0o644)
    with victim.open("r+b") as fh:
        fh.truncate(size // 2)
    before = registry_state(project)
    run = bench.train(project, "truncated-part")
    code = run.finish()
    finding = Finding("curated part truncated", f"batch {accepted[-1].batch_id}",
                      f"{victim.relative_to(project.home)} cut from {size:,} to {size // 2:,} bytes", "")  # fmt: skip
    finding.seconds = run.seconds
    after = registry_state(project)
    named = victim.name in run.output and str(victim.parent.name) in run.output
    if code in (0, 3):
        finding.problems.append(f"training ran on a truncated part and ended with {code}")
        finding.rows_lost += accepted[-1].rows_accepted
    elif not named:
        finding.problems.append(f"the error does not name the file: {run.error()}")
    if set(after.statuses) != set(before.statuses):
        finding.problems.append("a model was registered from the damaged store")
    problems = registry_problems(after, {before.champion})
    if problems:
        finding.champions_wrong += 1
        finding.problems += problems
    finding.checked = f"the run ended with {code}: {run.error()[:160]}; no model saved, champion unchanged"
    shutil.copy2(backup, victim)
    rerun_and_check(bench, project, finding, "truncated-part-rerun")
    finding.checked = finding.checked.replace("; re-run", "; file restored, re-run", 1)
    return finding


def landing_partial(bench: Bench) -> Finding:
    """A CSV written into a landing folder a few lines at a time while `mlcycle ingest` runs: it is left for the
    next run while it grows; once complete, the next run ingests all of it, exactly once."""
    from mlcycle.tasks.ingest.store import DatasetStore, list_batches, read_curated_batch, read_ledger

    project = bench.main
    landing = bench.work / "landing"
    landing.mkdir(exist_ok=True)
    name = f"{NAME}_landing"
    source = LANDING_SOURCE.format(path=landing)
    (project.root / "configs" / f"{name}.yaml").write_text(CONFIG.format(name=name, source=source))
    rows = project.rows(400, 4)
    target = landing / "growing.csv"
    chunks = 60 if not bench.args.small else 30
    stop = threading.Event()

    def writer() -> None:
        with target.open("w") as fh:
            fh.write("age,income,region,default\n")
            step = -(-len(rows) // chunks)
            for i in range(0, len(rows), step):
                if stop.is_set():
                    return
                fh.write("\n".join(rows[i : i + step]) + "\n")
                fh.flush()
                time.sleep(0.5)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    time.sleep(1.0)
    first = Run(bench, ["ingest", "--config", f"configs/{name}.yaml"], project, "landing-while-written")
    first_code = first.finish()
    written_while = thread.is_alive()
    thread.join(timeout=120)
    stop.set()
    time.sleep(2.5)  # settle_s: the complete file is unchanged across two looks
    store = DatasetStore.for_dataset(name, project.home)
    second = Run(bench, ["ingest", "--config", f"configs/{name}.yaml"], project, "landing-complete")
    second_code = second.finish()
    finding = Finding("landing file still being written", "landing folder, settle_s 2",
                      f"a 400-row CSV written in {chunks} pieces 0.5 s apart while `mlcycle ingest` "
                      "ran", "")  # fmt: skip
    finding.seconds = first.seconds + second.seconds
    content = hashlib.sha256(target.read_bytes()).hexdigest()
    batches = [b for b in list_batches(store) if b.status == "accepted"]
    whole = [b for b in batches if b.content_hash == content]
    partial = [b for b in batches if b.content_hash != content]
    if first_code != 0 or second_code != 0:
        finding.problems.append(f"ingest exits {first_code}, {second_code}: {first.error()} / {second.error()}")
    if partial:
        finding.rows_lost += sum(b.rows_read for b in partial)
        finding.problems.append(f"{len(partial)} batch(es) of the file taken while it was written")
    if len(whole) != 1:
        finding.rows_lost += 400 if not whole else 400 * (len(whole) - 1)
        finding.problems.append(f"the complete file accepted {len(whole)} times")
    else:
        held = (
            len(read_curated_batch(store, whole[0].batch_id)) + read_ledger(store, [whole[0].batch_id])["row"].nunique()
        )
        finding.rows_lost += abs(400 - held)
    left = "still being written; left for the next run" in first.output
    finding.checked = (f"first ingest (exit {first_code}) {'left it for the next run' if left else 'saw no file ready'}"
                       f"{'' if written_while else ' (the writer had finished first)'}; second ingest (exit "
                       f"{second_code}) accepted it once: {whole[0].rows_accepted if len(whole) == 1 else '?'} + "
                       f"{whole[0].rows_quarantined if len(whole) == 1 else '?'} quarantined of 400")  # fmt: skip
    return finding


@contextlib.contextmanager
def tmpfs_home(bench: Bench, label: str) -> Iterator[Path | None]:
    """A 40 MB tmpfs for a home of its own; None (and why, on stdout) where mounting is not permitted."""
    mount = bench.work / f"tmpfs-{label}"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(mount)], capture_output=True,
                          text=True, check=False)  # fmt: skip
    if done.returncode != 0:
        print(f"disk full ({label}): mount -t tmpfs not permitted here ({done.stderr.strip()[:120]}): skipped",
              flush=True)  # fmt: skip
        yield None
        return
    bench.mounts.append(mount)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, check=False)
        bench.mounts.remove(mount)


def fill(mount: Path, leave: int) -> Path:
    """A file that takes all the filesystem's free space but `leave` bytes."""
    filler = mount / f"filler-{uuid.uuid4().hex[:6]}"
    free = os.statvfs(mount).f_bavail * os.statvfs(mount).f_frsize
    size = max(0, free - leave)
    if size:
        subprocess.run(["fallocate", "-l", str(size), str(filler)], check=True)
    return filler


def clear_error(run: Run) -> bool:
    return any(text in run.output for text in ("No space left on device", "database or disk is full", "Errno 28"))


def disk_full_ingest(bench: Bench) -> Finding | None:
    with tmpfs_home(bench, "ingest") as mount:
        if mount is None:
            return None
        project = Project(bench.work / "project-disk-ingest", mount / "home", bench.rng)
        project.add_file()
        big = project.add_file(n=30_000, bad=30)
        (project.home / "bentoml").mkdir(parents=True)
        raw = big.path.stat().st_size
        leave = raw + bench.rng.randint(150_000, 450_000)  # the raw copy fits, the curated rows and ledger may not
        filler = fill(mount, leave)
        run = bench.train(project, "disk-full-ingest")
        code = run.finish()
        finding = Finding("disk full during ingest", "", f"MLCYCLE_HOME on a 40 MB tmpfs with {leave / 1e3:.0f} kB "
                          f"free for a {raw / 1e6:.1f} MB file", "")  # fmt: skip
        finding.seconds = run.seconds
        filler.unlink()  # what the run left is checked with room to read it (SQLite's WAL needs some)
        finding.where = "ingest: " + ingest_state(project, big)
        if code in (0, 3):
            finding.problems.append(f"the run did not hit the full disk and ended with {code}")
        elif not clear_error(run):
            finding.problems.append(f"the error does not say the disk is full: {run.error()}")
        after_fault_checks(project, finding, {None})
        finding.checked = f"the run ended with {code}: {run.error()[:150]}; accepted batches complete"
        rerun_and_check(bench, project, finding, "disk-full-ingest-rerun")
        finding.checked = finding.checked.replace("; re-run", "; space freed, re-run", 1)
        return finding


def disk_full_bundle(bench: Bench) -> Finding | None:
    with tmpfs_home(bench, "bundle") as mount:
        if mount is None:
            return None
        project = Project(bench.work / "project-disk-bundle", mount / "home", bench.rng)
        project.add_file()
        project.add_file()
        first = bench.train(project, "disk-full-bundle-first")
        if first.finish() not in (0, 3):
            finding = Finding("disk full during the bundle save", "setup", "none", "", injected_count=0)
            finding.problems.append(f"the first run on the tmpfs failed: {first.error()}")
            return finding
        project.add_file()
        before = registry_state(project)
        folders = bundle_folders(project)
        run = bench.train(project, "disk-full-bundle")
        finding = Finding("disk full during the bundle save", "bundle save", "", "")
        if not run.wait_for(lambda: run.seen("Task run 'fit_final_model") is not None) or run.proc.poll() is not None:
            finding.injected, finding.injected_count = f"none: the run ended first ({run.finish()})", 0
            finding.problems.append("the fault could not be injected")
            return finding
        filler = fill(mount, 0)  # evaluation writes nothing: the next write under the home is the bundle's
        finding.injected = f"MLCYCLE_HOME's 40 MB tmpfs filled {time.monotonic() - run.started:.0f} s into the run, " \
                           "as the final fit ended"  # fmt: skip
        code = run.finish()
        finding.seconds = run.seconds
        filler.unlink()  # what the run left is checked with room to read it (SQLite's WAL needs some)
        after = after_fault_checks(project, finding, {before.champion})
        new = bundle_folders(project) - folders
        if code in (0, 3):
            finding.problems.append(f"the run ended with {code} on a full disk")
        elif not clear_error(run):
            finding.problems.append(f"the error does not say the disk is full: {run.error()}")
        if set(after.statuses) != set(before.statuses):
            finding.problems.append("a version was registered from the failed save")
        latest = project.home / "bentoml" / "models" / project.name / "latest"
        if latest.exists() and not (latest.parent / latest.read_text().strip() / "model.yaml").exists():
            finding.problems.append("the model store's `latest` names a half-written model")
        finding.checked = (f"the run ended with {code}: {run.error()[:150]}; no version registered, "
                           f"{len(new)} model folder(s) left in the store, none registered or `latest`")  # fmt: skip
        rerun_and_check(bench, project, finding, "disk-full-bundle-rerun")
        finding.checked = finding.checked.replace("; re-run", "; space freed, re-run", 1)
        return finding


def reload_under_load(bench: Bench) -> Finding:
    """`bentoml serve` of the champion by name, 32 clients sending single-record requests; meanwhile another version
    becomes champion and `/reload` is called. Every request must be answered 200."""
    from mlcycle.tasks import registry
    from mlcycle.tasks.registry.smoke import serving_model

    project = bench.main
    champion = registry.champion(NAME)
    assert champion is not None, "no champion to serve"
    target = other_version(champion)
    seconds = 6.0 if bench.args.small else 20.0
    reloads = 1 if bench.args.small else 3
    finding = Finding("reload under load", f"{short(champion)} → {short(target)}", "", "")
    started = time.monotonic()
    with serving_model(NAME, timeout_s=180, cwd=project.root) as url:
        load = Load(url, clients=32, seconds=seconds)
        thread = threading.Thread(target=load.run, daemon=True)
        thread.start()
        answers = []
        for i in range(reloads):
            time.sleep(seconds / (reloads + 1))
            to = target if i % 2 == 0 else champion
            registry.promote(to, reason="fault suite: a new champion under load")
            answers.append(reload(url))
        thread.join(timeout=seconds + 120)
    registry.promote(champion, reason="fault suite: the champion from before the reload fault")
    finding.seconds = time.monotonic() - started
    finding.requests_failed = load.failed
    finding.injected = (f"{reloads} promotion(s) and POST /reload while 32 clients sent single-record requests for "
                        f"{seconds:.0f} s")  # fmt: skip
    served = ", ".join(f"{short(t)} {n:,}" for t, n in sorted(load.models.items()))
    finding.checked = (f"{load.ok:,} of {load.sent:,} requests answered 200 (served by {served}), /reload answered "
                       f"{answers}")  # fmt: skip
    if load.errors:
        finding.problems.append(f"first failures: {load.errors[:3]}")
    if len(load.models) < 2:
        finding.problems.append("the service never answered with the new champion")
    return finding


def other_version(champion: str) -> str:
    """A registered version other than the champion whose files are whole; a copy of the champion saved anew when
    there is none."""
    from mlcycle.tasks import registry
    from mlcycle.tasks.registry.bundle import load_bundle, save_bundle

    for version in registry.versions(NAME):
        if version.tag != champion:
            with contextlib.suppress(Exception):
                load_bundle(version.tag)
                return version.tag
    bundle = load_bundle(champion)
    lineage = {k: v for k, v in bundle.lineage.items() if k not in ("files", "classes")}
    return save_bundle(bundle.booster, bundle.preprocessor, bundle.config, bundle.classes, bundle.metrics, lineage)


def reload(url: str) -> int:
    import httpx

    return httpx.post(f"{url}/reload", json={}, timeout=120).status_code


class Load:
    """`clients` keep-alive clients posting one record each, for `seconds` (and at most 200,000 requests)."""

    def __init__(self, url: str, clients: int, seconds: float) -> None:
        self.url, self.clients, self.seconds = url, clients, seconds
        self.sent = self.ok = self.failed = 0
        self.errors: list[str] = []
        self.models: dict[str, int] = {}

    def run(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        import httpx

        deadline = time.monotonic() + self.seconds
        body = {"records": [RECORD]}
        async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=self.clients)) as client:

            async def one_client() -> None:
                while time.monotonic() < deadline and self.sent < 200_000:
                    self.sent += 1
                    try:
                        response = await client.post(f"{self.url}/predict", json=body)
                    except httpx.HTTPError as exc:
                        self.failed += 1
                        self.errors.append(f"{type(exc).__name__}: {exc}"[:120])
                        continue
                    if response.status_code == 200:
                        self.ok += 1
                        model = str(response.json().get("model"))
                        self.models[model] = self.models.get(model, 0) + 1
                    else:
                        self.failed += 1
                        self.errors.append(f"{response.status_code}: {response.text[:100]}")

            await asyncio.gather(*(one_client() for _ in range(self.clients)))


# -------------------------------------------------------------------------------------------------------------- main

FAULTS = ["kill", "concurrent", "ray-worker", "prefect-api", "truncated", "landing", "reload", "disk-ingest",
          "disk-bundle"]  # fmt: skip
SMALL = ["kill", "landing", "reload"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="one kill, the landing file and the reload")
    parser.add_argument("--kills", type=int, default=None, help="kills of `mlcycle train` (20; 1 with --small)")
    parser.add_argument("--seed", type=int, default=20261207)
    parser.add_argument("--keep", action="store_true", help="keep the work folder and the runs' logs")
    parser.add_argument("--work", type=Path, default=None, help="where the work folder goes (default: the temp dir)")
    parser.add_argument("--only", default=None, help=f"comma-separated, of: {', '.join(FAULTS)}")
    args = parser.parse_args()
    chosen = args.only.split(",") if args.only else (SMALL if args.small else FAULTS)
    unknown = set(chosen) - set(FAULTS)
    if unknown:
        parser.error(f"unknown faults: {sorted(unknown)}")
    kill_count = args.kills if args.kills is not None else (1 if args.small else 20)

    bench = Bench(args)
    # This process promotes and serves in the main home (the reload fault): before BentoML is imported.
    os.environ.update({**TELEMETRY_OFF, "MLCYCLE_HOME": str(bench.main.home),
                       "BENTOML_HOME": str(bench.main.home / "bentoml"), MARK: bench.token})  # fmt: skip
    started = time.monotonic()
    try:
        bench.start()
        os.environ["PREFECT_API_URL"] = bench.prefect.url
        print(f"work folder {bench.work}; Prefect server {bench.prefect.url}; load {os.getloadavg()[0]:.1f}",
              flush=True)  # fmt: skip
        on_main = set(chosen) - {"landing", "disk-ingest", "disk-bundle"}
        if on_main and not (args.small and chosen[0] == "kill"):
            baseline(bench)  # in the small mode the kill's re-run makes the first champion
        steps: dict[str, Callable[[], Finding | None]] = {
            "concurrent": lambda: concurrent_trains(bench), "ray-worker": lambda: ray_worker_killed(bench),
            "prefect-api": lambda: prefect_api_down(bench), "truncated": lambda: truncated_part(bench),
            "landing": lambda: landing_partial(bench), "reload": lambda: reload_under_load(bench),
            "disk-ingest": lambda: disk_full_ingest(bench), "disk-bundle": lambda: disk_full_bundle(bench),
        }  # fmt: skip
        for name in chosen:
            if name == "kill":
                kills(bench, kill_count)
                continue
            finding = steps[name]()
            if finding is not None:
                bench.record(finding)
    finally:
        bench.close()
    print(f"run time {time.monotonic() - started:.0f} s, load {os.getloadavg()[0]:.1f}", flush=True)
    print(bench.summary(), flush=True)


if __name__ == "__main__":
    main()
