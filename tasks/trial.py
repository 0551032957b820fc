"""What runs inside a Tune trial's worker process: one XGBoost fit that reports its rounds to Tune.

Apart from `tasks.tune` on purpose. Every search starts fresh worker processes (Ray never hands a Tune actor a
worker that ran tasks), and what the trial's function drags in is imported there before the first round: that
start-up is the search's fixed cost, paid once per concurrent trial. So a trial imports Ray Tune's trainable,
XGBoost and `tasks.train`, and nothing of mlcycle's contracts (no pydantic config, no pandera): its settings come as
the plain `TrialSettings` below.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any

import ray


def _lean_worker() -> None:
    """In a Ray worker process, keep XGBoost from importing scikit-learn (and SciPy with it) for its
    sklearn-style estimators, which a trial never uses: measured at 2.2–2.5 s of every trial worker's start-up
    on this 2-core machine. The driver and every other process import scikit-learn as usual."""
    if ray._private.worker.global_worker.mode == ray.WORKER_MODE and "xgboost" not in sys.modules:
        sys.modules.setdefault("sklearn", None)  # type: ignore[arg-type]  # `import sklearn` → ImportError


_lean_worker()

from ray import tune  # noqa: E402

from tasks.train import STOPPING_METRIC, RoundReporter, TrainingData, fit_booster, xgb_params  # noqa: E402


def learning_rate(params: dict[str, Any]) -> float:
    """The booster's learning rate: `eta` (or its alias), else XGBoost's default 0.3."""
    return float(params.get("eta", params.get("learning_rate", 0.3)))


@dataclass(frozen=True)
class TrialSettings:
    """The part of `tune:` a trial needs, as plain values."""

    task: str
    seed: int
    max_rounds: int
    early_stopping_rounds: int
    report_every: int
    cpus_per_trial: int
    gpus_per_trial: float


def run_trial(sampled: dict[str, Any], box: Any, settings: TrialSettings) -> None:
    """Boost one sampled configuration with early stopping, reporting every `report_every` rounds so ASHA can stop
    it, and once more at the end. The data comes from the search's `box` (tasks.tune._DataBox): the trial waits
    there until the flow has prepared it."""
    began = time.monotonic()
    refs = ray.get(box.get.remote())
    waited = time.monotonic() - began
    if refs is None:
        raise RuntimeError("the search was cancelled before its data was ready")
    data: TrainingData = ray.get(refs[0])
    params = xgb_params(settings.task, sampled, nthread=settings.cpus_per_trial, seed=settings.seed)  # type: ignore[arg-type]
    if settings.gpus_per_trial > 0:
        params["device"] = "cuda"
    node_id = ray.get_runtime_context().get_node_id()
    reporter = RoundReporter(STOPPING_METRIC[settings.task], settings.report_every, tune.report,
                             {"done": False, "node_id": node_id, "waited_s": waited},
                             learning_rate=learning_rate(params))  # fmt: skip
    fit_booster(data, params, settings.max_rounds, settings.early_stopping_rounds, callbacks=[reporter])
    tune.report({**reporter.metrics(), "done": True, "node_id": node_id, "waited_s": waited})
