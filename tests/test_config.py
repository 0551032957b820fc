"""The pipeline config: the shipped configs load, and bad ones are refused with the reason."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from mlcycle.schemas import load_config, resolve_schema
from mlcycle.schemas.config import PipelineConfig
from tests.conftest import ROOT


@pytest.mark.parametrize("name", ["adult", "bike"])
def test_shipped_configs_load_and_name_importable_schemas(name: str) -> None:
    config = load_config(ROOT / "configs" / f"{name}.yaml")
    assert config.name == name
    training, features = resolve_schema(config.schema_ref), resolve_schema(config.features_schema_ref)
    assert config.target in training.to_schema().columns
    assert config.target not in features.to_schema().columns


def test_overrides_reach_nested_fields() -> None:
    config = load_config(ROOT / "configs/adult.yaml", {"tune.num_samples": 3, "source.sample_rows": 100})
    assert config.tune.num_samples == 3
    assert config.source.sample_rows == 100


def test_unknown_key_is_refused(tmp_path: Path) -> None:
    text = (ROOT / "configs/adult.yaml").read_text() + "\nlearning_rate: 0.1\n"
    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(ValidationError, match="learning_rate"):
        load_config(tmp_path / "c.yaml")


def test_binary_task_needs_a_positive_label() -> None:
    raw = load_config(ROOT / "configs/adult.yaml").model_dump()
    raw["positive_label"] = None
    with pytest.raises(ValidationError, match="positive_label"):
        PipelineConfig.model_validate(raw)


def test_missing_config_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_schema_ref_that_does_not_import_is_reported() -> None:
    with pytest.raises(ValueError, match="cannot be loaded"):
        resolve_schema("mlcycle.schemas.adult:NoSuchSchema")


def test_a_schema_file_of_the_project_is_loaded_by_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A project's schema is a file named by path from the project folder, never a module on sys.path: a
    `schemas` folder of the user's shadows nothing of mlcycle's, and an edited file loads anew."""
    (tmp_path / "schemas").mkdir()
    schema = tmp_path / "schemas" / "loans.py"
    schema.write_text("import pandera.pandas as pa\nfrom pandera.typing import Series\n\n\n"
                      "class LoansFeatures(pa.DataFrameModel):\n    amount: Series[float]\n")  # fmt: skip
    monkeypatch.chdir(tmp_path)
    first = resolve_schema("schemas/loans.py:LoansFeatures")
    assert list(first.to_schema().columns) == ["amount"]
    assert resolve_schema("schemas/loans.py:LoansFeatures") is first
    schema.write_text(schema.read_text() + "    term: Series[int]\n")
    assert list(resolve_schema("schemas/loans.py:LoansFeatures").to_schema().columns) == ["amount", "term"]
    assert "schemas" not in sys.modules or "mlcycle" in str(getattr(sys.modules["schemas"], "__file__", ""))
    with pytest.raises(ValueError, match=r"schemas/gone.py:X.*cannot be loaded"):
        resolve_schema("schemas/gone.py:X")


def test_a_demo_config_is_found_by_name_outside_the_repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_config("adult").name == "adult"
    assert load_config("configs/penguins.yaml").name == "penguins"
    with pytest.raises(FileNotFoundError, match="the built-in demos are adult, bike, penguins"):
        load_config("configs/nope.yaml")
