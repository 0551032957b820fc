"""Data-parallel XGBoost with Ray Train: one booster trained across several Ray workers, each on its own shard.

For data larger than one worker's memory (`tune.data_parallel_workers: N`). The training and validation frames
become Ray Datasets; Ray Train splits them across N workers, and XGBoost's collective (rabit) joins the workers
into one model: every round's histograms and the validation metric are summed over the shards, so all workers grow
the same trees and stop at the same round. The result is a plain `xgb.Booster`, the same thing `fit_booster`
returns, so the final fit and the bundle take it unchanged.

Inside a Ray Tune trial the trainer's `fit()` runs in the trial's function (Ray Train v2's way of nesting Train in
Tune) and Ray's `TuneReportCallback` forwards the workers' reports to Tune, where ASHA sees them.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb

from mlcycle.tasks.train.boost import LABEL, WEIGHT, Data, RoundReporter, StreamedData, TrainingData

MODEL_FILE = "model.ubj"


@dataclass(frozen=True)
class ShardedData:
    """Training (and optionally validation) rows as Ray Datasets, categories as their codes, plus what the workers
    need to rebuild frames: the categorical columns' categories (Arrow does not keep pandas categories reliably
    across shards, and every worker must encode a category with the same code)."""

    train: Any
    valid: Any | None
    categories: dict[str, list[Any]]
    columns: list[str]


@dataclass(frozen=True)
class DistributedFit:
    """A booster trained data-parallel, and where its workers ran."""

    booster: xgb.Booster
    best_rounds: int
    best_score: float
    boosted: int  # rounds boosted before early stopping ended the training
    workers: list[dict[str, Any]]  # per rank: node id and rows of its training shard


def shard_data(data: Data, with_validation: bool = True) -> ShardedData:
    """The rows as Ray Datasets to be split across the training workers: a `StreamedData`'s own (already on the
    cluster, never through the driver), or frames put into Ray's object store."""
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False  # one line per run in the logs, not bars
    if isinstance(data, StreamedData):
        return ShardedData(train=data.train, valid=data.valid if with_validation else None,
                           categories=data.categories, columns=data.columns)  # fmt: skip
    categories = {c: list(data.x_train[c].cat.categories) for c in data.x_train.columns
                  if isinstance(data.x_train[c].dtype, pd.CategoricalDtype)}  # fmt: skip

    def frame(x: pd.DataFrame, y: Any, weight: Any) -> Any:
        coded = x.assign(**{c: x[c].cat.codes.astype("int32") for c in categories}, **{LABEL: y})
        if weight is not None:  # the sample weight travels with its row to whichever shard holds it
            coded = coded.assign(**{WEIGHT: weight})
        return ray.data.from_pandas(coded)

    return ShardedData(
        train=frame(data.x_train, data.y_train, data.w_train),
        valid=frame(data.x_valid, data.y_valid, data.w_valid) if with_validation else None,
        categories=categories,
        columns=list(data.x_train.columns),
    )


def both_splits(data: Data) -> Data:
    """The training and validation rows together as training rows (a final fit on both), with no validation rows."""
    if isinstance(data, StreamedData):
        both = data.train.union(data.valid)
        return StreamedData(both, data.valid.limit(0), data.columns, data.categories, (sum(data.rows), 0),
                            data.weighted, data.num_class)  # fmt: skip
    weight = None if data.w_train is None else np.concatenate([data.w_train, data.w_valid])
    return TrainingData(pd.concat([data.x_train, data.x_valid]), np.concatenate([data.y_train, data.y_valid]),
                        data.x_valid.iloc[:0], data.y_valid[:0], weight, None, data.num_class)  # fmt: skip


def _shard_dmatrix(name: str, config: dict[str, Any]) -> tuple[xgb.DMatrix, int]:
    import ray.train

    # Iterating the shard streams its blocks from the object store; `materialize()` would start a second Ray Data
    # execution, which waits for CPUs that the training workers themselves hold.
    shard = ray.train.get_dataset_shard(name)
    frame = pd.concat(list(shard.iter_batches(batch_size=None, batch_format="pandas")), ignore_index=True)
    categories = config["categories"]
    x = pd.DataFrame({
        c: pd.Categorical.from_codes(frame[c].to_numpy(dtype="int32"), categories=categories[c])
        if c in categories else frame[c].to_numpy()
        for c in config["columns"]
    })  # fmt: skip
    weight = frame[WEIGHT].to_numpy() if WEIGHT in frame.columns else None
    return xgb.DMatrix(x, label=frame[LABEL].to_numpy(), weight=weight, enable_categorical=True,
                       nthread=config["nthread"]), len(x)  # fmt: skip


def _train_per_worker(config: dict[str, Any]) -> None:
    import ray.train

    context = ray.train.get_context()
    rank = context.get_world_rank()
    dtrain, rows = _shard_dmatrix("train", config)
    params = config["params"]
    if config["has_valid"]:
        dvalid, _ = _shard_dmatrix("valid", config)
        # Every rank reports equally often (Ray Train's report is a barrier; the rounds agree across ranks because
        # the stopping metric is reduced over them). No `done` key: Tune would end the trial on it and kill the
        # trainer before it has released its workers' placement group.
        reporter = RoundReporter(params["eval_metric"], config["report_every"], ray.train.report)
        booster = xgb.train(params, dtrain, num_boost_round=config["max_rounds"], evals=[(dvalid, "valid")],
                            early_stopping_rounds=config["early_stopping_rounds"], callbacks=[reporter],
                            verbose_eval=False)  # fmt: skip
        best = booster.best_iteration + 1
        booster = booster[:best] if best < booster.num_boosted_rounds() else booster
        metrics = reporter.metrics()
    else:
        booster = xgb.train(params, dtrain, num_boost_round=config["max_rounds"], verbose_eval=False)
        metrics = {"valid_score": float("nan"), "rounds": config["max_rounds"], "boosted": config["max_rounds"]}
    node_id = ray.get_runtime_context().get_node_id()
    with tempfile.TemporaryDirectory() as folder:
        # Every rank writes its own file; Ray Train merges the ranks' checkpoint folders into one.
        Path(folder, f"worker-{rank}.json").write_text(json.dumps({"rank": rank, "node_id": node_id, "rows": rows}))
        if rank == 0:
            booster.save_model(str(Path(folder, MODEL_FILE)))
        ray.train.report({**metrics, "node_id": node_id}, checkpoint=ray.train.Checkpoint.from_directory(folder))


def fit_data_parallel(
    shards: ShardedData,
    params: dict[str, Any],
    max_rounds: int,
    early_stopping_rounds: int,
    workers: int,
    storage: Path,
    name: str,
    report_every: int = 0,
    in_tune: bool = False,
) -> DistributedFit:
    """Train one booster across `workers` Ray Train workers with `params["nthread"]` CPUs each.

    With validation rows in `shards`, boosting stops early on them and the booster keeps only the best rounds;
    without, it boosts exactly `max_rounds`. `in_tune`: forward the reports to the enclosing Ray Tune trial.
    """
    import ray.train
    from ray.train.xgboost import XGBoostConfig, XGBoostTrainer

    callbacks = []
    if in_tune:
        from ray.tune.integration.ray_train import TuneReportCallback

        callbacks.append(TuneReportCallback())
    datasets = {"train": shards.train, **({"valid": shards.valid} if shards.valid is not None else {})}
    nthread = int(params["nthread"])
    trainer = XGBoostTrainer(
        _train_per_worker,
        train_loop_config={
            "params": params,
            "max_rounds": max_rounds,
            "early_stopping_rounds": early_stopping_rounds,
            "report_every": report_every,
            "nthread": nthread,
            "has_valid": shards.valid is not None,
            "categories": shards.categories,
            "columns": shards.columns,
        },
        xgboost_config=XGBoostConfig(),
        scaling_config=ray.train.ScalingConfig(num_workers=workers, resources_per_worker={"CPU": nthread}),
        run_config=ray.train.RunConfig(name=name, storage_path=str(storage), callbacks=callbacks),
        datasets=datasets,
    )
    result = trainer.fit()
    with result.checkpoint.as_directory() as folder:
        booster = xgb.Booster(model_file=str(Path(folder, MODEL_FILE)))
        ranks = sorted((json.loads(p.read_text()) for p in Path(folder).glob("worker-*.json")),
                       key=lambda w: w["rank"])  # fmt: skip
    return DistributedFit(
        booster=booster,
        best_rounds=int(result.metrics["rounds"]),
        best_score=float(result.metrics["valid_score"]),
        boosted=int(result.metrics["boosted"]),
        workers=ranks,
    )
