"""Shared fixtures: one MLCYCLE_HOME, one Prefect server and one local Ray per test session."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

ADULT_RECORD: dict[str, Any] = {
    "age": 39, "workclass": "State-gov", "fnlwgt": 77516, "education": "Bachelors", "education_num": 13,
    "marital_status": "Never-married", "occupation": "Adm-clerical", "relationship": "Not-in-family",
    "race": "White", "sex": "Male", "capital_gain": 2174, "capital_loss": 0, "hours_per_week": 40,
    "native_country": "United-States",
}  # fmt: skip

BIKE_RECORD: dict[str, Any] = {
    "dteday": "2012-11-05", "season": "winter", "hr": "6am", "holiday": "No", "weekday": "Mon",
    "workingday": "Yes", "weathersit": "Mist", "temp": 6.1, "atemp": 3.0, "hum": 49.0, "windspeed": 19.0,
}  # fmt: skip

ROOT = Path(__file__).resolve().parent.parent


def pytest_configure(config: pytest.Config) -> None:
    # Before Prefect, Ray or BentoML are imported anywhere: one throw-away home for the whole session.
    home = Path(tempfile.mkdtemp(prefix="mlcycle-tests-"))
    os.environ["MLCYCLE_HOME"] = str(home)
    os.environ["BENTOML_HOME"] = str(home / "bentoml")
    from mlcycle.tasks.paths import configure_environment

    configure_environment()


def adult_rows(n: int = 40, positive_every: int = 4) -> pd.DataFrame:
    """A tiny labelled Adult frame: varied ages and hours, every `positive_every`-th row earns >50K."""
    rows = []
    for i in range(n):
        rich = i % positive_every == 0
        rows.append({**ADULT_RECORD, "age": 20 + i % 50, "hours_per_week": 20 + (i * 7) % 60,
                     "sex": "Female" if i % 3 else "Male", "education": "Masters" if rich else "HS-grad",
                     "workclass": None if i % 10 == 5 else "Private", "income": ">50K" if rich else "<=50K"})  # fmt: skip
    return pd.DataFrame(rows)


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    """A real temporary Prefect server, started once (16-18 s on a fresh home, so the wait is raised)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="session")
def local_ray() -> Iterator[None]:
    """A real local Ray with all the cores, started once, as the flows start it (tasks.train.tune.ensure_ray): the
    dashboard off, a trial's modules imported by its workers as they start."""
    import ray

    from mlcycle.tasks.train.tune import ensure_ray

    ensure_ray(None)
    yield
    ray.shutdown()


@pytest.fixture
def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    """An empty dataset store of the ingest tests' own."""
    from mlcycle.tasks.ingest.store import DatasetStore

    return DatasetStore(tmp_path / "store")
