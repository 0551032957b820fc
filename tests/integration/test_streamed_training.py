"""A snapshot larger than the driver holds: the training flow samples what it keeps in the driver, and the model's
rows come as Ray Data from the curated store, on this machine's own Ray."""

from __future__ import annotations

import pytest

import tasks.train.dataset
from schemas import load_config
from tasks.registry.bundle import load_bundle
from tests.conftest import ROOT
from tests.integration.conftest import SMALL_RUN

pytestmark = pytest.mark.integration


def test_a_snapshot_larger_than_the_driver_holds_trains_from_ray_data(
    prefect_server: None, local_ray: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.training import train_flow

    monkeypatch.setattr(tasks.train.dataset, "SAMPLE_ROWS", 2500)  # of the 6,000 rows below
    config = load_config(ROOT / "configs" / "adult.yaml",
                         {**SMALL_RUN, "name": "adult-streamed", "source.sample_rows": 3000, "gate.smoke_test": False})  # fmt: skip
    result = train_flow(config)
    bundle = load_bundle(result.tag)
    data = bundle.lineage["training_data"]
    assert data["form"] == "ray data" and data["sampled"]
    assert data["rows"] == [result.rows["train"], result.rows["valid"]]
    assert sum(result.rows.values()) == 6000  # the split counts every row, not the driver's sample
    sample = bundle.metrics["test_sample"]
    assert sample["of"] == result.rows["test"] == 3000 and 0 < sample["rows"] < 3000 == sample["of"]
    assert data["test_rows_evaluated"] == sample["rows"]
    assert result.test["roc_auc"] > 0.85
