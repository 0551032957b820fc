"""The pipeline config: the shipped configs load, and bad ones are refused with the reason."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from schemas import load_config, resolve_schema
from schemas.config import PipelineConfig
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
    with pytest.raises(ValueError, match="cannot be imported"):
        resolve_schema("schemas.adult:NoSuchSchema")
