"""How long the quick `mlcycle` commands take, start to exit, as a user runs them.

In a throw-away MLCYCLE_HOME with one small real model (fitted on made-up rows, saved as training saves one), runs
`mlcycle --help`, `models list`, `models show <tag>` and `schema infer` on a 5-row CSV through the installed
`mlcycle` script, 7 times each, and prints the median wall time of each; the last line is the slowest median.
These commands import neither Prefect nor BentoML nor XGBoost (tests/test_cli.py checks that), which is where the
seconds went. Run: `flock /tmp/mlcycle-bench.lock .venv/bin/python benchmarks/cli.py`.
`--small` (the suite runs it): each command once instead of 7 times, in about 10 s.
The throw-away home is removed at the end.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REPEATS = 7


def median_s(cmd: list[str], env: dict[str, str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        times.append(time.perf_counter() - started)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(cmd[1:])} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return statistics.median(times)


def main() -> None:
    repeats = 1 if "--small" in sys.argv[1:] else REPEATS
    home = Path(tempfile.mkdtemp(prefix="mlcycle-bench-cli-"))
    try:
        measure(home, repeats)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def measure(home: Path, repeats: int) -> None:
    """The quick commands' medians in the throw-away `home`, printed."""
    os.environ.update({"MLCYCLE_HOME": str(home), "BENTOML_HOME": str(home / "bentoml")})
    from mlcycle.tasks.paths import configure_environment

    configure_environment()
    sys.path.insert(0, str(ROOT))
    from tests.service_models import save_small_model

    tag = save_small_model("adult", rounds=20)
    small = home / "small.csv"
    small.write_text("age,city,income\n39,Lyon,52.5\n41,Nice,48.0\n23,Lyon,\n57,Paris,61.25\n35,Nice,39.5\n")
    mlcycle = str(Path(sys.executable).parent / "mlcycle")
    commands = {
        "--help": [mlcycle, "--help"],
        "models list": [mlcycle, "models", "list"],
        "models show": [mlcycle, "models", "show", tag],
        "schema infer (5-row CSV)": [mlcycle, "schema", "infer", str(small), "--name", "small"],
    }
    env = dict(os.environ)
    medians = {name: median_s(cmd, env, repeats) for name, cmd in commands.items()}
    for name, seconds in medians.items():
        print(f"{name:<26} {seconds:6.3f} s  (median of {repeats})")
    slowest = max(medians, key=medians.__getitem__)
    print(f"slowest: {slowest}")
    print(f"cli: slowest quick command {medians[slowest]:.2f} s")


if __name__ == "__main__":
    main()
