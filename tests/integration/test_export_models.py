"""Export parity of real trained models, Adult (binary) and Bike Sharing (regression), in both formats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlcycle.flows.cli import app
from mlcycle.schemas import resolve_schema
from mlcycle.tasks.registry.bundle import load_bundle
from mlcycle.tasks.registry.export import PARITY_TOLERANCE, export_model, records_of
from mlcycle.tasks.registry.reproduce import rebuild_splits
from mlcycle.tasks.registry.smoke import golden_records

pytestmark = pytest.mark.integration


def _rows(tag: str, n: int = 200) -> list[dict]:  # type: ignore[type-arg]
    """The golden requests plus `n` rows of the model's own test split, as request records."""
    bundle = load_bundle(tag)
    fields = list(resolve_schema(bundle.config.features_schema_ref).to_schema().columns)
    return golden_records(bundle.config) + records_of(rebuild_splits(bundle).test.head(n), fields)


@pytest.mark.parametrize("fmt", ["onnx", "xgboost-json"])
@pytest.mark.parametrize("dataset", ["adult", "bike"])
def test_exported_model_matches_the_registered_one(request, dataset: str, fmt: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, result = request.getfixturevalue(f"{dataset}_run")
    rows = _rows(result.tag)
    assert len(rows) > 100  # the golden requests and the test split's rows (bike's small run tests on 150)
    report = export_model(result.tag, fmt, tmp_path / fmt, records=rows)  # type: ignore[arg-type]
    assert report.parity_max_abs_diff <= PARITY_TOLERANCE and report.parity_rows == len(rows)
    assert report.trees == load_bundle(result.tag).booster.num_boosted_rounds()
    assert report.folder_bytes > report.model_bytes > 0 and report.latency_p99_ms > 0
    print(f"{dataset} {fmt}: {report.model_bytes} B model, {report.folder_bytes} B folder, {report.trees} trees, "
          f"max diff {report.parity_max_abs_diff:.3g}, p50 {report.latency_p50_ms:.3f} ms")  # fmt: skip


def test_compact_export_caps_trees_and_depth_and_reports_the_cost(adult_run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, result = adult_run
    runner = CliRunner()
    out = tmp_path / "compact"
    answer = runner.invoke(app, ["export", result.tag, "--format", "onnx", "--out", str(out), "--compact",
                                 "--max-trees", "10", "--max-depth", "2"])  # fmt: skip
    assert answer.exit_code == 0, answer.output
    report = json.loads((out / "export.json").read_text())
    compact = report["compact"]
    assert 1 <= compact["trees"] <= 10 and report["trees"] == compact["trees"]
    assert compact["metric"] == "roc_auc" and compact["cost"] == pytest.approx(compact["full"] - compact["compact"])
    assert report["parity_max_abs_diff"] <= PARITY_TOLERANCE
    trees = json.loads((out / "meta.json").read_text())["trees"]
    assert trees == compact["trees"]


def test_export_of_an_unknown_format_or_model_fails_clearly(adult_run) -> None:  # type: ignore[no-untyped-def]
    runner = CliRunner()
    bad = runner.invoke(app, ["export", adult_run[1].tag, "--format", "tflite"])
    assert bad.exit_code == 2 and "--format must be onnx or xgboost-json" in bad.output
    missing = runner.invoke(app, ["export", "adult:doesnotexist"])
    assert missing.exit_code == 1 and "export failed" in missing.output
