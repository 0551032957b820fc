"""Every benchmark still runs: its small mode end to end as a subprocess, in a home of its own, must print its figure
line with every number well-formed. The figures themselves are the benchmarks' business: no speed, ratio or target
is asserted here. benchmarks/predict.py has its own test (tests/test_benchmarks_predict.py)."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration

DECIMAL = r"\d+\.\d+"
COUNT = r"\d{1,3}(?:,\d{3})*"  # as the benchmarks print rows/s: 12,345


@dataclass(frozen=True)
class Benchmark:
    """A benchmark's small mode and the figure line it must print (each named group one number)."""

    script: str
    figure: str
    zero_allowed: tuple[str, ...] = ()  # figures that may be exactly 0 (an estimate clamped at 0)
    at_most_one: tuple[str, ...] = ()  # shares and AUCs
    last: str | None = None  # a second figure line, the output's last (its figures checked like the first's)

    def __str__(self) -> str:
        return self.script


BENCHMARKS = [
    Benchmark("cli.py", rf"cli: slowest quick command (?P<slowest_s>{DECIMAL}) s"),
    Benchmark("ingest.py", rf"validation/read ratio (?P<ratio>{DECIMAL})"),
    Benchmark(
        "iterate.py",
        rf"iterate: unchanged (?P<unchanged_s>{DECIMAL}) s, gate-only (?P<gate_only_s>{DECIMAL}) s, "
        rf"new data (?P<new_data_s>{DECIMAL}) s, first (?P<first_s>{DECIMAL}) s",
    ),
    Benchmark(
        "own_data.py",
        rf"own data: sba auc (?P<auc>{DECIMAL}) vs reference (?P<reference>{DECIMAL}), "
        rf"outside-search share (?P<share>{DECIMAL})",
        zero_allowed=("edits",),
        at_most_one=("auc", "reference", "share"),
        last=rf"own data: bikes rmse (?P<rmse>{DECIMAL}) vs reference (?P<reference_rmse>{DECIMAL}), "
        rf"better (?:yes|no), trials (?P<trials>\d+), edits (?P<edits>\d+)",
    ),
    Benchmark(
        "scale.py",
        rf"scale: sba outside-search share (?P<share>{DECIMAL}), peak rss (?P<sba_gib>{DECIMAL}) GiB; "
        rf"10x: ingest (?P<rows_per_s>{COUNT}) rows/s, peak rss (?P<ingest_gib>{DECIMAL}) GiB, "
        rf"train peak rss (?P<train_gib>{DECIMAL}) GiB",
        at_most_one=("share",),
    ),
    Benchmark(
        "serve.py",
        rf"req/s vs floor (?P<ratio>{DECIMAL}) at concurrency 32 \(batch-o(?:n|ff)\); "
        rf"p99 (?P<p99_ms>{DECIMAL}) ms \((?P<p99_of_floor>{DECIMAL}) of the floor's (?P<floor_p99_ms>{DECIMAL})\); "
        rf"batch scoring (?P<rows_per_s>{COUNT}) rows/s "
        rf"\((?P<of_floor>{DECIMAL}) of the floor's (?P<floor_rows_per_s>{COUNT})\)",
        last=rf"explain: largest request (?P<explain_records>{COUNT}) records p99 (?P<explain_p99_ms>{DECIMAL}) ms",
    ),
    Benchmark(
        "tune.py",
        rf"time vs loop (?P<vs_loop>{DECIMAL}), time vs sklearn (?P<vs_sklearn>{DECIMAL}) "
        rf"\((?P<whole_vs_sklearn>{DECIMAL}) counting Ray's start-up and the data loading\), "
        rf"per-trial overhead (?P<overhead_s>{DECIMAL}) s",
        zero_allowed=("overhead_s",),
    ),
]


@pytest.fixture(scope="module")
def prefect_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One Prefect home for the benchmarks' `mlcycle` commands: its database is created once, not per command."""
    return tmp_path_factory.mktemp("prefect-home")


def environment(home: Path, prefect_home: Path) -> dict[str, str]:
    """The session's environment with a home of the benchmark's own, telemetry off and no Prefect server or Ray
    cluster of the session's."""
    env = {**os.environ, "MLCYCLE_HOME": str(home), "BENTOML_HOME": str(home / "bentoml"),
           "PREFECT_HOME": str(prefect_home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "BENTOML_DO_NOT_TRACK": "True", "RAY_USAGE_STATS_ENABLED": "0", "DO_NOT_TRACK": "1"}  # fmt: skip
    for name in ("PREFECT_API_URL", "RAY_ADDRESS"):
        env.pop(name, None)
    return env


@pytest.mark.parametrize("benchmark", BENCHMARKS, ids=str)
def test_small_mode_prints_its_figure_line(benchmark: Benchmark, tmp_path: Path, prefect_home: Path) -> None:
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / benchmark.script), "--small"], cwd=ROOT,
                         env=environment(tmp_path / "home", prefect_home), capture_output=True, text=True,
                         timeout=600)  # fmt: skip
    assert run.returncode == 0, f"{benchmark.script} --small failed:\n{run.stdout[-2000:]}\n{run.stderr[-4000:]}"
    lines = [m for m in map(re.compile(benchmark.figure).fullmatch, run.stdout.splitlines()) if m]
    assert len(lines) == 1, f"no single figure line matching {benchmark.figure!r} in:\n{run.stdout[-3000:]}"
    figures = {name: float(text.replace(",", "")) for name, text in lines[0].groupdict().items()}
    if benchmark.last is not None:
        last = re.fullmatch(benchmark.last, run.stdout.splitlines()[-1])
        assert last, f"the last line does not match {benchmark.last!r}:\n{run.stdout[-3000:]}"
        figures.update({name: float(text.replace(",", "")) for name, text in last.groupdict().items()})
    for name, value in figures.items():
        assert math.isfinite(value), (name, value)
        assert value >= 0 if name in benchmark.zero_allowed else value > 0, (name, value)
        if name in benchmark.at_most_one:
            assert value <= 1, (name, value)
