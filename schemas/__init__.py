"""Every contract: the pipeline config, the pandera data schemas and the schema loader."""

from __future__ import annotations

import hashlib
import importlib
import json

import pandera.pandas as pa

from schemas.config import PipelineConfig, load_config

__all__ = ["PipelineConfig", "load_config", "resolve_schema", "schema_fingerprint"]


def resolve_schema(ref: str) -> type[pa.DataFrameModel]:
    """Import a pandera model named `module:Class`."""
    module_name, _, attr = ref.partition(":")
    try:
        model = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"schema {ref!r} cannot be imported: {exc}") from exc
    if not (isinstance(model, type) and issubclass(model, pa.DataFrameModel)):
        raise ValueError(f"schema {ref!r} is not a pandera DataFrameModel")
    return model


def schema_fingerprint(model: type[pa.DataFrameModel]) -> str:
    """A short hash of the schema's serialised form, recorded in the model's lineage."""
    schema = model.to_schema()
    described = {
        name: [str(column.dtype), column.nullable, [[c.name, repr(c.statistics)] for c in column.checks]]
        for name, column in schema.columns.items()
    }
    text = json.dumps(described, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
