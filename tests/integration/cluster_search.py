"""Run a small search on a real two-node Ray cluster on this machine and print each trial's node as JSON.

Started as a subprocess by test_tune.py, so that the cluster does not clash with the test session's local Ray.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import ray
from ray.cluster_utils import Cluster

from schemas.config import TuneConfig
from tasks.train import TrainingData
from tasks.tune import tune_xgboost


def main() -> None:
    # Ray resolves "127.0.0.1" in an address to the machine's outward-facing IP; keep every connection of this
    # test on loopback instead (the nodes below are started on 127.0.0.1).
    ray._private.services.node_ip_address_from_perspective = lambda address=None: "127.0.0.1"
    # Two nodes with their own CPU, both on loopback: the cluster's traffic never leaves this machine.
    cluster = Cluster(initialize_head=True,
                      head_node_args={"num_cpus": 1, "include_dashboard": False, "node_ip_address": "127.0.0.1"})  # fmt: skip
    cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
    cluster.wait_for_nodes()
    os.environ["RAY_ADDRESS"] = cluster.address
    rng = np.random.default_rng(0)
    n = 30_000
    x = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n)})
    y = (x["a"] + rng.normal(scale=0.5, size=n) > 0).to_numpy(dtype=float)
    data = TrainingData(x[:20_000], y[:20_000], x[20_000:], y[20_000:])
    # Trials long enough (a few seconds, no early stop) that both nodes' slots fill before the first one frees.
    settings = TuneConfig(num_samples=4, max_rounds=300, early_stopping_rounds=300, report_every=50, grace_period=10)
    result = tune_xgboost(data, "binary", settings, seed=0, storage=Path(tempfile.mkdtemp()), experiment="cluster")
    nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    print(json.dumps({"trial_nodes": [t["node_id"] for t in result.trials], "cluster_nodes": sorted(nodes)}))
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    sys.exit(main())
