"""How a driver tells that the workers of a Ray it started are warm: each says so in its log when it has imported a
trial's modules (tasks.train.preload). Apart from `tasks.train.preload`, which imports those modules when imported."""

from __future__ import annotations

import re
from pathlib import Path

PRELOADED = "mlcycle: a trial's modules imported"
_SAID = re.compile(re.escape(PRELOADED) + r" in [0-9.]+ s \(pid (\d+)\)")


def warm_workers(logs: Path) -> set[int]:
    """The worker processes of the Ray whose session logs are in `logs` that have finished the imports."""
    return {int(pid) for log in logs.glob("worker-*.err") for pid in _SAID.findall(log.read_text(errors="replace"))}
