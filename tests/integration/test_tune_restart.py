"""A search that ended before any trial reported (its time budget ran out while the trials started) is started again
by the same command, not restored: restoring it brought back trials with no result and no new ones, and failed at
once, for ever, until someone deleted the experiment's folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlcycle.schemas.config import TuneConfig
from mlcycle.tasks.train.boost import TrainingData
from mlcycle.tasks.train.tune import tune_xgboost

pytestmark = pytest.mark.integration


def _data() -> TrainingData:
    rng = np.random.default_rng(0)
    x = pd.DataFrame({"a": rng.normal(size=500), "b": rng.normal(size=500)})
    y = (x["a"] - x["b"] + rng.normal(scale=0.5, size=500) > 0).to_numpy(dtype=float)
    return TrainingData(x[:350], y[:350], x[350:], y[350:])


def test_a_search_that_ended_before_any_trial_reported_starts_again(local_ray: None, tmp_path: Path) -> None:
    too_short = TuneConfig(num_samples=2, max_rounds=30, report_every=10, grace_progress=1, time_budget_s=0.01)
    with pytest.raises(RuntimeError, match="no trial reported a result"):
        tune_xgboost(_data(), "binary", too_short, 0, tmp_path, "search")
    assert (tmp_path / "search").is_dir()  # the experiment that a re-run used to restore

    # the same experiment name, as the same command run again gets; in this process too (the failed search's
    # booster keeper is gone, so its name is free)
    result = tune_xgboost(_data(), "binary", too_short.model_copy(update={"time_budget_s": None}), 0, tmp_path,
                          "search")  # fmt: skip

    assert not result.resumed
    assert len([t for t in result.trials if t["valid_score"] is not None]) == 2
