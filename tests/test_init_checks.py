"""`mlcycle init`'s questions and the user's answers: columns to ask about before training, `--drop`, an official
`--test` file, rows without a target and the gate's slices, on small files written here."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from mlcycle.schemas import load_schema_file
from mlcycle.schemas.api import record_model
from mlcycle.schemas.config import PipelineConfig
from mlcycle.tasks.ingest.draft import (
    USER_DROP,
    Draft,
    DraftError,
    config_yaml,
    draft_dataset,
    parse_drop,
    schema_module,
    summary_lines,
)

TODAY = datetime(2026, 12, 4, tzinfo=UTC)


def write_csv(folder: Path, name: str, columns: dict[str, Any]) -> Path:
    path = folder / name
    pd.DataFrame(columns).to_csv(path, index=False)
    return path


def trips(rows: int = 600, seed: int = 0) -> dict[str, Any]:
    """A binary target with three weak features, a named model output, a probability and a survey weight (all
    unrelated to the target, so no leak scan drops them) and sex/race columns beside yes/no questions."""
    rng = np.random.default_rng(seed)
    late = rng.random(rows) < 0.3
    return {
        "distance": (rng.normal(0, 1, rows) + 0.3 * late).round(3),
        "region": rng.choice(["n", "s", "e", "w"], rows),
        "fare": (rng.normal(0, 1, rows) + 0.2 * late).round(3),
        "prediction": rng.integers(0, 2, rows),
        "predicted_probability": rng.random(rows).round(3),
        "survey_weight": rng.uniform(0.5, 3, rows).round(3),
        "PWGTP": rng.integers(1, 400, rows),
        "late": np.where(late, "yes", "no"),
    }


def draft_of(folder: Path, columns: dict[str, Any], target: str, **options: Any) -> Draft:
    return draft_dataset(write_csv(folder, "data.csv", columns), target, name="data", today=TODAY, **options)


def column(draft: Draft, name: str):  # type: ignore[no-untyped-def]
    return next(c for c in draft.columns if c.name == name)


def import_file(path: Path, source: str) -> ModuleType:
    """A drafted schema module, written and loaded as the training flow loads a project's schema file."""
    path.write_text(source)
    return load_schema_file(path)


@pytest.mark.parametrize("task", ["binary", "regression"])
def test_a_column_far_stronger_than_the_rest_is_asked_about_not_dropped(tmp_path: Path, task: str) -> None:
    rng = np.random.default_rng(1)
    outcome = rng.normal(0, 1, 800)
    columns = {
        "start": (outcome + rng.normal(0, 0.6, 800)).round(3),  # alone: AUC ~0.92 / R² ~0.74, not a near-copy
        "age": (0.15 * outcome + rng.normal(0, 1, 800)).round(3),
        "fare": (0.1 * outcome + rng.normal(0, 1, 800)).round(3),
        "y": np.where(outcome > 0, "yes", "no") if task == "binary" else outcome.round(3),
    }
    draft = draft_of(tmp_path, columns, "y", task=task)
    start = column(draft, "start")
    assert start.role == "feature"
    checks = {c.column: c for c in draft.checks}
    assert list(checks) == ["start"]
    assert checks["start"].why.startswith("alone it gives " + ("ROC AUC 0.9" if task == "binary" else "R² 0.7"))
    assert checks["start"].answers == ["--drop start"]
    text = "\n".join(summary_lines(draft))
    assert "check before training" in text and "known when you predict? If not: --drop start" in text
    assert "#   start: alone it gives" in config_yaml(draft, "schemas/data.py")


def test_columns_of_similar_strength_raise_no_question(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    outcome = rng.normal(0, 1, 800)
    columns = {f"x{i}": (outcome + rng.normal(0, 1.2, 800)).round(3) for i in range(3)}
    draft = draft_of(tmp_path, {**columns, "y": np.where(outcome > 0, "yes", "no")}, "y")
    assert draft.checks == []


def test_model_outputs_and_weights_are_asked_about_by_their_names(tmp_path: Path) -> None:
    draft = draft_of(tmp_path, trips(), "late")
    checks = {c.column: c for c in draft.checks}
    assert set(checks) == {"prediction", "predicted_probability", "survey_weight", "PWGTP"}
    assert all(column(draft, name).role == "feature" for name in checks)
    assert "model's output" in checks["prediction"].why and "ROC AUC" in checks["prediction"].why
    assert checks["survey_weight"].answers == ["--weight survey_weight", "--drop survey_weight"]
    assert checks["survey_weight"].question == "a survey weight?"


def test_a_column_named_after_the_outcome_is_asked_about(tmp_path: Path) -> None:
    columns = {**trips(), "arrival_time": np.arange(600) % 24, "start_delay": np.arange(600) % 7}
    draft = draft_dataset(write_csv(tmp_path, "t.csv", columns), "late", weight="survey_weight", today=TODAY)
    checks = {c.column: c.why for c in draft.checks}
    assert "'arrival'" in checks["arrival_time"]
    assert "survey_weight" not in checks  # the weight the user named is answered already


def test_drop_takes_a_column_out_of_the_features_and_the_request(tmp_path: Path) -> None:
    drop = parse_drop(["fare:known only after departure", "region"])
    assert drop == {"fare": "known only after departure", "region": USER_DROP}
    draft = draft_of(tmp_path, trips(), "late", drop=drop)
    config = PipelineConfig.model_validate(yaml.safe_load(config_yaml(draft, "schemas/data.py")))
    assert config.drop["fare"] == "known only after departure"
    assert config.drop["region"] == "dropped by the user (init --drop)"
    module = import_file(tmp_path / "data_schema.py", schema_module(draft))
    assert "fare" not in module.DataFeatures.to_schema().columns
    assert "fare" in module.DataSchema.to_schema().columns  # a row of the file still holds it
    fields = record_model(module.DataFeatures).fields
    assert "fare" not in fields and "region" not in fields and "distance" in fields
    assert "fare" not in {c.column for c in draft.checks}


def test_drop_refuses_what_it_cannot_drop(tmp_path: Path) -> None:
    with pytest.raises(DraftError, match="--drop 'nope' is not a column"):
        draft_of(tmp_path, trips(), "late", drop={"nope": USER_DROP})
    with pytest.raises(DraftError, match="--drop 'late' is the target"):
        draft_of(tmp_path, trips(), "late", drop={"late": USER_DROP})


def test_an_official_test_file_is_the_test_part(tmp_path: Path) -> None:
    test = write_csv(tmp_path, "test.csv", trips(rows=120, seed=9))
    draft = draft_of(tmp_path, trips(), "late", test=test)
    raw = yaml.safe_load(config_yaml(draft, "schemas/data.py"))
    assert raw["source"]["files"] == [{"path": str(tmp_path / "data.csv")}, {"path": str(test), "part": "test"}]
    assert "test_size" not in raw["split"]
    PipelineConfig.model_validate(raw)
    assert f"test: the 120 rows of {test}" in "\n".join(summary_lines(draft))


def test_a_test_file_with_other_columns_is_refused(tmp_path: Path) -> None:
    test = write_csv(tmp_path, "test.csv", {k: v for k, v in trips(rows=50).items() if k != "fare"})
    with pytest.raises(DraftError, match="lacks fare"):
        draft_of(tmp_path, trips(), "late", test=test)


def test_rows_without_a_target_are_counted_in_the_summary(tmp_path: Path) -> None:
    columns = trips()
    columns["late"] = np.where(np.arange(600) % 20 == 0, "", columns["late"])
    draft = draft_of(tmp_path, columns, "late")
    assert draft.missing_target == 30
    text = "\n".join(summary_lines(draft))
    assert "30 rows have no target: they will be quarantined at ingest" in text
    assert "mlcycle quarantine show --config configs/data.yaml" in text


def test_slices_prefer_the_columns_checked_for_fairness(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    columns = {
        **trips(),
        "owns_car": rng.choice(["yes", "no"], 600),
        "has_pet": rng.choice(["yes", "no"], 600),
        "SEX": rng.choice([1, 2], 600),
        "RAC1P": rng.choice([1, 1, 1, 2, 6, 8, 9], 600),
    }
    draft = draft_of(tmp_path, columns, "late")
    assert draft.slices == ["SEX", "RAC1P"]
    assert "fairness" in draft.slice_reasons["SEX"] and "race" in draft.slice_reasons["RAC1P"]
    text = "\n".join(summary_lines(draft))
    assert "  SEX: checked for fairness first (sex)" in text


def test_without_such_columns_slices_are_the_most_populous_categories(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    columns = {**trips(), "tier": rng.choice(["a", "b", "c"], 600), "rare": rng.choice(["x"] * 49 + ["y"], 600)}
    draft = draft_of(tmp_path, columns, "late")
    assert draft.slices[0] == "region" and "rare" not in draft.slices
    assert "no sex, race or age column" in draft.slice_reasons["region"]


def test_init_drop_and_test_on_the_command_line(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "trips.csv", trips())
    test = write_csv(tmp_path, "trips_test.csv", trips(rows=80, seed=3))
    proc = subprocess.run([sys.executable, "-c", "from mlcycle.flows.cli import main; main()", "init", str(path),
                           "--target", "late", "--drop", "fare:known only after departure,region", "--test", str(test)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=180)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    raw = yaml.safe_load((tmp_path / "configs" / "trips.yaml").read_text())
    assert raw["drop"]["fare"] == "known only after departure" and raw["drop"]["region"] == USER_DROP
    assert raw["source"]["files"][1] == {"path": str(test), "part": "test"}
    assert "fare" not in (tmp_path / "schemas" / "trips.py").read_text().split("class TripsSchema")[0]
