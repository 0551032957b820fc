"""Scale: the SBA loans table as `mlcycle init` configures it, and ten times larger, with the memory of every process.

    flock /tmp/mlcycle-bench.lock .venv/bin/python benchmarks/scale.py          # both parts
    flock /tmp/mlcycle-bench.lock .venv/bin/python benchmarks/scale.py sba      # or one of them
    flock /tmp/mlcycle-bench.lock .venv/bin/python benchmarks/scale.py 10x
    .venv/bin/python benchmarks/scale.py --small   # 1,500 made-up rows (15,000 for 10x), 2-trial searches, ~2 min

1. sba: `mlcycle init` on the SBA file (899,164 rows × 27 columns, from the pinned wheel as benchmarks/own_data.py
   fetches it), then `mlcycle train` exactly as init configured it (its 300 s search) in a fresh MLCYCLE_HOME.
   The outside-search share is the command's wall time outside the search (its `tuning_seconds`) over its whole
   wall time.
2. 10x: the SBA file resampled to 9,000,000 rows (seeded; loan numbers renumbered 1, 2, ... so they stay unique),
   written by this benchmark; `mlcycle ingest` of it (rows per second of the command's wall time; the accounting
   checked: rows read = 9,000,000 = accepted + quarantined), then `mlcycle train` on its snapshot with init's config
   and a short search (`tune.time_budget_s` 240).

Memory: every half second, the memory of the command's process and of every process under it (Prefect's
temporary server, Ray's GCS, raylet and workers, `bentoml serve`), summed; the peak is reported. Summed as PSS (a
page shared by n processes counts 1/n in each, so Ray's shared object store counts once); the summed RSS, which
counts a shared page once per process mapping it, is printed beside it.

Last line: `scale: sba outside-search share X, peak rss Y GiB; 10x: ingest R rows/s, peak rss W GiB, train peak
rss V GiB`, where the "peak rss" figures are the summed PSS peaks. The generated schemas/<name>.py and
configs/<name>.yaml are removed at the end, and the work folder too (set MLCYCLE_SCALE_KEEP=1 to keep it).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

# the pinned SBA file, as the own-data benchmark fetches it, and its made-up rows and search for the small mode
from own_data import SMALL_ROWS, SMALL_SEARCH, fetch_file, made_up_sba  # noqa: E402

NAME = "sba_scale"
TEN_TIMES = int(os.environ.get("MLCYCLE_SCALE_ROWS", 9_000_000))  # fewer for a dry run of part 2
SHORT_SEARCH = ["--set", "tune.time_budget_s=240"]  # a 9-million-row trial reads its data for a minute before it boosts
# --small: own_data's small search, and no `bentoml serve` for the gate's smoke test (own_data's small mode has one)
SMALL_TRAIN = [*SMALL_SEARCH, "--set", "gate.smoke_test=false"]
GIB = 2**30


@dataclass
class Peak:
    """The highest summed PSS and RSS (bytes) of a process tree, sampled in a thread."""

    pss: int = 0
    rss: int = 0
    samples: int = 0
    top: list[tuple[int, str]] = field(default_factory=list)  # the largest processes at the peak: (PSS, name)
    stop: threading.Event = field(default_factory=threading.Event)

    def breakdown(self) -> str:
        return ", ".join(f"{name} {pss / GIB:.2f}" for pss, name in self.top)

    def watch(self, root: int) -> threading.Thread:
        def run() -> None:
            while not self.stop.wait(0.5):
                pss = rss = 0
                each: list[tuple[int, str]] = []
                with contextlib.suppress(psutil.Error):
                    parent = psutil.Process(root)
                    for proc in [parent, *parent.children(recursive=True)]:
                        with contextlib.suppress(psutil.Error):  # ended meanwhile
                            info = proc.memory_full_info()
                            pss += info.pss
                            rss += info.rss
                            each.append((info.pss, proc.name() if proc.pid != root else "mlcycle (driver)"))
                if pss > self.pss:
                    self.top = sorted(each, reverse=True)[:6]
                self.pss, self.rss, self.samples = max(self.pss, pss), max(self.rss, rss), self.samples + 1

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread


def run_measured(
    args: list[str], env: dict[str, str], project: Path
) -> tuple[subprocess.CompletedProcess[str], float, Peak]:
    """An `mlcycle` command run in the project folder, its wall time and the peak memory of its process tree."""
    peak = Peak()
    start = time.monotonic()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([str(ROOT / ".venv" / "bin" / "mlcycle"), *args], cwd=project, env=env, stdout=out,
                                stderr=err, text=True)  # fmt: skip
        watcher = peak.watch(proc.pid)
        code = proc.wait()
        seconds = time.monotonic() - start
        peak.stop.set()
        watcher.join()
        out.seek(0)
        err.seek(0)
        done = subprocess.CompletedProcess(args, code, out.read(), err.read())
    # the command's own log (Prefect's, a line per task), kept with its home (MLCYCLE_SCALE_KEEP=1)
    log = Path(env["MLCYCLE_HOME"]) / f"{args[0]}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(done.stderr)
    return done, seconds, peak


def answer(proc: subprocess.CompletedProcess[str], what: str) -> dict:
    if proc.returncode not in (0, 3):  # 3: trained, and the gate rejected it
        raise SystemExit(f"{what} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout[proc.stdout.index("{") :])


def environment(home: Path) -> dict[str, str]:
    env = {**os.environ, "MLCYCLE_HOME": str(home), "BENTOML_HOME": str(home / "bentoml"),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "BENTOML_DO_NOT_TRACK": "True",
           "RAY_USAGE_STATS_ENABLED": "0", "DO_NOT_TRACK": "1"}  # fmt: skip
    for name in ("PREFECT_API_URL", "RAY_ADDRESS"):
        env.pop(name, None)
    return env


def init(csv: Path, env: dict[str, str], project: Path) -> Path:
    """`mlcycle init` on the SBA file, writing into the project folder; the config it wrote, relative to it."""
    command = [str(ROOT / ".venv" / "bin" / "mlcycle"), "init", str(csv), "--target", "MIS_Status", "--name", NAME]
    proc = subprocess.run([*command, "--force"], cwd=project, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"init failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return Path("configs") / f"{NAME}.yaml"


def sba(csv: Path, work: Path, project: Path, search: list[str]) -> tuple[float, Peak]:
    """Part 1: the outside-search share and the peak memory of `mlcycle train` on SBA as init configures it (and
    `search`, the small mode's)."""
    env = environment(work / "home-sba")
    config = init(csv, env, project)
    proc, seconds, peak = run_measured(["train", "--json", "--config", str(config), *search], env, project)
    result = answer(proc, "train")
    search = float(result["tuning_seconds"])
    share = (seconds - search) / seconds
    print(f"sba: train {seconds:.0f} s in all, search {search:.0f} s, outside the search {seconds - search:.0f} s "
          f"(share {share:.2f}); rows {result['rows']}; test roc_auc {result['test']['roc_auc']:.4f}; "
          f"peak memory of all processes {peak.pss / GIB:.2f} GiB PSS ({peak.rss / GIB:.2f} GiB RSS summed)")  # fmt: skip
    print(f"sba: largest at the peak (GiB PSS): {peak.breakdown()}")
    return share, peak


def write_ten_times(csv: Path, target: Path, rows: int = TEN_TIMES, seed: int = 0) -> None:
    """The SBA file's records drawn with replacement (seeded) into `rows` records, the loan number (the first field)
    renumbered so it stays a unique identifier. SBA's file has one record per line."""
    lines = csv.read_bytes().split(b"\n")
    header, records = lines[0], [line for line in lines[1:] if line.strip()]
    rests = [record[record.index(b",") :] for record in records]
    del lines, records
    rng = np.random.default_rng(seed)
    with target.open("wb") as out:
        out.write(header + b"\n")
        for start in range(0, rows, 500_000):
            drawn = rng.integers(0, len(rests), min(500_000, rows - start))
            out.write(b"".join(b"%d%s\n" % (start + i + 1, rests[j]) for i, j in enumerate(drawn)))


def ten_times(csv: Path, work: Path, rows: int, project: Path, search: list[str]) -> tuple[float, Peak, Peak]:
    """Part 2: ingest rows/s and peak memory, and the training run's peak memory, on the ten-times file (`rows`
    rows) with the `search` given."""
    big = work / "sba_10x.csv"
    started = time.monotonic()
    write_ten_times(csv, big, rows)
    print(f"10x: wrote {big.stat().st_size / 1e9:.2f} GB ({rows:,} rows) in {time.monotonic() - started:.0f} s")
    env = environment(work / "home-10x")
    config = init(csv, env, project)  # the same schema and config as part 1, read from the big file
    sets = ["--set", f"source.files=[{{path: {big}}}]", *search]
    proc, seconds, ingest_peak = run_measured(["ingest", "--json", "--config", str(config), *sets], env, project)
    batches = answer(proc, "ingest")["batches"]
    read = sum(b["rows_read"] for b in batches)
    accepted = sum(b["rows_accepted"] for b in batches)
    quarantined = sum(b["rows_quarantined"] for b in batches)
    exact = read == rows == accepted + quarantined and all(b["outcome"] == "accepted" for b in batches)
    rate = read / seconds
    print(f"10x: ingest {seconds:.0f} s, {rate:,.0f} rows/s, read {read:,} = accepted {accepted:,} + quarantined "
          f"{quarantined:,} ({'exact' if exact else 'ACCOUNTING BROKE'}); peak memory {ingest_peak.pss / GIB:.2f} GiB "
          f"PSS ({ingest_peak.rss / GIB:.2f} GiB RSS summed)")  # fmt: skip
    print(f"10x: ingest's largest at the peak (GiB PSS): {ingest_peak.breakdown()}")
    if not exact:
        raise SystemExit(f"10x: row accounting broke: {batches}")
    proc, seconds, train_peak = run_measured(["train", "--json", "--config", str(config), *sets], env, project)
    result = answer(proc, "train")
    print(f"10x: train {seconds:.0f} s (search {result['tuning_seconds']:.0f} s), rows {result['rows']}, test roc_auc "
          f"{result['test']['roc_auc']:.4f}; peak memory {train_peak.pss / GIB:.2f} GiB PSS "
          f"({train_peak.rss / GIB:.2f} GiB RSS summed)")  # fmt: skip
    print(f"10x: train's largest at the peak (GiB PSS): {train_peak.breakdown()}")
    return rate, ingest_peak, train_peak


def main() -> None:
    small = "--small" in sys.argv[1:]
    parts = [arg for arg in sys.argv[1:] if arg != "--small"] or ["sba", "10x"]
    work = Path(tempfile.mkdtemp(prefix="mlcycle-scale-"))
    project = work if small else ROOT  # where init writes schemas/ and configs/, and the commands run
    written = [project / "schemas" / f"{NAME}.py", project / "configs" / f"{NAME}.yaml"]
    try:
        if small:
            csv = made_up_sba(work / "sba.csv", SMALL_ROWS)
            print(f"file: {SMALL_ROWS:,} made-up rows in the SBA file's layout")
        else:
            csv = fetch_file(work)
        share = sba_peak = rate = ingest_peak = train_peak = None
        if "sba" in parts:
            share, sba_peak = sba(csv, work, project, SMALL_TRAIN if small else [])
        if "10x" in parts:
            rows, search = (10 * SMALL_ROWS, SMALL_TRAIN) if small else (TEN_TIMES, SHORT_SEARCH)
            rate, ingest_peak, train_peak = ten_times(csv, work, rows, project, search)
        targets = []
        if share is not None and sba_peak is not None:
            targets.append(f"share <= 0.25 {'met' if share <= 0.25 else 'MISSED'}, "
                           f"peak <= 4 GiB {'met' if sba_peak.pss <= 4 * GIB else 'MISSED'}")  # fmt: skip
        if ingest_peak is not None and train_peak is not None:
            targets.append(f"ingest peak <= 3 GiB {'met' if ingest_peak.pss <= 3 * GIB else 'MISSED'}, "
                           f"train peak <= 6 GiB {'met' if train_peak.pss <= 6 * GIB else 'MISSED'}")  # fmt: skip
        print("targets: " + "; ".join(targets))

        def gib(peak: Peak | None) -> str:
            return f"{peak.pss / GIB:.2f}" if peak is not None else "-"

        print(f"scale: sba outside-search share {share:.2f}" if share is not None else "scale: sba outside-search share -",
              end="")  # fmt: skip
        print(f", peak rss {gib(sba_peak)} GiB; 10x: ingest {f'{rate:,.0f}' if rate else '-'} rows/s, peak rss "
              f"{gib(ingest_peak)} GiB, train peak rss {gib(train_peak)} GiB")  # fmt: skip
    finally:
        for path in written:
            path.unlink(missing_ok=True)
        if not os.environ.get("MLCYCLE_SCALE_KEEP"):
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}")


if __name__ == "__main__":
    main()
