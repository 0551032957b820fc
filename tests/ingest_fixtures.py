"""Shared by the ingest suites: a three-column schema, a config for it, and helpers that admit one file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

from mlcycle.schemas.config import PipelineConfig
from mlcycle.tasks.ingest.admit import BatchResult, admit_batch
from mlcycle.tasks.ingest.read import FileInput
from mlcycle.tasks.ingest.store import DatasetStore, list_batches, read_curated_batch, read_ledger

HEADER = "id,color,score\n"


class TinySchema(pa.DataFrameModel):
    """Three columns, one of each kind of check: an integer range, a category, a nullable float range."""

    id: Series[int] = pa.Field(ge=1)
    color: Series[str] = pa.Field(isin=["red", "green", "blue"])
    score: Series[float] = pa.Field(ge=0, le=100, nullable=True)

    class Config:
        strict = True
        coerce = True


class TinySchemaV2(TinySchema):
    """The same, after a person widened the categories."""

    color: Series[str] = pa.Field(isin=["red", "green", "blue", "purple"])


def tiny_config(source: dict[str, Any] | None = None, **ingest: Any) -> PipelineConfig:
    return PipelineConfig.model_validate({
        "name": "tiny", "schema_ref": "tests.ingest_fixtures:TinySchema",
        "features_schema_ref": "tests.ingest_fixtures:TinySchema", "target": "score", "task": "regression",
        "split": {"strategy": "random"},
        "source": source or {"files": [{"path": "unused.csv"}]},
        "ingest": {"max_quarantine_rate": 0.5, **ingest},
    })  # fmt: skip


def good_rows(n: int, start: int = 1) -> str:
    colors = ["red", "green", "blue"]
    return "".join(f"{i},{colors[i % 3]},{(i % 60) * 1.5}\n" for i in range(start, start + n))


def admit_file(
    path: Path, store: DatasetStore, config: PipelineConfig | None = None, schema: type[pa.DataFrameModel] = TinySchema
) -> BatchResult:
    return admit_batch(FileInput(str(path)), config or tiny_config(), store, schema)


def curated_rows(store: DatasetStore, batch_id: str) -> pd.DataFrame:
    return read_curated_batch(store, batch_id)


def assert_accounted(store: DatasetStore, result: BatchResult) -> None:
    """Every row read is in the curated store or the ledger, exactly once, and the registry agrees."""
    record = result.record
    assert record is not None and record.status == "accepted"
    curated = curated_rows(store, record.batch_id)
    ledger = read_ledger(store, [record.batch_id])
    assert curated["_row"].is_unique
    assert not set(curated["_row"]) & set(ledger["row"])
    assert len(curated) == record.rows_accepted
    assert ledger["row"].nunique() == record.rows_quarantined
    assert record.rows_read == record.rows_accepted + record.rows_quarantined
    assert [b.batch_id for b in list_batches(store, status="accepted")].count(record.batch_id) == 1


def reasons(store: DatasetStore, result: BatchResult) -> dict[int, list[str]]:
    """Ledger lines of a batch as {source row: ['column: check (value)', …]}."""
    assert result.record is not None
    ledger = read_ledger(store, [result.record.batch_id])
    out: dict[int, list[str]] = {}
    for line in ledger.itertuples():
        out.setdefault(int(line.row), []).append(f"{line.column}: {line.check} ({line.value})")
    return out
