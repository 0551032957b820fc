"""Start mlcycle's own local Ray, wait until the workers Ray started with it have imported a trial's modules, run a
small search and print, as JSON, those workers' process ids and the process each trial ran in. Started as a
subprocess by test_tune.py: only a fresh Ray has its prestarted workers still unused (a search's trial actors take
them, and they end with it), and the test session's Ray has run searches before.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import ray

from mlcycle.schemas.config import TuneConfig
from mlcycle.tasks.train.boost import TrainingData
from mlcycle.tasks.train.tune import ensure_ray, tune_xgboost
from mlcycle.tasks.train.warm import warm_workers

REPORT = "REPORT "  # marked: Ray's raylet may print warnings to stdout after it


def processes() -> tuple[list[list[str]], dict[int, int]]:
    listing = subprocess.run(["ps", "-eo", "pid=,ppid=,args="], capture_output=True, text=True, check=True).stdout
    rows = [line.split(None, 2) for line in listing.splitlines()]
    return rows, {int(pid): int(ppid) for pid, ppid, *_ in rows}


def ours(pid: int, parent: dict[int, int]) -> bool:
    """Whether `pid` descends from this process (its Ray's processes do; the test session's own Ray runs alongside)."""
    while pid > 1:
        pid = parent.get(pid, 1)
        if pid == os.getpid():
            return True
    return False


def idle_warm_workers() -> list[int]:
    """This process's Ray's idle worker processes that have finished importing a trial's modules (tasks.train.warm)."""
    rows, parent = processes()
    warm = warm_workers(Path(ray._private.worker._global_node.get_logs_dir_path()))
    return [int(pid) for pid, _, *args in rows
            if int(pid) in warm and args and "ray::IDLE" in args[0] and ours(int(pid), parent)]  # fmt: skip


def main() -> None:
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    ensure_ray(None)
    cpus = int(ray.cluster_resources()["CPU"])
    deadline = time.monotonic() + 120
    while len(warm := idle_warm_workers()) < cpus and time.monotonic() < deadline:
        time.sleep(0.5)
    # Trials long enough (300 rounds, no early stop) that a trial whose actor waited for a cold worker would find
    # the first trial's process free first and run in it after it (Tune reuses actors): then fewer processes ran
    # trials than there are CPUs.
    rng = np.random.default_rng(0)
    x = pd.DataFrame({"a": rng.normal(size=4000), "b": rng.normal(size=4000), "c": rng.normal(size=4000)})
    y = (x["a"] - x["b"] + rng.normal(size=4000) > 0).to_numpy(dtype=float)
    settings = TuneConfig(num_samples=cpus, max_rounds=300, early_stopping_rounds=300, report_every=10,
                          grace_progress=1000, resume=False)  # fmt: skip
    with tempfile.TemporaryDirectory() as storage:
        result = tune_xgboost(TrainingData(x[:3000], y[:3000], x[3000:], y[3000:]), "binary", settings, seed=0,
                              storage=Path(storage), experiment="warm")  # fmt: skip
    rows, parent = processes()
    print(REPORT + json.dumps({"cpus": cpus, "warm": warm, "trial_pids": [t["pid"] for t in result.trials],
                               "processes": [" ".join(row)[:100] for row in rows if ours(int(row[0]), parent)]}))  # fmt: skip
    sys.stdout.flush()
    ray.shutdown()


if __name__ == "__main__":
    main()
