"""The final fit: both rules of `tune.final_fit` do what the config says."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from schemas import load_config
from tasks.train import TrainingData, fit_final_model
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
