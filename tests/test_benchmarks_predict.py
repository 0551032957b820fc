"""benchmarks/predict.py still runs: its small mode end to end, and the check that keeps a wrong answer from
producing a figure. The figures themselves are the benchmark's business, not asserted here."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from types import ModuleType

import numpy as np
import pytest

from tests.conftest import ROOT

BENCHMARK = ROOT / "benchmarks" / "predict.py"
FIGURE = re.compile(
    r"^python api: (?P<rows>\d+) rows (?P<api>[\d,]+) rows/s vs hand-written (?P<hand>[\d,]+) rows/s, "
    r"ratio (?P<ratio>\d+\.\d+) \(target >= 0\.8\)$"
)


def benchmark_module(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """benchmarks/predict.py imported (benchmarks/ is not a package); registered while the test runs, as its
    dataclasses need."""
    spec = importlib.util.spec_from_file_location("benchmark_predict", BENCHMARK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


def test_small_mode_prints_the_python_api_figure() -> None:
    run = subprocess.run([sys.executable, str(BENCHMARK), "--small"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    figures = [m for m in map(FIGURE.match, run.stdout.splitlines()) if m]
    assert len(figures) == 1, run.stdout
    figure = figures[0]
    api, hand = (float(figure[k].replace(",", "")) for k in ("api", "hand"))
    assert int(figure["rows"]) > 1
    assert api > 0 and hand > 0
    assert float(figure["ratio"]) == pytest.approx(api / hand, abs=0.01)


def test_a_wrong_answer_stops_the_benchmark(monkeypatch: pytest.MonkeyPatch) -> None:
    refuse_different = benchmark_module(monkeypatch).refuse_different
    right = np.array([0.1, 0.5, 0.9])
    refuse_different(right + 5e-7, right)
    for wrong in (right + 2e-6, np.array([0.1, np.nan, 0.9]), right[:2]):
        with pytest.raises(SystemExit, match="differ from the hand-written"):
            refuse_different(wrong, right)
