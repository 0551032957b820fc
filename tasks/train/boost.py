"""Train: XGBoost parameters for a task, and the fit of one booster with early stopping."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import xgboost as xgb

# Not at run time: a Tune trial imports this module and should not pay for pandera (tasks.train.trial).
if TYPE_CHECKING:
    from mlcycle.schemas.config import TaskType

# What the booster optimises and what early stopping watches, per task (lower is better for both).
# Multiclass: softmax probabilities per class (`multi:softprob`, not `multi:softmax`'s bare label).
OBJECTIVE = {"binary": "binary:logistic", "multiclass": "multi:softprob", "regression": "reg:squarederror"}
STOPPING_METRIC = {"binary": "logloss", "multiclass": "mlogloss", "regression": "rmse"}


LABEL = "__label__"  # the encoded label's column in model-ready blocks
WEIGHT = "__weight__"  # the sample weight's column in model-ready blocks, where the config names a weight


@dataclass(frozen=True)
class TrainingData:
    """Model-ready inputs (the output of `apply_preprocessor`), encoded labels, and optionally sample weights.

    `num_class`: for multiclass, how many classes the labels index (a class may have no training rows); else 0.
    """

    x_train: pd.DataFrame
    y_train: np.ndarray
    x_valid: pd.DataFrame
    y_valid: np.ndarray
    w_train: np.ndarray | None = None
    w_valid: np.ndarray | None = None
    num_class: int = 0

    @property
    def train_rows(self) -> int:
        return len(self.x_train)

    @property
    def valid_rows(self) -> int:
        return len(self.x_valid)


@dataclass(frozen=True)
class StreamedData:
    """Model-ready training and validation rows as Ray Datasets (built by tasks.train.dataset): each block holds the
    model's inputs, numbers as float32 and categories as their codes in the training vocabulary (int32, -1
    missing), the encoded label in `LABEL` and, where `weighted`, the sample weight in `WEIGHT`. Read a batch at
    a time as the frames `apply_preprocessor` makes, so XGBoost sees the same inputs as from a `TrainingData`."""

    train: Any
    valid: Any
    columns: list[str]
    categories: dict[str, list[str]]
    rows: tuple[int, int]
    weighted: bool = False
    num_class: int = 0

    @property
    def train_rows(self) -> int:
        return self.rows[0]

    @property
    def valid_rows(self) -> int:
        return self.rows[1]

    def frames(self, which: str, batch_rows: int = 262_144) -> Iterator[Batch]:
        """(inputs, labels, weights or None) of the `train` or `valid` rows, a batch at a time."""
        dataset = self.train if which == "train" else self.valid
        for batch in dataset.iter_batches(batch_size=batch_rows, batch_format="pandas"):
            weight = batch[WEIGHT].to_numpy(dtype="float64") if self.weighted else None
            yield self.model_frame(batch), batch[LABEL].to_numpy(dtype="float64"), weight

    def block_nodes(self) -> list[str]:
        """The Ray nodes that hold the rows' blocks (in their object stores; the driver's node only if it is one)."""
        import ray

        refs = [entry.ref for ds in (self.train, self.valid) for bundle in ds.iter_internal_ref_bundles()
                for entry in bundle.blocks]  # fmt: skip
        located = ray.experimental.get_object_locations(refs)
        return sorted({node for where in located.values() for node in where.get("node_ids", [])})

    def model_frame(self, block: pd.DataFrame) -> pd.DataFrame:
        """A block's inputs as the frame `apply_preprocessor` makes: codes back to the categories they stand for."""
        return pd.DataFrame({
            name: pd.Categorical.from_codes(block[name].to_numpy(dtype="int32"), categories=self.categories[name])
            if name in self.categories else block[name].to_numpy()
            for name in self.columns
        })  # fmt: skip


Data = TrainingData | StreamedData
Batch = tuple[pd.DataFrame, np.ndarray, np.ndarray | None]  # inputs, labels, sample weights (or None)


class _Batches(xgb.DataIter):
    """XGBoost's input, a batch at a time (QuantileDMatrix sketches the batches, then bins them)."""

    def __init__(self, batches: Callable[[], Iterator[Batch]]) -> None:
        self.batches, self.current = batches, None
        super().__init__(release_data=True)

    def next(self, input_data: Callable[..., None]) -> bool:
        if self.current is None:
            self.current = self.batches()
        found = next(self.current, None)
        if found is None:
            return False
        input_data(data=found[0], label=found[1], weight=found[2])
        return True

    def reset(self) -> None:
        self.current = None


def training_matrix(data: Data, params: dict[str, Any], with_valid: bool = False) -> xgb.QuantileDMatrix:
    """The training rows as XGBoost's histogram bins (`binned`); read batch by batch from a `StreamedData`.
    `with_valid`: the validation rows too (a final fit on both)."""
    if isinstance(data, TrainingData):
        if not with_valid:
            return binned(data.x_train, data.y_train, params, data.w_train)
        weight = None if data.w_train is None else np.concatenate([data.w_train, data.w_valid])
        return binned(pd.concat([data.x_train, data.x_valid]), np.concatenate([data.y_train, data.y_valid]), params,
                      weight)  # fmt: skip

    def batches() -> Iterator[Batch]:
        yield from data.frames("train")
        if with_valid:
            yield from data.frames("valid")

    max_bin = int(params["max_bin"]) if "max_bin" in params else None
    return xgb.QuantileDMatrix(_Batches(batches), enable_categorical=True, nthread=int(params.get("nthread", 1)),
                               max_bin=max_bin)  # fmt: skip


def validation_matrix(data: Data, params: dict[str, Any], train: xgb.QuantileDMatrix | None = None) -> xgb.DMatrix:
    """The validation rows: with their values, from which scoring predicts faster (see `fit_booster`); from a
    `StreamedData`, as bins on the training rows' cuts (`train`), a byte a value where values take eight: its
    validation rows can be many."""
    nthread = int(params.get("nthread", 1))
    if isinstance(data, TrainingData):
        return dmatrix(data.x_valid, data.y_valid, nthread, data.w_valid)
    max_bin = int(params["max_bin"]) if "max_bin" in params else None  # as the training rows' (XGBoost checks)
    return xgb.QuantileDMatrix(_Batches(lambda: data.frames("valid")), ref=train, enable_categorical=True,
                               nthread=nthread, max_bin=max_bin)  # fmt: skip


def xgb_params(task: TaskType, sampled: dict[str, Any], nthread: int, seed: int, num_class: int = 0) -> dict[str, Any]:
    """Full XGBoost parameters from a sampled configuration (`num_class`: the classes of a multiclass task)."""
    params = {
        "objective": OBJECTIVE[task],
        "eval_metric": STOPPING_METRIC[task],
        "tree_method": "hist",
        "nthread": nthread,
        "seed": seed,
        "verbosity": 0,
        **sampled,
    }
    if task == "multiclass":
        if num_class < 2:
            raise ValueError(f"a multiclass task needs num_class >= 2, got {num_class}")
        params["num_class"] = num_class
    if "max_depth" in params:
        params["max_depth"] = int(params["max_depth"])
    return params


def dmatrix(x: pd.DataFrame, y: np.ndarray | None, nthread: int, weight: np.ndarray | None = None) -> xgb.DMatrix:
    return xgb.DMatrix(x, label=y, weight=weight, enable_categorical=True, nthread=nthread)


def binned(x: pd.DataFrame, y: np.ndarray, params: dict[str, Any], weight: np.ndarray | None = None
           ) -> xgb.QuantileDMatrix:  # fmt: skip
    """Data to boost on, as the histogram bins `hist` trains on and no more (`QuantileDMatrix`, built with the
    booster's `max_bin`): a byte or so per value, where a `DMatrix` keeps a copy of the values as well. The same
    trees. Measured for a 46 MiB frame of 400,000 rows: 52 MiB of a process's own memory after three rounds
    against 146 MiB."""
    max_bin = int(params["max_bin"]) if "max_bin" in params else None  # None: XGBoost's default, as the booster's
    return xgb.QuantileDMatrix(x, label=y, weight=weight, enable_categorical=True,
                               nthread=int(params.get("nthread", 1)), max_bin=max_bin)  # fmt: skip


def fit_rounds(x: pd.DataFrame, y: np.ndarray, params: dict[str, Any], rounds: int,
               weight: np.ndarray | None = None) -> xgb.Booster:  # fmt: skip
    """Boost a fixed number of rounds, with no validation set to stop on."""
    return xgb.train(params, binned(x, y, params, weight), num_boost_round=rounds, verbose_eval=False)


class RoundReporter(xgb.callback.TrainingCallback):
    """Tracks the best validation score so far, its round and the rounds boosted, and at the first score at or past
    every `every` rounds hands them (with `extra`) to `report`: Tune's, so ASHA can stop weak trials, or Ray Train's
    in a data-parallel worker. `scored` is fed by `fit_booster`'s `on_eval`; as an XGBoost callback it reads the
    validation score `xgb.train` logged."""

    def __init__(self, metric: str, every: int, report: Callable[[dict[str, Any]], None],
                 extra: dict[str, Any] | None = None, learning_rate: float = 1.0) -> None:  # fmt: skip
        self.metric, self.every, self.report, self.extra = metric, every, report, extra or {}
        self.learning_rate = learning_rate
        self.best, self.best_round, self.boosted, self.reported = math.inf, 0, 0, 0

    def metrics(self) -> dict[str, Any]:
        """The best score and its round, the rounds boosted, and the learning progress (rounds × learning rate)
        that ASHA compares trials by."""
        return {"valid_score": self.best, "rounds": self.best_round, "boosted": self.boosted,
                "progress": self.boosted * self.learning_rate}  # fmt: skip

    def scored(self, rounds: int, score: float) -> None:
        if score < self.best:
            self.best, self.best_round = score, rounds
        self.boosted = rounds
        if self.every and rounds // self.every > self.reported:
            self.reported = rounds // self.every
            self.report({**self.metrics(), **self.extra})

    def after_iteration(self, model: Any, epoch: int, evals_log: dict[str, Any]) -> bool:
        self.scored(epoch + 1, evals_log["valid"][self.metric][-1])
        return False


def fit_booster(
    data: Data,
    params: dict[str, Any],
    max_rounds: int,
    early_stopping_rounds: int,
    eval_every: int = 1,
    on_eval: Callable[[xgb.Booster, int, float], None] | None = None,
) -> xgb.Booster:
    """Boost on the training split, scoring the validation split every `eval_every` rounds (and after the last),
    and stop once the best score is `early_stopping_rounds` rounds old. With `eval_every=1` this is `xgb.train`'s
    early stopping, tree for tree. `on_eval(booster, rounds, score)` is called after every score.

    Each score costs about as much as a fifth of a round (Adult's 6,500 validation rows, one thread: 0.8 ms against
    a 3.9 ms round), so tuning trials score every few rounds (`tune.eval_every`): the best round is then the best
    of those scored. The returned booster keeps only the best rounds, so `predict` needs no iteration range.
    (`Booster.update` is what `xgb.train` calls each round; XGBoost's docs point users to `xgb.train`, but its loop
    scores every evaluation set every round.)
    """
    dtrain = training_matrix(data, params)
    # Scoring predicts on the validation rows, which XGBoost does faster from their values than from bins (Adult,
    # depth 6, scored every 5 rounds: 1.7 ms a score against 2.8 ms on a QuantileDMatrix binned on the training
    # cuts, medians of 60 scores).
    dvalid = validation_matrix(data, params, dtrain)
    booster = xgb.Booster(params, [dtrain, dvalid])  # both cached: a score predicts only the trees added since
    best, best_round = math.inf, 0
    for i in range(max_rounds):
        booster.update(dtrain, i)
        rounds = i + 1
        if rounds % eval_every and rounds < max_rounds:
            continue
        # "[i]\tvalid-logloss:0.27" (the last metric is the one to stop on, as in xgb.train)
        score = float(booster.eval_set([(dvalid, "valid")], i).rsplit(":", 1)[1])
        if score < best:
            best, best_round = score, rounds
        if on_eval is not None:
            on_eval(booster, rounds, score)
        if rounds - best_round >= early_stopping_rounds:
            break
    return booster[:best_round] if best_round < booster.num_boosted_rounds() else booster


def refresh_booster(
    booster: xgb.Booster, data: TrainingData, params: dict[str, Any], rounds: int, early_stopping_rounds: int
) -> xgb.Booster:
    """Continue boosting an existing model on new data (XGBoost training continuation), keeping its parameters;
    adds at most `rounds` trees, stopping early on the new validation rows. The input booster is not changed."""
    base_rounds = booster.num_boosted_rounds()
    nthread = int(params.get("nthread", 0))
    grown = xgb.train(
        params,
        dmatrix(data.x_train, data.y_train, nthread, data.w_train),
        num_boost_round=rounds,
        evals=[(dmatrix(data.x_valid, data.y_valid, nthread, data.w_valid), "valid")],
        early_stopping_rounds=early_stopping_rounds,
        xgb_model=booster.copy(),
        verbose_eval=False,
    )
    best = max(grown.best_iteration + 1, base_rounds)
    return grown[:best] if best < grown.num_boosted_rounds() else grown
