"""A budget for the whole run: the search ends when what is left is what the steps after it need."""

from __future__ import annotations

import time

import pytest

from mlcycle.schemas.config import TuneConfig
from mlcycle.tasks.train.tune import RunDeadline, after_search_s


def test_the_search_stops_when_only_the_reserve_is_left() -> None:
    now = time.monotonic()
    assert not RunDeadline(now + 100, after_s=30, refit_share=None).stop_all()
    assert RunDeadline(now + 25, after_s=30, refit_share=None).stop_all()


def test_a_refit_reserves_the_best_trials_time_on_its_share_of_the_cpus() -> None:
    deadline = RunDeadline(time.monotonic() + 100, after_s=30, refit_share=0.6)
    deadline("t1", {"valid_score": 0.5, "time_total_s": 50.0})
    deadline("t2", {"valid_score": 0.4, "time_total_s": 90.0})  # the best so far: its time counts
    deadline("t3", {"valid_score": 0.45, "time_total_s": 500.0})
    assert deadline.needed_s() == pytest.approx(30 + 0.6 * 90)
    assert not deadline.stop_all()
    deadline("t2", {"valid_score": 0.39, "time_total_s": 150.0})
    assert deadline.needed_s() == pytest.approx(30 + 0.6 * 150)
    assert deadline.stop_all()


def test_the_reserve_grows_with_the_test_rows() -> None:
    assert after_search_s(0) == 30
    assert after_search_s(135_000) == pytest.approx(35.4)


def test_run_budget_is_a_config_setting() -> None:
    assert TuneConfig(run_budget_s=600).run_budget_s == 600
    with pytest.raises(ValueError, match="greater than 0"):
        TuneConfig(run_budget_s=0)


def test_the_training_flow_counts_the_budget_from_the_process_start() -> None:
    import numpy as np
    import pandas as pd

    from mlcycle.flows.training import run_deadline
    from mlcycle.schemas import load_config
    from mlcycle.tasks.train.boost import TrainingData
    from tests.conftest import ROOT

    x = pd.DataFrame({"a": np.arange(100.0)})
    data = TrainingData(x.iloc[:80], np.zeros(80), x.iloc[80:], np.zeros(20))
    adult = load_config(ROOT / "configs" / "adult.yaml")  # final_fit: train_valid, a refit
    assert run_deadline(adult, data, 1000) is None
    # a day: the whole suite's process is older than ten minutes by the time this runs, and must not matter
    budgeted = load_config(ROOT / "configs" / "adult.yaml", {"tune.run_budget_s": 86_400})
    deadline = run_deadline(budgeted, data, 1000)
    assert deadline is not None and deadline.after_s == after_search_s(1000)
    assert 0 < deadline.deadline - time.monotonic() < 86_400  # this process started before now
    assert deadline.refit_share is not None and deadline.refit_share > 0
    kept = load_config(ROOT / "configs" / "bike.yaml", {"tune.run_budget_s": 600})  # final_fit: train
    assert run_deadline(kept, data, 1000).refit_share is None  # type: ignore[union-attr]
