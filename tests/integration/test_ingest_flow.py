"""The ingest flow and `mlcycle ingest` under the session's real Prefect server: batches, artifacts, failure."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from mlcycle.flows.cli import app
from mlcycle.flows.ingest import IngestRejected, ingest_flow
from mlcycle.schemas.config import PipelineConfig
from mlcycle.tasks.ingest.store import DatasetStore, list_batches, read_snapshot, take_snapshot
from tests.ingest_fixtures import HEADER, good_rows, tiny_config

pytestmark = pytest.mark.integration


def _config(name: str, source: dict[str, Any], **ingest: Any) -> PipelineConfig:
    return tiny_config(source, **ingest).model_copy(update={"name": name})


def _artifacts(flow_run_id: Any) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        return client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )


def test_flow_admits_good_batches_rejects_bad_ones_and_reports_each(prefect_server: None, tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text(HEADER + good_rows(3) + "4,pink,1\n")
    (tmp_path / "b.csv").write_text(HEADER + "1,pink,1\n2,pink,2\n")
    config = _config("flow-files", {"files": [{"path": str(tmp_path / "*.csv")}]})
    state = ingest_flow(config, return_state=True)
    assert state.is_failed()
    with pytest.raises(IngestRejected, match=r"b\.csv: rejected: 2 of 2 rows quarantined \(100%\)"):
        state.result()

    store = DatasetStore.for_dataset("flow-files")
    assert [(Path(b.source).name, b.status) for b in list_batches(store)] == [
        ("a.csv", "accepted"),
        ("b.csv", "rejected"),
    ]
    artifacts = _artifacts(state.state_details.flow_run_id)
    tables = {a.key: json.loads(a.data) for a in artifacts if a.type == "table"}
    (diff,) = [a for a in artifacts if a.type == "markdown"]
    assert "| color | new categories | 2 | `pink ×2` |" in diff.data
    rows = {row["source"]: row for table in tables.values() for row in table}
    assert len(tables) == 2
    a, b = rows[str(tmp_path / "a.csv")], rows[str(tmp_path / "b.csv")]
    assert (a["status"], a["read"], a["accepted"], a["quarantined"], a["rejected"]) == ("accepted", 4, 3, 1, 0)
    assert (b["status"], b["read"], b["accepted"], b["quarantined"], b["rejected"]) == ("rejected", 2, 0, 2, 2)
    assert "color: isin(['red', 'green', 'blue']) ×2" in b["top reasons"]


def test_cli_ingests_given_paths_skips_repeats_and_fails_on_rejection(prefect_server: None, tmp_path: Path) -> None:
    config_file = tmp_path / "tiny.yaml"
    config = _config("cli-files", {"files": [{"path": str(tmp_path / "none.csv")}]})
    config_file.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    (tmp_path / "good.csv").write_text(HEADER + good_rows(2))
    (tmp_path / "bad.csv").write_text("id;color;score\n1;red;1\n")
    runner = CliRunner()

    first = runner.invoke(app, ["ingest", "--config", str(config_file), str(tmp_path / "good.csv"), "--json"])
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["batches"][0]["outcome"] == "accepted"
    again = runner.invoke(app, ["ingest", "--config", str(config_file), str(tmp_path / "good.csv")])
    assert f"| {tmp_path / 'good.csv'} | skipped |" in again.stdout  # the summary table, by default
    assert "cli-files: 1 skipped" in again.stdout
    bad = runner.invoke(app, ["ingest", "--config", str(config_file), str(tmp_path / "bad.csv")])
    assert bad.exit_code == 1
    assert "bad.csv: every line is one field: the file looks delimited by ';'" in bad.stderr
    assert f"| {tmp_path / 'bad.csv'} | rejected |" in bad.stdout


def test_a_file_appearing_during_a_run_is_ingested_whole_exactly_once(prefect_server: None, tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "first.csv").write_text(HEADER + good_rows(2))
    config = _config("flow-landing", {"kind": "landing", "landing": {"path": str(landing), "settle_s": 0.5}})
    growing = landing / "late.csv"

    def slow_writer() -> None:
        with growing.open("w") as fh:
            fh.write(HEADER)
            for i in range(10):
                fh.write(good_rows(1, start=100 + i))
                fh.flush()
                time.sleep(0.1)

    writer = threading.Thread(target=slow_writer)
    writer.start()
    try:
        first_run = ingest_flow(config)
    finally:
        writer.join()
    second_run = ingest_flow(config)
    third_run = ingest_flow(config)

    store = DatasetStore.for_dataset("flow-landing")
    late = [b for b in list_batches(store) if b.source == str(growing)]
    assert len(late) == 1 and late[0].rows_read == late[0].rows_accepted == 10  # whole, never a prefix
    assert third_run.batches == []  # nothing new, nothing read again
    assert first_run.count("accepted") + second_run.count("accepted") == 2
    assert sorted(read_snapshot(store, take_snapshot(store)).frame["id"]) == [1, 2, *range(100, 110)]


def test_flow_reads_a_growing_table_incrementally(prefect_server: None, tmp_path: Path) -> None:
    database = tmp_path / "live.db"
    with sqlite3.connect(database) as conn:
        conn.execute("CREATE TABLE t (seq INTEGER PRIMARY KEY, id INTEGER, color TEXT, score REAL)")
        conn.executemany("INSERT INTO t (id, color, score) VALUES (?, ?, ?)", [(1, "red", 1.0), (2, "blue", 2.0)])
    source = {"kind": "sql", "sql": {"url": f"sqlite:///{database}", "table": "t", "watermark": "seq"}}
    config = _config("flow-sql", source)
    assert ingest_flow(config).count("accepted") == 1
    with sqlite3.connect(database) as conn:
        conn.execute("INSERT INTO t (id, color, score) VALUES (3, 'green', 3.0)")
    second = ingest_flow(config)
    assert [b.rows_read for b in second.batches] == [1]
    assert ingest_flow(config).batches == []
    store = DatasetStore.for_dataset("flow-sql")
    assert read_snapshot(store, take_snapshot(store)).frame["id"].tolist() == [1, 2, 3]


def test_cli_replays_the_quarantine_after_a_schema_change(prefect_server: None, tmp_path: Path) -> None:
    config_file = tmp_path / "tiny.yaml"
    config = _config("cli-replay", {"files": [{"path": str(tmp_path / "a.csv")}]})
    config_file.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    (tmp_path / "a.csv").write_text(HEADER + good_rows(3) + "4,purple,1\n")
    runner = CliRunner()
    assert runner.invoke(app, ["ingest", "--config", str(config_file)]).exit_code == 0
    widened = ["--set", "schema_ref=tests.ingest_fixtures:TinySchemaV2"]
    replay = runner.invoke(app, ["quarantine", "replay", "--config", str(config_file), *widened])
    assert replay.exit_code == 0, replay.output
    (batch,) = json.loads(replay.stdout)["batches"]
    assert (batch["outcome"], batch["rows_read"], batch["rows_accepted"]) == ("accepted", 1, 1)
    store = DatasetStore.for_dataset("cli-replay")
    assert sorted(read_snapshot(store, take_snapshot(store)).frame["id"]) == [1, 2, 3, 4]


def test_training_reads_the_snapshot_that_ingest_produced(prefect_server: None, tmp_path: Path) -> None:
    """The wiring proposed for flows/training.py: ingest first, then train on a snapshot of the curated store."""
    from mlcycle.schemas import resolve_schema
    from mlcycle.tasks.ingest.store import read_curated
    from mlcycle.tasks.ingest.validate import validate_frame
    from mlcycle.tasks.train.prepare import split_frame

    (tmp_path / "train.csv").write_text(HEADER + good_rows(30))
    (tmp_path / "test.csv").write_text(HEADER + good_rows(10, start=100))
    files = [{"path": str(tmp_path / "train.csv")}, {"path": str(tmp_path / "test.csv"), "part": "test"}]
    config = _config("flow-train", {"files": files})
    ingest_flow(config)
    raw = read_curated(DatasetStore.for_dataset("flow-train"), config.source.snapshot, None, config.seed)
    validated = validate_frame(raw.frame, resolve_schema(config.schema_ref))
    splits = split_frame(validated.valid, raw.origin["part"], config)
    assert sorted(splits.test["id"]) == list(range(100, 110))
    assert len(splits.train) + len(splits.valid) == 30
    assert raw.content_hash == take_snapshot(DatasetStore.for_dataset("flow-train")).hash
