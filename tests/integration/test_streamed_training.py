"""A snapshot larger than the driver holds: the training flow samples what it keeps in the driver, and the model's
rows come as Ray Data from the curated store, on this machine's own Ray."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import ray

import mlcycle.tasks.train.dataset
from mlcycle.schemas import load_config
from mlcycle.tasks.registry.bundle import load_bundle
from tests.conftest import ROOT
from tests.integration.conftest import SMALL_RUN

pytestmark = pytest.mark.integration


def test_a_snapshot_larger_than_the_driver_holds_trains_from_ray_data(
    prefect_server: None, local_ray: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlcycle.flows.training import train_flow

    monkeypatch.setattr(mlcycle.tasks.train.dataset, "SAMPLE_ROWS", 2500)  # of the 6,000 rows below
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
    # One trial at a time on every CPU: side by side, each would hold its own binned copy of the rows.
    trials = json.loads((Path(result.report).parent / "trials.json").read_text())["trials"]
    cpus = int(ray.cluster_resources()["CPU"])
    assert len(trials) == 2 and all(trial["threads"] == cpus for trial in trials), trials


def test_streamed_rows_carry_the_sample_weights_and_every_class(
    prefect_server: None, local_ray: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The weighted multiclass survey of test_weighted, larger than the driver holds: the Ray Data blocks carry the
    weight beside the label, and the classes come from every training row's label, not the driver's sample."""
    from mlcycle.flows.training import train_flow
    from mlcycle.schemas.config import PipelineConfig
    from tests.integration.test_weighted import survey_file

    monkeypatch.setattr(mlcycle.tasks.train.dataset, "SAMPLE_ROWS", 600)  # of the 1,400 rows of the survey
    raw = {"name": "survey_streamed", "schema_ref": "tests.integration.test_weighted:SurveySchema",
           "features_schema_ref": "tests.integration.test_weighted:SurveyFeatures", "target": "level",
           "task": "multiclass", "weight": "w", "source": {"kind": "files", "files": [{"path": str(survey_file(tmp_path))}]}}  # fmt: skip
    for dotted, value in {**SMALL_RUN, "gate.smoke_test": False}.items():
        if dotted != "source.sample_rows":
            *parents, leaf = dotted.split(".")
            node = raw
            for key in parents:
                node = node.setdefault(key, {})
            node[leaf] = value
    config = PipelineConfig.model_validate(raw)
    result = train_flow(config)
    bundle = load_bundle(result.tag)
    assert bundle.lineage["training_data"]["form"] == "ray data" and bundle.lineage["training_data"]["sampled"]
    assert bundle.classes == ["high", "low", "mid"] and bundle.lineage["sample_weight"] == "w"
    probe = pd.DataFrame({"x": [-0.8, 0.0, 0.8], "z": [0.0, 0.0, 0.0]})
    probs = bundle.predict_raw(probe)
    own = [bundle.classes.index(level) for level in ("low", "mid", "high")]
    # weighted, a respondent's own level has 5/6 of the mass; unweighted it would have at most 1/2
    assert (probs[np.arange(3), own] > 0.6).all()
