"""The training flow on a real two-node Ray cluster (loopback): the model-ready rows arrive as Ray Data read from
the curated Parquet by the cluster's workers, and the trials (and a data-parallel final fit) run on both nodes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration


def _run(tmp_path: Path, *args: str) -> dict:
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "MLCYCLE_HOME": str(tmp_path / "home"), "BENTOML_HOME": str(tmp_path / "home/bentoml"),
           "PREFECT_API_URL": str(PREFECT_API_URL.value())}  # fmt: skip
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run([sys.executable, str(ROOT / "tests/integration/cluster_flow.py"), *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=1200)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("REPORT ")]
    assert lines, f"no report line in the output:\n{proc.stdout[-3000:]}"
    return json.loads(lines[-1].removeprefix("REPORT "))


def test_the_training_flow_runs_on_a_two_node_cluster_with_its_data_as_ray_data(
    prefect_server: None, tmp_path: Path
) -> None:
    report = _run(tmp_path)
    assert len(report["cluster_nodes"]) == 2
    data = report["training_data"]
    assert data["form"] == "ray data"
    assert data["rows"] == [report["rows"]["train"], report["rows"]["valid"]]
    # the blocks were made by the cluster's workers and stay in their nodes' object stores
    assert set(data["block_nodes"]) <= set(report["cluster_nodes"]) and data["block_nodes"]
    # four trials, one CPU a node: trials side by side run on both nodes
    assert set(report["trial_nodes"]) == set(report["cluster_nodes"]), report["trials"]
    assert report["test_roc_auc"] > 0.8


def test_a_data_parallel_search_and_final_fit_train_across_both_nodes_from_ray_data(
    prefect_server: None, tmp_path: Path
) -> None:
    report = _run(tmp_path, "data-parallel")
    assert report["training_data"]["form"] == "ray data"
    (workers,) = report["worker_nodes"]
    assert sorted(workers) == report["cluster_nodes"]  # one Ray Train worker on each node
    assert report["test_roc_auc"] > 0.8
