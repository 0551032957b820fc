"""A secret goes nowhere: a training run whose SQL source URL carries a password through an environment variable and
whose MLflow URI carries one through a Prefect Secret block, against the suite's real PostgreSQL, MLflow and Prefect
servers; afterwards no file of the run's home, the model store, the MLflow server's store or the Prefect server's
database, and nothing the run printed, holds either password."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from mlcycle.schemas import load_config
from tests.integration.conftest import SMALL_RUN
from tests.integration.test_postgres import Postgres, _sql, postgres  # noqa: F401  (the server fixture)
from tests.integration.test_tracking import free_port, mlflow_server

pytestmark = pytest.mark.integration

PG_SENTINEL = "pg-S3ntinel-7f3a9"
MLFLOW_SENTINEL = "mlflow-S3ntinel-c41d2"

SCHEMA = """import pandera.pandas as pa
from pandera.typing import Series


class VaultFeatures(pa.DataFrameModel):
    amount: Series[float]
    segment: Series[str] = pa.Field(isin=["a", "b", "c"])

    class Config:
        strict = True
        coerce = True


class VaultSchema(VaultFeatures):
    y: Series[str] = pa.Field(isin=["no", "yes"])
"""


def hits(paths: list[Path], *needles: str) -> list[str]:
    """Every file under `paths` (binary, compressed or not) whose bytes hold one of the needles."""
    found = []
    for root in paths:
        for path in [root] if root.is_file() else root.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                found += [f"{path}: {n}" for n in needles if n.encode() in data]
    return found


def test_secrets_by_reference_reach_no_file_no_database_and_no_log(  # type: ignore[no-untyped-def]
    postgres: Postgres,  # noqa: F811
    prefect_server: None,
    local_ray: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    from prefect.blocks.system import Secret
    from prefect.settings import get_current_settings

    from mlcycle.flows.training import train_flow
    from mlcycle.tasks.registry.bundle import load_bundle

    postgres.create_database("warehouse")
    _sql(postgres, "warehouse", "CREATE TABLE loans (seq SERIAL PRIMARY KEY, amount DOUBLE PRECISION, segment TEXT, "
                                "y TEXT)")  # fmt: skip
    rng = np.random.default_rng(0)
    rows = [{"amount": float(a), "segment": s, "y": "yes" if (a > 500) ^ (s == "c") else "no"}
            for a, s in zip(rng.integers(0, 1000, 600), rng.choice(["a", "b", "c"], 600), strict=True)]  # fmt: skip
    _sql(postgres, "warehouse", "INSERT INTO loans (amount, segment, y) VALUES (:amount, :segment, :y)", params=rows)

    home, project = tmp_path / "home", tmp_path / "project"
    (project / "schemas").mkdir(parents=True)
    (project / "schemas" / "vault.py").write_text(SCHEMA)
    monkeypatch.setenv("MLCYCLE_HOME", str(home))
    monkeypatch.setenv("PG_PASSWORD", PG_SENTINEL)
    monkeypatch.chdir(project)
    with mlflow_server(tmp_path / "mlflow", free_port()) as url:
        host = url.removeprefix("http://")
        Secret(value=f"http://mlcycle:{MLFLOW_SENTINEL}@{host}").save("vault-mlflow-uri", overwrite=True)
        config_file = project / "vault.yaml"
        config_file.write_text(yaml.safe_dump({
            "name": "vault", "schema_ref": "schemas/vault.py:VaultSchema",
            "features_schema_ref": "schemas/vault.py:VaultFeatures", "target": "y", "task": "binary",
            "positive_label": "yes", "split": {"strategy": "stratified"},
            "source": {"kind": "sql", "sql": {
                "url": f"postgresql+pg8000://postgres:${{PG_PASSWORD}}@127.0.0.1:{postgres.port}/warehouse",
                "table": "loans", "watermark": "seq", "columns": ["amount", "segment", "y"]}},
            "tracking": {"mlflow_uri": "{{ prefect.blocks.secret.vault-mlflow-uri }}"},
        }))  # fmt: skip
        small = {k: v for k, v in SMALL_RUN.items() if k != "source.sample_rows"}
        result = train_flow(load_config(config_file, small))
        assert result.rows["train"] > 300  # the rows came from PostgreSQL, through the resolved URL
        assert "pushed" in result.tracking, result.tracking  # and the run reached MLflow through the resolved URI
        shown = subprocess.run([sys.executable, "-c", "from mlcycle.flows.cli import main; main()", "models", "show",
                                result.tag], capture_output=True, text=True, timeout=120)  # fmt: skip
        assert shown.returncode == 0, shown.stderr
        assert "${PG_PASSWORD}" in shown.stdout  # the reference is what a model records
    database = Path(get_current_settings().server.database.connection_url.get_secret_value().split("///")[-1])
    model_folder = load_bundle(result.tag).folder
    assert model_folder is not None and database.is_file()
    printed = capfd.readouterr()
    places = [home, model_folder, tmp_path / "mlflow", *database.parent.glob(database.name + "*")]
    assert hits(places, PG_SENTINEL, MLFLOW_SENTINEL) == []
    assert PG_SENTINEL not in printed.out + printed.err + shown.stdout + shown.stderr
    assert MLFLOW_SENTINEL not in printed.out + printed.err + shown.stdout + shown.stderr
