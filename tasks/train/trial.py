"""What runs inside a Tune trial's worker process: one XGBoost fit that reports its rounds to Tune.

Apart from `tasks.train.tune` on purpose. What the trial's function drags in is imported in its worker before the
first round: on a Ray that mlcycle starts, every worker imports this module as it starts (`tasks.train.preload`), and on
a cluster a trial worker imports it when the search places the trial. Either way it should be little, so a trial
imports Ray Tune's trainable, XGBoost and `tasks.train.boost`, and nothing of mlcycle's contracts (no pydantic config, no
pandera): its settings come as the plain `TrialSettings` below.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from dataclasses import dataclass
from typing import Any

import ray


def _lean_worker() -> None:
    """In a Ray worker process, import XGBoost without scikit-learn (and SciPy with it) for its sklearn-style
    estimators, which a trial never uses: measured at 2.2–2.5 s of every trial worker's start-up on this 2-core
    machine. scikit-learn stays importable afterwards for any other code in the worker; only XGBoost's own
    sklearn-style estimators are off there. The driver and every other process import XGBoost as usual."""
    if ray._private.worker.global_worker.mode != ray.WORKER_MODE or {"xgboost", "sklearn"} & sys.modules.keys():
        return
    sys.modules["sklearn"] = None  # type: ignore[assignment]  # `import sklearn` → ImportError
    try:
        import xgboost  # noqa: F401
    finally:
        del sys.modules["sklearn"]


_lean_worker()

import xgboost as xgb  # noqa: E402
from ray import tune  # noqa: E402

from mlcycle.tasks.train.boost import STOPPING_METRIC, RoundReporter, TrainingData, fit_booster, xgb_params  # noqa: E402


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
    eval_every: int
    cpus_per_trial: int
    gpus_per_trial: float
    cpu_share: str | None = None  # see CpuShare; None: the trial keeps `cpus_per_trial` threads
    keeper: str | None = None  # the name of the search's BoosterKeeper actor, if it keeps the best booster


class CpuShare:
    """Lets a trial take up CPUs that finished trials left idle once no trial is waiting for them: the search
    writes the number of threads each running trial may use to a file (`tasks.train.tune._LendFreedCpus`; only on a
    one-node Ray of mlcycle's own), and the trial looks at it at every validation score and sets XGBoost's
    `nthread`."""

    def __init__(self, path: str, threads: int, reported: dict[str, Any]) -> None:
        self.path, self.threads, self.reported = path, threads, reported
        self.reported["threads"] = threads  # the trial's reports say how many it has used at most

    def look(self, model: Any) -> None:
        try:  # a few bytes every few rounds (a round takes milliseconds)
            with open(self.path) as f:
                threads = int(f.read().strip() or 0)
        except (OSError, ValueError):  # not written yet
            return
        if threads > self.threads:
            self.threads = self.reported["threads"] = threads
            model.set_param({"nthread": threads})


def run_trial(sampled: dict[str, Any], data: TrainingData, settings: TrialSettings) -> None:
    """Boost one sampled configuration with early stopping, scoring it every `eval_every` rounds and reporting
    every `report_every` so ASHA can stop it, and once more at the end. `data` comes from Ray's object store, put
    there once for the whole search."""
    params = xgb_params(settings.task, sampled, nthread=settings.cpus_per_trial, seed=settings.seed,  # type: ignore[arg-type]
                        num_class=data.num_class)  # fmt: skip
    if settings.gpus_per_trial > 0:
        params["device"] = "cuda"
    extra = {"node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid(),
             "threads": settings.cpus_per_trial}  # fmt: skip
    keeper = BestBooster(settings.keeper)
    reporter = RoundReporter(STOPPING_METRIC[settings.task], settings.report_every, keeper.report,
                             {"done": False, **extra}, learning_rate=learning_rate(params))  # fmt: skip
    share = CpuShare(settings.cpu_share, settings.cpus_per_trial, reporter.extra) if settings.cpu_share else None

    def on_eval(booster: xgb.Booster, rounds: int, score: float) -> None:
        keeper.booster = booster
        reporter.scored(rounds, score)
        if share is not None:
            share.look(booster)

    final = fit_booster(data, params, settings.max_rounds, settings.early_stopping_rounds, settings.eval_every, on_eval)
    keeper.booster = final
    keeper.report({**reporter.metrics(), **reporter.extra, "done": True})


class BestBooster:
    """Reports to Tune and, whenever the trial's best score has improved since its last report and beats the best
    the keeper holds (as last heard), offers its booster cut at the best round to the search's `BoosterKeeper`,
    which keeps the best of all trials: the model the search measured, which the final fit can take as it is
    instead of boosting the same rounds again (`tune.final_fit: train`).

    The offer goes out before the report and the trial does not wait for it: the search waits instead, for the
    best trial's offer only, when it reads the keeper (`tasks.train.tune`); an offer that never arrives costs the
    final fit a refit. Ray runs one caller's calls to an actor in order, and Tune reuses a stopped trial's process
    for the next trial or ends it gracefully. Waiting for every offer (a round trip to the keeper's process, which
    shares the cores) held up every improving report. An offer no better than the keeper's best is not made at all:
    the keeper would drop it, and serialising the booster and the keeper reading it take CPU the trials share."""

    def __init__(self, keeper: str | None) -> None:
        self.keeper = ray.get_actor(keeper) if keeper else None
        self.booster: xgb.Booster | None = None
        self.offered = math.inf
        self.kept = math.inf  # the keeper's best score, as last heard
        # the keeper's answer to the last call, not waited for: read when it has come
        self.answer = self.keeper.best_score.remote() if self.keeper is not None else None

    def report(self, metrics: dict[str, Any]) -> None:
        score, best_round = float(metrics["valid_score"]), int(metrics["rounds"])
        if self.booster is not None and best_round > 0 and score < self.offered and score < self._kept():
            best = self.booster[:best_round] if best_round < self.booster.num_boosted_rounds() else self.booster
            trial_id, raw = tune.get_context().get_trial_id(), bytes(best.save_raw("ubj"))
            self.answer = self.keeper.offer.remote(score, best_round, trial_id, raw)  # type: ignore[union-attr]
            self.offered = score
        tune.report(metrics)

    def _kept(self) -> float:
        """The keeper's best score as last heard (minus infinity with no keeper: nothing to offer to)."""
        if self.keeper is None:
            return -math.inf
        if self.answer is not None and ray.wait([self.answer], timeout=0)[0]:
            with contextlib.suppress(Exception):  # a keeper gone costs the final fit a refit, not the trial
                self.kept = min(self.kept, float(ray.get(self.answer)))
            self.answer = None
        return self.kept
