"""Data-parallel XGBoost (Ray Train, two workers on the local Ray) with a multiclass objective and sample weights:
each worker's shard carries its rows' weights, and the booster learns what the weights say, as one process does."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from mlcycle.tasks.train.boost import TrainingData, fit_booster, xgb_params
from mlcycle.tasks.train.distributed import fit_data_parallel, shard_data

pytestmark = pytest.mark.integration


def test_data_parallel_multiclass_training_uses_the_sample_weights(local_ray: None) -> None:
    rng = np.random.default_rng(0)
    n = 1500
    x = pd.DataFrame({"a": np.repeat(rng.uniform(-1, 1, n), 2)})
    own = np.digitize(x["a"].to_numpy(), [-1 / 3, 1 / 3]).astype(float)
    # every row twice: its own class (weight 5) and the next class (weight 1)
    y = np.where(np.arange(2 * n) % 2 == 0, own, (own + 1) % 3)
    w = np.where(np.arange(2 * n) % 2 == 0, 5.0, 1.0)
    data = TrainingData(x[:2400], y[:2400], x[2400:], y[2400:], w[:2400], w[2400:], num_class=3)
    params = xgb_params("multiclass", {"eta": 0.3, "max_depth": 2}, nthread=1, seed=0, num_class=3)
    with tempfile.TemporaryDirectory() as storage:
        fit = fit_data_parallel(shard_data(data), params, 100, 10, 2, Path(storage), "mc-weights")
    assert sum(worker["rows"] for worker in fit.workers) == 2400 and len(fit.workers) == 2
    probe = xgb.DMatrix(pd.DataFrame({"a": [-0.8, 0.0, 0.8]}))
    parallel = fit.booster.predict(probe)
    single = fit_booster(data, params, 100, 10).predict(probe)
    assert parallel.shape == (3, 3)
    assert parallel[np.arange(3), [0, 1, 2]] == pytest.approx([5 / 6] * 3, abs=0.08)  # 1/2 if unweighted
    np.testing.assert_allclose(parallel, single, atol=0.05)
