"""mlcycle: the whole machine-learning cycle for tabular data as Prefect flows.

The package's subpackages are the repository's top-level folders (`flows`, `tasks`, `schemas`, `serving`, `configs`),
mapped under this one import name when it is installed (docs/architecture.md). From Python:

    import mlcycle
    mlcycle.train("adult", tune={"time_budget_s": 60})
    mlcycle.load("adult").predict(frame)
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from mlcycle.api import Model, Project, RecordError, ValidationError, demo_data, init, load, models, train

try:
    __version__ = version("mlcycle")
except PackageNotFoundError:  # a checkout that was never installed
    __version__ = "0+unknown"

__all__ = [
    "Model",
    "Project",
    "RecordError",
    "ValidationError",
    "__version__",
    "demo_data",
    "init",
    "load",
    "models",
    "train",
]
