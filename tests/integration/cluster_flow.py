"""Run the training flow against a real two-node Ray cluster on this machine and print what it did as JSON.

Started as a subprocess by test_cluster_flow.py (the session's local Ray would clash with the cluster), with the
session's Prefect server in PREFECT_API_URL and a fresh MLCYCLE_HOME. `cluster_flow.py data-parallel`: the trials
and the final fit train data-parallel with Ray Train, one worker per node.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import ray
from cluster_search import REPORT, loopback_cluster  # this script's own folder is on sys.path

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    with loopback_cluster():
        print(REPORT + json.dumps(train(data_parallel=sys.argv[1:] == ["data-parallel"])))


def train(data_parallel: bool) -> dict[str, object]:
    from mlcycle.flows.training import train_flow
    from mlcycle.schemas import load_config
    from mlcycle.tasks.registry.bundle import load_bundle

    # 5,000 rows a file: blocks of more than Ray's 100 KB, which live in an object store, not inline with their owner
    overrides = {"source.sample_rows": 5000, "tune.num_samples": 2, "tune.max_rounds": 60, "tune.report_every": 5,
                 "tune.grace_progress": 1, "tune.early_stopping_rounds": 10, "tune.searcher": "random",
                 "tune.time_budget_s": None, "gate.bootstrap_samples": 200, "gate.latency_p99_ms": 1e6,
                 "gate.smoke_test": False}  # fmt: skip
    if data_parallel:
        overrides |= {"tune.num_samples": 1, "tune.data_parallel_workers": 2, "tune.max_rounds": 40}
    else:
        # Trials long enough (1,000 rounds, none stopped early) that a trial's worker starting cold on the other
        # node is up before the first node's trials are done: Tune reuses a finished trial's actor for the next
        # trial, so short trials could all run, one after another, in one node's actor.
        overrides |= {"tune.num_samples": 4, "tune.max_rounds": 1000, "tune.early_stopping_rounds": 1000,
                      "tune.grace_progress": 1000}  # fmt: skip
    config = load_config(ROOT / "configs" / "adult.yaml", overrides)
    result = train_flow(config)
    lineage = load_bundle(result.tag).lineage
    trials = json.loads((Path(result.report).parent / "trials.json").read_text())["trials"]
    return {
        "cluster_nodes": sorted(n["NodeID"] for n in ray.nodes() if n["Alive"]),
        "training_data": lineage["training_data"],
        "trial_nodes": [t.get("node_id") for t in trials],
        "trials": [{k: t.get(k) for k in ("trial_id", "node_id", "pid", "seconds", "boosted")} for t in trials],
        "worker_nodes": [t.get("worker_nodes") for t in trials],
        "rows": result.rows,
        "test_roc_auc": result.test["roc_auc"],
    }


if __name__ == "__main__":
    sys.exit(main())
