"""Run a small search on a real two-node Ray cluster on this machine and print each trial's node as JSON.

`cluster_search.py`: trials of one process each, spread over the nodes. `cluster_search.py data-parallel`: every
trial, and then the final fit, trains data-parallel with Ray Train across two workers, one per node. Started as a
subprocess by test_tune.py, so that the cluster does not clash with the test session's local Ray.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import ray
import xgboost as xgb
from ray.cluster_utils import Cluster
from sklearn.metrics import roc_auc_score

from mlcycle.schemas import load_config
from mlcycle.schemas.config import TuneConfig
from mlcycle.tasks.train.boost import TrainingData, fit_booster, xgb_params
from mlcycle.tasks.train.final import fit_final_model
from mlcycle.tasks.train.tune import tune_xgboost

ROOT = Path(__file__).resolve().parents[2]

# The report line is marked: Ray's raylet may print warnings to stdout after it.
REPORT = "REPORT "


@contextmanager
def loopback_cluster() -> Iterator[Cluster]:
    """A real Ray cluster of two nodes with one CPU each, both on loopback (its traffic never leaves this machine),
    as RAY_ADDRESS for the duration."""
    # Ray resolves "127.0.0.1" in an address to the machine's outward-facing IP; keep every connection of this
    # test on loopback instead (the nodes below are started on 127.0.0.1).
    ray._private.services.node_ip_address_from_perspective = lambda address=None: "127.0.0.1"
    # Ray Train gives a worker group 60 s to start; on this shared 2-core machine starting two worker processes
    # can take longer than that, and a timed-out start is retried while its placement group lingers.
    os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "600")
    cluster = Cluster(initialize_head=True,
                      head_node_args={"num_cpus": 1, "include_dashboard": False, "node_ip_address": "127.0.0.1"})  # fmt: skip
    cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
    cluster.wait_for_nodes()
    os.environ["RAY_ADDRESS"] = cluster.address
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


def main() -> None:
    with loopback_cluster():
        print(REPORT + json.dumps(data_parallel() if sys.argv[1:] == ["data-parallel"] else spread_trials()))


def spread_trials() -> dict[str, Any]:
    rng = np.random.default_rng(0)
    n = 30_000
    x = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n)})
    y = (x["a"] + rng.normal(scale=0.5, size=n) > 0).to_numpy(dtype=float)
    data = TrainingData(x[:20_000], y[:20_000], x[20_000:], y[20_000:])
    # Trials long enough (a few seconds, no early stop) that both nodes' slots fill before the first one frees.
    settings = TuneConfig(
        num_samples=4, max_rounds=300, early_stopping_rounds=300, report_every=50, grace_progress=1000
    )
    result = tune_xgboost(data, "binary", settings, seed=0, storage=Path(tempfile.mkdtemp()), experiment="cluster")
    nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    return {"trial_nodes": [t["node_id"] for t in result.trials], "cluster_nodes": sorted(nodes)}


def data_parallel() -> dict[str, Any]:
    rng = np.random.default_rng(1)
    n = 6000
    x = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n),
                      "c": pd.Categorical(rng.choice(["u", "v", "w"], size=n))})  # fmt: skip
    y = (x["a"] - x["b"] + (x["c"] == "u") + rng.normal(scale=0.7, size=n) > 0.3).to_numpy(dtype=float)
    data = TrainingData(x[:4000], y[:4000], x[4000:5000], y[4000:5000])
    x_test, y_test = x[5000:], y[5000:]
    overrides = {"tune.num_samples": 1, "tune.data_parallel_workers": 2, "tune.max_rounds": 200,
                 "tune.report_every": 50, "tune.grace_progress": 1000, "tune.final_fit": "train", "tune.resume": False,
                 "tune.searcher": "random", "tune.time_budget_s": None}  # fmt: skip
    config = load_config(ROOT / "configs/adult.yaml", overrides)
    result = tune_xgboost(data, "binary", config.tune, config.seed, Path(tempfile.mkdtemp()), "data-parallel")
    final = fit_final_model(data, result.best_config, result.best_rounds, config)
    # The same configuration in one process, as the reference for the data-parallel booster's quality.
    single = fit_booster(data, xgb_params("binary", result.best_config, 1, config.seed), config.tune.max_rounds,
                         config.tune.early_stopping_rounds)  # fmt: skip
    nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    return {
        "cluster_nodes": sorted(nodes),
        "trials": [{k: t.get(k) for k in ("status", "worker_nodes", "worker_rows", "rounds")} for t in result.trials],
        "final_is_booster": isinstance(final, xgb.Booster),
        "final_auc": float(roc_auc_score(y_test, final.predict(xgb.DMatrix(x_test, enable_categorical=True)))),
        "single_auc": float(roc_auc_score(y_test, single.predict(xgb.DMatrix(x_test, enable_categorical=True)))),
        "train_rows": len(data.x_train),
    }  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
