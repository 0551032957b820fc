"""The search's keeper of the best booster: a Ray actor that imports nothing but this module.

Apart from `tasks.train.trial` on purpose. The keeper runs in a worker of its own, and on a Ray that mlcycle starts
every worker imports a trial's modules as it starts (`tasks.train.preload`: Ray Tune, XGBoost, 1.2–2.0 s on this
project's 2-core machine), except one started with `LIGHT_WORKER` in its environment. The keeper is started in such
a worker (`tasks.train.tune`): it needs none of those modules, and the warm workers are left to the trials.
"""

from __future__ import annotations

import math

# Set in a Ray worker's environment (the actor's runtime environment): the worker skips `tasks.train.preload`.
LIGHT_WORKER = "MLCYCLE_LIGHT_WORKER"


class BoosterKeeper:
    """A Ray actor of the search's (no CPU of its own): the best booster offered so far, as XGBoost's binary JSON
    with its score, best round and trial. In Ray's memory, so trials on any node reach it with no shared disk."""

    def __init__(self) -> None:
        self.best: tuple[float, int, str, bytes] | None = None

    def offer(self, score: float, rounds: int, trial_id: str, raw: bytes) -> float:
        """Keep the booster if it is the best offered so far; returns the best score kept."""
        if self.best is None or score < self.best[0]:
            self.best = (score, rounds, trial_id, raw)
        return self.best[0]

    def best_score(self) -> float:
        return math.inf if self.best is None else self.best[0]

    def get(self) -> tuple[float, int, str, bytes] | None:
        return self.best
