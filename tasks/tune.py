"""Tune: a Ray Tune search over XGBoost with ASHA early stopping, trials filling the cores."""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import xgboost as xgb
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.basic_variant import BasicVariantGenerator

from schemas.config import TaskType, TuneConfig
from tasks.train import STOPPING_METRIC, TrainingData, fit_booster, xgb_params

log = logging.getLogger("mlcycle.tune")

_LOG_SCALE = {"eta", "lambda", "alpha"}
_INTEGER = {"max_depth"}


@dataclass(frozen=True)
class TuneResult:
    """The winning configuration and what the search did."""

    best_config: dict[str, Any]
    best_rounds: int
    best_score: float
    metric: str
    best_trial_id: str
    trials: list[dict[str, Any]]
    experiment_path: str
    elapsed_s: float


def search_space(config: TuneConfig) -> dict[str, Any]:
    """Ray Tune distributions from the config's bounds."""
    space: dict[str, Any] = {}
    for name, (low, high) in config.space.items():
        if name in _INTEGER:
            space[name] = tune.randint(int(low), int(high) + 1)
        elif name in _LOG_SCALE:
            space[name] = tune.loguniform(low, high)
        else:
            space[name] = tune.uniform(low, high)
    return space


def ensure_ray(address: str | None) -> None:
    """Join the configured Ray cluster, or start a local Ray if none is running."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)


class _ReportRounds(xgb.callback.TrainingCallback):
    """Reports the best validation score so far to Tune every few rounds, so ASHA can stop weak trials."""

    def __init__(self, metric: str, every: int) -> None:
        self.metric, self.every = metric, every
        self.best, self.best_round = math.inf, 0

    def after_iteration(self, model: Any, epoch: int, evals_log: dict[str, Any]) -> bool:
        score = evals_log["valid"][self.metric][-1]
        if score < self.best:
            self.best, self.best_round = score, epoch + 1
        if (epoch + 1) % self.every == 0:
            tune.report({"valid_score": self.best, "rounds": self.best_round, "done": False})
        return False


def _trial(sampled: dict[str, Any], data: TrainingData, task: TaskType, settings: TuneConfig, seed: int) -> None:
    params = xgb_params(task, sampled, nthread=settings.cpus_per_trial, seed=seed)
    reporter = _ReportRounds(STOPPING_METRIC[task], settings.report_every)
    fit_booster(data, params, settings.max_rounds, settings.early_stopping_rounds, callbacks=[reporter])
    tune.report({"valid_score": reporter.best, "rounds": reporter.best_round, "done": True})


class _ProgressLog(tune.Callback):
    """Logs trials done of total, the best score so far and the elapsed time (terminal and Prefect logs)."""

    def __init__(self, total: int, metric: str) -> None:
        self.total, self.metric = total, metric
        self.started = time.monotonic()
        self.done = 0
        self.best = math.inf

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any) -> None:
        self.best = min(self.best, result["valid_score"])

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.done += 1
        log.info("trials done %d/%d, best valid %s so far %.5f, elapsed %.0f s",
                 self.done, self.total, self.metric, self.best, time.monotonic() - self.started)  # fmt: skip


def tune_xgboost(
    data: TrainingData, task: TaskType, settings: TuneConfig, seed: int, storage: Path, run_name: str
) -> TuneResult:
    """Search XGBoost hyperparameters with Ray Tune and ASHA.

    The data goes to Ray's object store once (`tune.with_parameters`) and every trial reads it from there.
    Trials run `cluster CPUs // cpus_per_trial` at a time with `nthread = cpus_per_trial`, so trials × threads
    never exceeds the cores.
    """
    ensure_ray(settings.ray_address)
    cpus = int(ray.cluster_resources().get("CPU", 1))
    concurrent = max(1, cpus // settings.cpus_per_trial)
    metric = STOPPING_METRIC[task]
    trainable = tune.with_resources(
        tune.with_parameters(_trial, data=data, task=task, settings=settings, seed=seed),
        {"cpu": settings.cpus_per_trial},
    )
    reports = max(1, settings.max_rounds // settings.report_every)
    tuner = tune.Tuner(
        trainable,
        param_space=search_space(settings),
        tune_config=tune.TuneConfig(
            metric="valid_score",
            mode="min",
            num_samples=settings.num_samples,
            max_concurrent_trials=concurrent,
            time_budget_s=settings.time_budget_s,
            search_alg=BasicVariantGenerator(random_state=seed),
            # A worker process per trial costs seconds of start-up and imports; reuse them.
            reuse_actors=True,
            scheduler=ASHAScheduler(
                max_t=reports, grace_period=min(settings.grace_period, reports), reduction_factor=settings.reduction_factor
            ),
        ),
        run_config=tune.RunConfig(
            name=run_name,
            storage_path=str(storage.resolve()),
            verbose=1,
            callbacks=[_ProgressLog(settings.num_samples, metric)],
        ),
    )
    log.info("tuning: %d trials, %d at a time on %d CPUs, %d thread(s) each",
             settings.num_samples, concurrent, cpus, settings.cpus_per_trial)  # fmt: skip
    started = time.monotonic()
    grid = tuner.fit()
    elapsed = time.monotonic() - started
    trials = [_trial_record(r) for r in grid if r.metrics]
    if not trials:
        errors = [str(r.error) for r in grid if r.error][:3]
        raise RuntimeError(f"no trial reported a result; first errors: {errors}")
    best = grid.get_best_result(metric="valid_score", mode="min", scope="last")
    log.info("tuning done in %.0f s: best valid %s %.5f at %d rounds",
             elapsed, metric, best.metrics["valid_score"], best.metrics["rounds"])  # fmt: skip
    return TuneResult(
        best_config=dict(best.config),
        best_rounds=int(best.metrics["rounds"]),
        best_score=float(best.metrics["valid_score"]),
        metric=metric,
        best_trial_id=str(best.metrics.get("trial_id", "")),
        trials=sorted(trials, key=lambda t: t["valid_score"]),
        experiment_path=grid.experiment_path,
        elapsed_s=elapsed,
    )


def _trial_record(result: Any) -> dict[str, Any]:
    metrics = result.metrics
    return {
        "trial_id": metrics.get("trial_id"),
        "valid_score": float(metrics["valid_score"]),
        "rounds": int(metrics["rounds"]),
        "reports": int(metrics.get("training_iteration", 0)),
        "finished": bool(metrics.get("done")),
        "seconds": float(metrics.get("time_total_s", 0.0)),
        **{k: v for k, v in result.config.items()},
    }
