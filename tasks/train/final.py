"""The final fit: the model to ship, from the search's best configuration, by the config's `tune.final_fit` rule."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import xgboost as xgb

from mlcycle.tasks.train.boost import Data, fit_booster, training_matrix, xgb_params

if TYPE_CHECKING:
    from mlcycle.schemas.config import PipelineConfig


def fit_final_model(
    data: Data,
    best_config: dict[str, Any],
    best_rounds: int,
    config: PipelineConfig,
    best_boosted: int = 0,
    trial_booster: xgb.Booster | None = None,
) -> xgb.Booster:
    """The model to ship, by the config's `tune.final_fit` rule (see `schemas.config.TuneConfig.final_fit`).

    `train`: the best trial's own model. Its booster, when the trial kept one (`trial_booster`), costs nothing;
    otherwise the same fit again: the same scoring interval, stopping where the trial stopped (`best_boosted`
    rounds at most), all cores (XGBoost's `hist` grows the same trees on any number of threads).
    """
    params = xgb_params(config.task, best_config, nthread=0, seed=config.seed, num_class=data.num_class)
    if config.tune.gpus_per_trial > 0:
        params["device"] = "cuda"
    if config.tune.data_parallel_workers:
        return _fit_final_data_parallel(data, params, best_rounds, config)
    if config.tune.final_fit == "train":
        if trial_booster is not None:
            trial_booster.set_param({"nthread": 0})
            return trial_booster
        rounds = best_boosted or config.tune.max_rounds
        return fit_booster(data, params, rounds, config.tune.early_stopping_rounds, config.tune.eval_every)
    rounds = max(1, round(best_rounds * (data.train_rows + data.valid_rows) / data.train_rows))
    return xgb.train(params, training_matrix(data, params, with_valid=True), num_boost_round=rounds,
                     verbose_eval=False)  # fmt: skip


def _fit_final_data_parallel(
    data: Data, params: dict[str, Any], best_rounds: int, config: PipelineConfig
) -> xgb.Booster:
    """The final fit across the same Ray Train workers the trials used, by the same `final_fit` rule. Its Ray
    Train run keeps its checkpoint under MLCYCLE_HOME, which every node of a cluster reaches."""
    import uuid

    from mlcycle.tasks.paths import mlcycle_home
    from mlcycle.tasks.train.distributed import both_splits, fit_data_parallel, shard_data
    from mlcycle.tasks.train.tune import ensure_ray

    ensure_ray(config.tune.ray_address)
    settings = config.tune
    params = {**params, "nthread": settings.cpus_per_trial}
    if settings.final_fit == "train":
        shards, rounds, stopping = shard_data(data), settings.max_rounds, settings.early_stopping_rounds
    else:
        rounds = max(1, round(best_rounds * (data.train_rows + data.valid_rows) / data.train_rows))
        shards, stopping = shard_data(both_splits(data), with_validation=False), 0
    storage = mlcycle_home() / "ray_results" / "final-fit"
    fit = fit_data_parallel(shards, params, rounds, stopping, settings.data_parallel_workers, storage,
                            f"final-fit-{uuid.uuid4().hex[:8]}")  # fmt: skip
    return fit.booster
