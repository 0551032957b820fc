"""The request log: a sample of served records and their predictions, appended to Parquet for drift checks.

Files land in `$MLCYCLE_HOME/requests/<model name>/`, one row per served record: the record's feature columns as
validated, plus `_ts` (UTC), `_model` (tag), `_request_id` and `_prediction` (positive-class probability or value).
The folder is bounded: after each write the oldest files are deleted until the total fits `max_bytes`.
"""

from __future__ import annotations

import os
import random
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from schemas.config import RequestLogConfig
from tasks.paths import mlcycle_home

META_COLUMNS = ("_ts", "_model", "_request_id", "_prediction")


def requests_dir(name: str) -> Path:
    return mlcycle_home() / "requests" / name


def arrow_type(dtype: str) -> pa.DataType:
    """The Parquet type of a pandera column dtype, so every file of a model has the same schema."""
    dtype = dtype.lower()
    if dtype.startswith(("int", "uint")):
        return pa.int64()
    if dtype.startswith("float"):
        return pa.float64()
    if dtype.startswith("bool"):
        return pa.bool_()
    return pa.string()


class RequestLog:
    """Thread-safe buffer of sampled rows, written as one Parquet file per flush."""

    def __init__(self, name: str, columns: dict[str, str], config: RequestLogConfig, root: Path | None = None,
                 seed: int | None = None) -> None:  # fmt: skip
        self.config = config
        self.root = root or requests_dir(name)
        self.schema = pa.schema(
            [pa.field(c, arrow_type(t)) for c, t in columns.items()]
            + [
                pa.field("_ts", pa.timestamp("us", tz="UTC")),
                pa.field("_model", pa.string()),
                pa.field("_request_id", pa.string()),
                pa.field("_prediction", pa.float64()),
            ]  # fmt: skip
        )
        self._columns = list(columns)
        self._rows: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._random = random.Random(seed)
        self._sequence = 0
        self.written_rows = 0

    def sampled(self) -> bool:
        """Whether this request's records go to the log (one draw per request)."""
        return self.config.enabled and self._random.random() < self.config.sample_rate

    def add(self, rows: list[dict[str, Any]], model: str, request_id: str, predictions: list[float]) -> bool:
        """Buffer one request's rows; True when the buffer is due for a flush."""
        now = datetime.now(UTC)
        entries = [{**{c: row[c] for c in self._columns}, "_ts": now, "_model": model, "_request_id": request_id,
                    "_prediction": float(p)} for row, p in zip(rows, predictions, strict=True)]  # fmt: skip
        with self._lock:
            self._rows += entries
            return len(self._rows) >= self.config.flush_rows

    @property
    def buffered(self) -> int:
        return len(self._rows)

    def flush(self) -> Path | None:
        """Write the buffered rows to a new Parquet file, then delete the oldest files beyond the size bound."""
        with self._lock:
            rows, self._rows = self._rows, []
            if not rows:
                return None
            self._sequence += 1
            sequence = self._sequence
        self.root.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        path = self.root / f"{stamp}-{os.getpid()}-{sequence:06d}.parquet"
        partial = path.with_suffix(".parquet.part")
        pq.write_table(pa.Table.from_pylist(rows, schema=self.schema), partial)
        partial.replace(path)  # readers never see a half-written file
        self.written_rows += len(rows)
        self.enforce_bound(keep=path)
        return path

    def enforce_bound(self, keep: Path | None = None) -> list[Path]:
        """Delete the oldest files until the folder holds at most `max_bytes` (the newest file always stays)."""
        files = sorted(self.root.glob("*.parquet"), key=lambda p: (p.stat().st_mtime, p.name))
        total = sum(p.stat().st_size for p in files)
        removed = []
        for old in files:
            if total <= self.config.max_bytes or old == keep:
                break
            total -= old.stat().st_size
            old.unlink(missing_ok=True)
            removed.append(old)
        return removed
