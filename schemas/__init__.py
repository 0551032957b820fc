"""Every contract: the pipeline config, the pandera data schemas and the schema loader."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used: `mlcycle.schemas.config` alone (schema infer, init) needs no pandera
    import pandera.pandas as pa

from mlcycle.schemas.config import PipelineConfig, load_config

__all__ = ["PipelineConfig", "is_file_ref", "load_config", "load_schema_file", "resolve_schema", "schema_fingerprint"]


def resolve_schema(ref: str) -> type[pa.DataFrameModel]:
    """The pandera model a config names: `path/to/file.py:Class` (a project's schema, loaded from that file; a
    relative path is relative to the current folder, the project's) or `package.module:Class` (imported, as the
    built-in demos are). A model bundle keeps a copy of its schema file and names that copy once loaded."""
    import pandera.pandas as pa

    location, _, attr = ref.rpartition(":")
    if not location or not attr:
        raise ValueError(f"schema {ref!r} is not `path/to/file.py:Class` or `module:Class`")
    try:
        if is_file_ref(ref):
            model = getattr(load_schema_file(Path(location)), attr)
        else:
            model = getattr(_import(location), attr)
    except (ImportError, AttributeError, OSError, SyntaxError) as exc:
        raise ValueError(f"schema {ref!r} cannot be loaded: {exc}") from exc
    if not (isinstance(model, type) and issubclass(model, pa.DataFrameModel)):
        raise ValueError(f"schema {ref!r} is not a pandera DataFrameModel")
    return model


def is_file_ref(ref: str) -> bool:
    """A reference to a schema file of the project (`schemas/loans.py:LoansSchema`), not to a module."""
    return ref.rpartition(":")[0].endswith(".py")


def _import(module_name: str) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError:
        # Models trained before mlcycle had one import name refer to the demos as `schemas.<demo>`.
        if module_name.startswith("schemas."):
            return importlib.import_module(f"mlcycle.{module_name}")
        raise


def load_schema_file(path: Path) -> ModuleType:
    """A project's schema file as a module of its own (what `resolve_schema` reads a file reference with), named after its content: the same file loads once, an edited one
    anew (a reloaded service compares the two), and no name of the user's project can shadow one of mlcycle's."""
    source = path.read_bytes()
    name = f"mlcycle_project_schema_{path.stem}_{hashlib.sha256(source).hexdigest()[:12]}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"{path} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # pandera reads the annotations through the module the classes name
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def schema_fingerprint(model: type[pa.DataFrameModel]) -> str:
    """A short hash of the schema's serialised form, recorded in the model's lineage."""
    schema = model.to_schema()
    described = {
        name: [str(column.dtype), column.nullable, [[c.name, repr(c.statistics)] for c in column.checks]]
        for name, column in schema.columns.items()
    }
    text = json.dumps(described, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
