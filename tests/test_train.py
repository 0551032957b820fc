"""The boosting loop (scored every round it matches `xgb.train`; scored every few rounds it stops and cuts on those
scores) and the final fit: both rules of `tune.final_fit` do what the config says."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from pydantic import ValidationError

from mlcycle.schemas import load_config
from mlcycle.tasks.train.boost import TrainingData, dmatrix, fit_booster, xgb_params
from mlcycle.tasks.train.final import fit_final_model
from tests.conftest import ROOT


def _data(n_train: int = 300, n_valid: int = 100) -> TrainingData:
    rng = np.random.default_rng(0)

    def part(n: int) -> tuple[pd.DataFrame, np.ndarray]:
        x = pd.DataFrame(
            {"a": rng.normal(size=n), "b": pd.Categorical(rng.choice(["u", "v"], n), categories=["u", "v"])}
        )
        y = (x["a"] + (x["b"] == "u") * 0.5 + rng.normal(scale=0.5, size=n) > 0).to_numpy(dtype="float64")
        return x, y

    (xt, yt), (xv, yv) = part(n_train), part(n_valid)
    return TrainingData(x_train=xt, y_train=yt, x_valid=xv, y_valid=yv)


PARAMS = {"eta": 0.3, "max_depth": 3, "subsample": 0.8, "colsample_bytree": 0.8}


def test_scored_every_round_it_is_xgboosts_own_early_stopping_tree_for_tree() -> None:
    data = _data()
    params = xgb_params("binary", PARAMS, nthread=1, seed=3)
    ours = fit_booster(data, params, max_rounds=300, early_stopping_rounds=10)
    dtrain, dvalid = dmatrix(data.x_train, data.y_train, 1), dmatrix(data.x_valid, data.y_valid, 1)
    theirs = xgb.train(params, dtrain, 300, evals=[(dvalid, "valid")], early_stopping_rounds=10, verbose_eval=False)
    assert theirs.num_boosted_rounds() < 300  # early stopping did cut it
    assert ours.num_boosted_rounds() == theirs.best_iteration + 1
    np.testing.assert_array_equal(ours.predict(dvalid), theirs[: theirs.best_iteration + 1].predict(dvalid))


def test_scored_every_few_rounds_it_stops_and_cuts_on_those_scores() -> None:
    data = _data()
    params = xgb_params("binary", PARAMS, nthread=1, seed=3)
    scores: list[tuple[int, float]] = []
    booster = fit_booster(data, params, max_rounds=300, early_stopping_rounds=10, eval_every=4,
                          on_eval=lambda b, rounds, score: scores.append((rounds, score)))  # fmt: skip
    rounds = [r for r, _ in scores]
    assert rounds == list(range(4, 4 * len(rounds) + 1, 4)) and rounds[-1] < 300  # every 4th round, stopped early
    best_round, best = min(scores, key=lambda rs: (rs[1], rs[0]))
    assert booster.num_boosted_rounds() == best_round
    assert rounds[-1] - best_round >= 10 > rounds[-2] - best_round  # stopped at the first score 10 rounds past it
    full = fit_booster(data, params, max_rounds=best_round, early_stopping_rounds=1000)  # the same trees, unscored
    dvalid = dmatrix(data.x_valid, data.y_valid, 1)
    np.testing.assert_allclose(booster.predict(dvalid), full.predict(dvalid), rtol=1e-6)


def test_the_last_round_is_scored_even_off_the_interval() -> None:
    scores: list[int] = []
    fit_booster(_data(), xgb_params("binary", {"eta": 0.01, "max_depth": 2}, 1, 0), max_rounds=7,
                early_stopping_rounds=100, eval_every=5, on_eval=lambda b, rounds, score: scores.append(rounds))  # fmt: skip
    assert scores == [5, 7]


def test_train_valid_refit_scales_the_best_rounds_to_the_larger_data() -> None:
    config = load_config(ROOT / "configs/adult.yaml", {"tune.final_fit": "train_valid"})
    booster = fit_final_model(_data(), {"eta": 0.1, "max_depth": 2}, best_rounds=30, config=config)
    assert booster.num_boosted_rounds() == 40  # 30 rounds × 400 rows / 300 training rows


def test_train_rule_keeps_only_the_rounds_early_stopping_chose() -> None:
    config = load_config(ROOT / "configs/adult.yaml", {"tune.final_fit": "train", "tune.max_rounds": 500,
                                                       "tune.early_stopping_rounds": 5})  # fmt: skip
    booster = fit_final_model(_data(), {"eta": 0.3, "max_depth": 3}, best_rounds=0, config=config)
    assert 1 <= booster.num_boosted_rounds() < 500


def test_data_parallel_refuses_a_wall_clock_budget() -> None:
    with pytest.raises(ValidationError, match="time_budget_s cannot be combined with tune.data_parallel_workers"):
        load_config(ROOT / "configs/adult.yaml", {"tune.data_parallel_workers": 2, "tune.time_budget_s": 60})


def test_streamed_rows_on_one_machine_train_one_trial_at_a_time_on_every_cpu() -> None:
    from mlcycle.schemas.config import TuneConfig
    from mlcycle.tasks.train.boost import StreamedData
    from mlcycle.tasks.train.tune import one_trial_for_streamed_rows

    streamed = StreamedData(train=None, valid=None, columns=["a"], categories={}, rows=(9_000_000, 1_000_000))
    default = TuneConfig()
    assert one_trial_for_streamed_rows(streamed, default, cpus=4, nodes=1).cpus_per_trial == 4
    # frames in the driver, a cluster, a config that chose its own split of the cores, data-parallel trials: as set
    assert one_trial_for_streamed_rows(_data(), default, cpus=4, nodes=1).cpus_per_trial == 1
    assert one_trial_for_streamed_rows(streamed, default, cpus=4, nodes=2).cpus_per_trial == 1
    chosen = TuneConfig(cpus_per_trial=1)
    assert one_trial_for_streamed_rows(streamed, chosen, cpus=4, nodes=1).cpus_per_trial == 1
    parallel = TuneConfig(data_parallel_workers=2)
    assert one_trial_for_streamed_rows(streamed, parallel, cpus=4, nodes=1).cpus_per_trial == 1


def test_the_booster_keeper_keeps_the_best_offer_and_answers_with_its_score() -> None:
    # A trial reads the answer later, without waiting, and offers nothing no better than it.
    from mlcycle.tasks.train.keeper import BoosterKeeper

    keeper = BoosterKeeper()
    assert keeper.best_score() == float("inf") and keeper.get() is None
    assert keeper.offer(0.30, 40, "a", b"first") == 0.30
    assert keeper.offer(0.35, 60, "b", b"worse") == 0.30
    assert keeper.offer(0.25, 80, "b", b"better") == 0.25
    assert keeper.get() == (0.25, 80, "b", b"better") and keeper.best_score() == 0.25
