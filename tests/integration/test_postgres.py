"""PostgreSQL for real, behind both live parts of mlcycle: the SQL source reads a growing PostgreSQL table by its
watermark, and `mlcycle deploy` runs its Prefect server on a PostgreSQL database that holds the flow runs.

The server is the distribution's PostgreSQL (Debian's `postgresql` and `postgresql-contrib`, which .ci/run
installs; Prefect's schema needs the contrib extension pg_trgm, which the PostgreSQL wheels on the registry lack),
started here as a throw-away cluster in a temporary folder and reached through its Unix socket only: it listens on
no TCP port.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from schemas import load_config
from schemas.config import PipelineConfig
from tasks.ingest.admit import BatchResult, admit_batch, plan_inputs
from tasks.ingest.store import DatasetStore, list_batches, read_ledger, read_snapshot, take_snapshot
from tests.conftest import ROOT
from tests.ingest_fixtures import TinySchema, tiny_config
from tests.integration.conftest import SMALL_RUN

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Postgres:
    """A running PostgreSQL: its socket folder, and SQLAlchemy URLs of its databases for each driver."""

    socket_dir: str
    as_user: list[str]
    bin_dir: Path

    def create_database(self, name: str) -> None:
        subprocess.run([*self.as_user, str(self.bin_dir / "createdb"), "-h", self.socket_dir, "-U", "postgres", name],
                       check=True, capture_output=True)  # fmt: skip

    def url(self, database: str, driver: str = "pg8000") -> str:
        if driver == "pg8000":
            return f"postgresql+pg8000://postgres@/{database}?unix_sock={self.socket_dir}/.s.PGSQL.5432"
        return f"postgresql+{driver}://postgres@/{database}?host={self.socket_dir}"


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    """A PostgreSQL cluster of the test's own: initdb in a temporary folder, the server on a socket in it, stopped
    and removed after the module. PostgreSQL does not run as root: as root, it runs as the `postgres` user."""
    installed = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3]))
    assert installed, "no PostgreSQL server: apt-get install postgresql postgresql-contrib (.ci/run does)"
    bin_dir = installed[-1].parent
    folder = Path(tempfile.mkdtemp(prefix="mlcycle-pg-"))
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(folder, "postgres", "postgres")
    data = folder / "data"
    subprocess.run([*as_user, str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                    "--encoding=UTF8"], check=True, capture_output=True)  # fmt: skip
    subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(folder / "log"), "-w", "-o",
                    f"-c listen_addresses='' -k {folder}", "start"], check=True, capture_output=True)  # fmt: skip
    try:
        yield Postgres(str(folder), as_user, bin_dir)
    finally:
        subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                       capture_output=True)  # fmt: skip
        shutil.rmtree(folder, ignore_errors=True)


def _sql(postgres: Postgres, database: str, *statements: str, params: list[dict] | None = None) -> list[tuple]:
    import sqlalchemy as sa

    engine = sa.create_engine(postgres.url(database))
    try:
        with engine.begin() as conn:
            rows: list[tuple] = []
            for statement in statements:
                result = conn.execute(sa.text(statement), params or {})
                rows = [tuple(r) for r in result] if result.returns_rows else rows
            return rows
    finally:
        engine.dispose()


def _run(config: PipelineConfig, store: DatasetStore) -> list[BatchResult]:
    return [admit_batch(item, config, store, TinySchema) for item in plan_inputs(config, store, TinySchema).inputs]


def test_a_growing_postgresql_table_is_ingested_by_its_watermark(postgres: Postgres, tmp_path: Path) -> None:
    postgres.create_database("live")
    _sql(postgres, "live", "CREATE TABLE readings (seq SERIAL PRIMARY KEY, id INTEGER, color TEXT, "
                           "score DOUBLE PRECISION, loaded_at TIMESTAMP WITH TIME ZONE)")  # fmt: skip
    start = datetime(2026, 1, 1, 9, tzinfo=UTC)

    def insert(rows: list[tuple[int, str, float | None]], at: datetime) -> None:
        _sql(postgres, "live", "INSERT INTO readings (id, color, score, loaded_at) VALUES (:id, :color, :score, :at)",
             params=[{"id": i, "color": c, "score": s, "at": at} for i, c, s in rows])  # fmt: skip

    store = DatasetStore(tmp_path / "store")
    config = tiny_config({"kind": "sql", "sql": {"url": postgres.url("live"), "table": "readings",
                                                 "watermark": "seq", "columns": ["id", "color", "score"]}})  # fmt: skip
    insert([(1, "red", 1.0), (2, "blue", 2.0), (3, "green", None)], start)
    (first,) = _run(config, store)
    assert first.record is not None
    assert (first.record.rows_read, first.record.watermark_from, first.record.watermark_to) == (3, None, "3")

    insert([(4, "red", 4.0), (5, "pink", 5.0)], start + timedelta(hours=1))
    (second,) = _run(config, store)
    assert second.record is not None
    assert (second.record.rows_read, second.record.rows_accepted, second.record.rows_quarantined) == (2, 1, 1)
    assert (second.record.watermark_from, second.record.watermark_to) == ("3", "5")
    assert read_ledger(store, [second.record.batch_id])[["row", "column", "value"]].values.tolist() == [
        [2, "color", "pink"]]  # fmt: skip
    assert _run(config, store) == []  # nothing new

    curated = read_snapshot(store, take_snapshot(store)).frame
    assert curated["id"].tolist() == [1, 2, 3, 4]
    assert sum(b.rows_read for b in list_batches(store)) == 5
    assert first.source.startswith("postgresql+pg8000://postgres@/live") and first.source.endswith("#readings")

    # A timestamp watermark (with a time zone) compares as a timestamp in PostgreSQL too.
    by_time = DatasetStore(tmp_path / "by-time")
    timed = config.model_copy(update={"source": config.source.model_copy(update={
        "sql": config.source.sql.model_copy(update={"watermark": "loaded_at"})})})  # type: ignore[union-attr]  # fmt: skip
    (all_so_far,) = _run(timed, by_time)
    assert all_so_far.record is not None and all_so_far.record.rows_read == 5
    insert([(6, "green", 6.0)], start + timedelta(hours=2, minutes=30))
    (newest,) = _run(timed, by_time)
    assert newest.record is not None and newest.record.rows_read == 1
    assert newest.record.watermark_to == '"2026-01-01T11:30:00+00:00"'


def _prefect(args: list[str], env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, "-m", "prefect", *args], env={**os.environ, **env}, capture_output=True,
                          text=True, cwd=ROOT)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_mlcycle_deploy_keeps_the_prefect_server_s_state_in_postgresql(
    postgres: Postgres, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from flows.deploy import deploy, undeploy

    postgres.create_database("prefect")
    overrides = {"PREFECT_HOME": str(tmp_path_factory.mktemp("prefect-home")), "PREFECT_API_URL": "",
                 "PREFECT_API_DATABASE_CONNECTION_URL": postgres.url("prefect", "asyncpg"),
                 "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",
                 "PREFECT_WORKER_QUERY_SECONDS": "3"}  # fmt: skip
    config = load_config(ROOT / "configs" / "bike.yaml", {**SMALL_RUN, "gate.smoke_test": False})
    try:
        deployed = deploy([config], ["train_flow/bike"], startup_timeout_s=240, env_overrides=overrides)
        env = {"PREFECT_API_URL": deployed.api_url, "PREFECT_HOME": overrides["PREFECT_HOME"]}
        match = re.search(r"UUID: ([0-9a-f-]{36})", _prefect(["deployment", "run", "train/bike"], env))
        assert match
        run_id = match.group(1)
        deadline = time.monotonic() + 600
        state = None
        while time.monotonic() < deadline:
            # straight from PostgreSQL: the server keeps its flow runs there
            (found,) = _sql(postgres, "prefect", f"SELECT state_type FROM flow_run WHERE id = '{run_id}'") or [(None,)]
            state = found[0]
            if state in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                break
            time.sleep(3)
        assert state == "COMPLETED"
        deployments = _sql(postgres, "prefect", "SELECT name FROM deployment")
        assert ("bike",) in deployments
    finally:
        undeploy()
