"""Run the training flow against a real two-node Ray cluster on this machine and print what it did as JSON.

Started as a subprocess by test_cluster_flow.py (the session's local Ray would clash with the cluster), with the
session's Prefect server in PREFECT_API_URL and a fresh MLCYCLE_HOME. `cluster_flow.py data-parallel`: the trials
and the final fit train data-parallel with Ray Train, one worker per node.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import ray
from ray.cluster_utils import Cluster

ROOT = Path(__file__).resolve().parents[2]
REPORT = "REPORT "  # the report line is marked: Ray's raylet may print warnings to stdout after it


def main() -> None:
    # Ray resolves "127.0.0.1" in an address to the machine's outward-facing IP; keep every connection of this
    # test on loopback instead (the nodes below are started on 127.0.0.1).
    ray._private.services.node_ip_address_from_perspective = lambda address=None: "127.0.0.1"
    os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "600")  # see cluster_search.py
    cluster = Cluster(initialize_head=True,
                      head_node_args={"num_cpus": 1, "include_dashboard": False, "node_ip_address": "127.0.0.1"})  # fmt: skip
    cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
    cluster.wait_for_nodes()
    os.environ["RAY_ADDRESS"] = cluster.address
    try:
        print(REPORT + json.dumps(train(data_parallel=sys.argv[1:] == ["data-parallel"])))
    finally:
        ray.shutdown()
        cluster.shutdown()


def train(data_parallel: bool) -> dict[str, object]:
    from flows.training import train_flow
    from schemas import load_config
    from tasks.registry.bundle import load_bundle

    # 5,000 rows a file: blocks of more than Ray's 100 KB, which live in an object store, not inline with their owner
    overrides = {"source.sample_rows": 5000, "tune.num_samples": 2, "tune.max_rounds": 60, "tune.report_every": 5,
                 "tune.grace_progress": 1, "tune.early_stopping_rounds": 10, "tune.searcher": "random",
                 "tune.time_budget_s": None, "gate.bootstrap_samples": 200, "gate.latency_p99_ms": 1e6,
                 "gate.smoke_test": False}  # fmt: skip
    if data_parallel:
        overrides |= {"tune.num_samples": 1, "tune.data_parallel_workers": 2, "tune.max_rounds": 40}
    config = load_config(ROOT / "configs" / "adult.yaml", overrides)
    result = train_flow(config)
    lineage = load_bundle(result.tag).lineage
    trials = json.loads((Path(result.report).parent / "trials.json").read_text())["trials"]
    return {
        "cluster_nodes": sorted(n["NodeID"] for n in ray.nodes() if n["Alive"]),
        "training_data": lineage["training_data"],
        "trial_nodes": [t.get("node_id") for t in trials],
        "worker_nodes": [t.get("worker_nodes") for t in trials],
        "rows": result.rows,
        "test_roc_auc": result.test["roc_auc"],
    }


if __name__ == "__main__":
    sys.exit(main())
