"""Iterating on a model: how long `mlcycle train` takes again when little or nothing changed.

In a throw-away project folder (its own MLCYCLE_HOME and Prefect home), Adult is ingested first (untimed: the
download of the demo wheel and the Prefect database's creation are not what this measures), then:

- first: `mlcycle train --config adult --set tune.time_budget_s=60`, the README's run (W);
- (a) unchanged: the same command again (X);
- (b) gate-only: the same with only a gate budget changed, `--set gate.max_size_mb=49` (Y);
- (c) new data: one more row landed (`mlcycle ingest --config adult one-more.data`, untimed), then the same
  command (Z): new data is new data, so its search runs again.

Each is timed from the command's start to its exit, as a user waits for it. Each run's `--json` answer says which
steps it reused; the benchmark stops with an error if (a) or (b) trained anything, or (c) reused its search. Last
line: `iterate: unchanged X s, gate-only Y s, new data Z s, first W s`. Targets: X ≤ 0.15·W, Y ≤ 0.3·W.

    flock /tmp/mlcycle-bench.lock .venv/bin/python benchmarks/iterate.py
    .venv/bin/python benchmarks/iterate.py --small   # 1,500 rows per file, a 2-trial search (the suite runs it)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SEARCH = ["--set", "tune.time_budget_s=60"]
SMALL = {"source.sample_rows": 1500, "tune.num_samples": 2, "tune.time_budget_s": "null", "tune.max_rounds": 60,
         "tune.searcher": "random", "tune.early_stopping_rounds": 10, "gate.bootstrap_samples": 200}  # fmt: skip
ONE_MORE = "39, State-gov, 77516, Bachelors, 13, Never-married, Adm-clerical, Not-in-family, White, Male, 2174, 0, 40, "
ONE_MORE += "United-States, <=50K\n"


def mlcycle(args: list[str], project: Path, env: dict[str, str]) -> tuple[float, dict]:
    """Run `mlcycle ARGS --json` in the project folder: its wall time and its JSON answer (exit 0 or 3)."""
    command = [str(Path(sys.executable).parent / "mlcycle"), *args, "--json"]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode not in (0, 3):
        raise SystemExit(f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return seconds, json.loads(done.stdout[done.stdout.index("{") :])


def main() -> None:
    small = "--small" in sys.argv[1:]
    search = [arg for key, value in SMALL.items() for arg in ("--set", f"{key}={value}")] if small else SEARCH
    project = Path(tempfile.mkdtemp(prefix="mlcycle-bench-iterate-"))
    env = {**os.environ, "MLCYCLE_HOME": str(project / ".mlcycle"), "PREFECT_HOME": str(project / ".prefect"),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "BENTOML_DO_NOT_TRACK": "True", "RAY_USAGE_STATS_ENABLED": "0",
           "DO_NOT_TRACK": "1"}  # fmt: skip
    for name in ("BENTOML_HOME", "PREFECT_API_URL", "RAY_ADDRESS"):
        env.pop(name, None)
    try:
        measure(project, env, search)
    finally:
        shutil.rmtree(project, ignore_errors=True)


def measure(project: Path, env: dict[str, str], search: list[str]) -> None:
    train = ["train", "--config", "adult", *search]
    mlcycle(["ingest", "--config", "adult", *search], project, env)
    first_s, first = mlcycle(train, project, env)
    print(
        f"first       {first_s:6.1f} s  {first['tag']} ({first['decision']}), searched {first['tuning_seconds']:.0f} s"
    )
    same_s, same = mlcycle(train, project, env)
    gate_s, gate = mlcycle([*train, "--set", "gate.max_size_mb=49"], project, env)
    (project / "one-more.data").write_text(ONE_MORE)
    mlcycle(["ingest", "--config", "adult", *search, str(project / "one-more.data")], project, env)
    new_s, new = mlcycle(train, project, env)
    for label, seconds, answer in (("unchanged", same_s, same), ("gate-only", gate_s, gate), ("new data", new_s, new)):
        reused = ", ".join(f"{step} from run {run}" for step, run in answer["reused"].items()) or "nothing"
        print(f"{label:<11} {seconds:6.1f} s  {seconds / first_s:.2f} of the first; {answer['tag']} "
              f"({answer['decision']}), reused {reused}")  # fmt: skip
    if same["tag"] != first["tag"] or "model" not in same["reused"] or gate["tag"] != first["tag"]:
        raise SystemExit("an unchanged run or a gate-only change trained a new model")
    if "search" in new["reused"] or new["tag"] == first["tag"]:
        raise SystemExit("a run on new data reused the search")
    print(f"iterate: unchanged {same_s:.1f} s, gate-only {gate_s:.1f} s, new data {new_s:.1f} s, first {first_s:.1f} s")


if __name__ == "__main__":
    main()
