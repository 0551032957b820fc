"""The final fit: the model to ship, from the search's best configuration, by the config's `tune.final_fit` rule."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import xgboost as xgb

from tasks.train.boost import TrainingData, fit_booster, fit_rounds, xgb_params

if TYPE_CHECKING:
    from schemas.config import PipelineConfig


def fit_final_model(
    data: TrainingData,
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
    x = pd.concat([data.x_train, data.x_valid])
    y = np.concatenate([data.y_train, data.y_valid])
    weight = None if data.w_train is None else np.concatenate([data.w_train, data.w_valid])
    rounds = max(1, round(best_rounds * len(x) / len(data.x_train)))
    return fit_rounds(x, y, params, rounds, weight)


def _fit_final_data_parallel(
    data: TrainingData, params: dict[str, Any], best_rounds: int, config: PipelineConfig
) -> xgb.Booster:
    """The final fit across the same Ray Train workers the trials used, by the same `final_fit` rule."""
    import tempfile
    from pathlib import Path

    from tasks.train.distributed import fit_data_parallel, shard_data
    from tasks.train.tune import ensure_ray

    ensure_ray(config.tune.ray_address)
    settings = config.tune
    params = {**params, "nthread": settings.cpus_per_trial}
    if settings.final_fit == "train":
        shards, rounds, stopping = shard_data(data), settings.max_rounds, settings.early_stopping_rounds
    else:
        weight = None if data.w_train is None else np.concatenate([data.w_train, data.w_valid])
        both = TrainingData(pd.concat([data.x_train, data.x_valid]), np.concatenate([data.y_train, data.y_valid]),
                            data.x_valid.iloc[:0], data.y_valid[:0], weight, None, data.num_class)  # fmt: skip
        rounds = max(1, round(best_rounds * len(both.x_train) / len(data.x_train)))
        shards, stopping = shard_data(both, with_validation=False), 0
    with tempfile.TemporaryDirectory() as storage:
        fit = fit_data_parallel(shards, params, rounds, stopping, settings.data_parallel_workers, Path(storage),
                                "final-fit")  # fmt: skip
    return fit.booster
