"""The request log: a sample of served records and their predictions, appended to Parquet for drift checks.

Files land in `$MLCYCLE_HOME/requests/<model name>/`, one row per served record: the record's feature columns as
validated, plus `_ts` (UTC), `_model` (tag), `_request_id`, `_record` (the record's 0-based place in its request),
`_prediction` (positive-class probability, the predicted class's probability for multiclass, or value) and `_label`
(the predicted class; empty for regression). Beside them, `_index.sqlite` maps each logged request id to its record
count, time, model and file: what a label sent later by request id is checked against (`RequestIndex`).
The folder is bounded: the oldest files are deleted until the total fits `max_bytes`. Listing the folder costs time
in proportion to its files (thousands, near the bound), so a write does not list it: the writer keeps a running total
(the last listing plus what it wrote since) and lists the folder when that total passes the bound, or when
`RESCAN_S` have passed, which also counts what other worker processes wrote to the same folder.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import threading
import time
from collections.abc import Iterable
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mlcycle.schemas.config import RequestLogConfig
from mlcycle.tasks.paths import mlcycle_home

META_COLUMNS = ("_ts", "_model", "_request_id", "_record", "_prediction", "_label")
INDEX_FILE = "_index.sqlite"  # "_": readers of the folder as a Parquet dataset pass it over
RESCAN_S = 30.0


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
                 seed: int | None = None, index: bool = True) -> None:  # fmt: skip
        self.config = config
        self.root = root or requests_dir(name)
        self.index = RequestIndex(self.root) if index else None
        self.schema = pa.schema(
            [pa.field(c, arrow_type(t)) for c, t in columns.items()]
            + [
                pa.field("_ts", pa.timestamp("us", tz="UTC")),
                pa.field("_model", pa.string()),
                pa.field("_request_id", pa.string()),
                pa.field("_record", pa.int32()),
                pa.field("_prediction", pa.float64()),
                pa.field("_label", pa.string()),
            ]  # fmt: skip
        )
        self.columns = list(columns)
        # One entry per request, its fields as tuples of plain values, turned into Arrow arrays only when written:
        # `add` runs on the service's event loop, `flush` in a worker thread, so the per-row work stays off the path
        # that answers requests. The service takes a request's records apart once, for encoding and for this log;
        # keeping the records themselves (10,000 dicts) alive until the flush cost 1,000-record requests about 8 %
        # (114-118k rows/s against 122-130k, alternating runs beside a floor of 126k, issue #29).
        self._pending: list[Pending] = []
        self._count = 0
        self._lock = threading.Lock()
        self._random = random.Random(seed)
        self._sequence = 0
        self._folder_bytes: int | None = None  # running total of the folder: last listing + own writes since
        self._listed_at = 0.0
        self.written_rows = 0

    def sampled(self) -> bool:
        """Whether this request's records go to the log (one draw per request)."""
        return self.config.enabled and self._random.random() < self.config.sample_rate

    def add(self, rows: list[dict[str, Any]], model: str, request_id: str, predictions: list[float],
            labels: list[str] | None = None, at: datetime | None = None) -> bool:  # fmt: skip
        """Buffer one request's records, stamped now (or `at`, for a replay); True when the buffer is due for a
        flush."""
        fields = {name: [row[name] for row in rows] for name in self.columns}
        return self.add_fields(fields, len(rows), model, request_id, predictions, labels, at)

    def add_fields(self, fields: dict[str, list[Any]], records: int, model: str, request_id: str,
                   predictions: list[float], labels: list[str] | None = None,
                   at: datetime | None = None) -> bool:  # fmt: skip
        """`add` for records already taken apart into one list per field (a field of `columns` that is absent is
        logged empty)."""
        if records != len(predictions) or (labels is not None and len(labels) != records):
            raise ValueError(f"{records} rows but {len(predictions)} predictions")
        # Tuples of plain values, which the garbage collector stops tracking: held as lists, every buffered request
        # is a list per field for every full collection of the service to walk until the flush.
        values = tuple(None if (given := fields.get(c)) is None else tuple(given) for c in self.columns)
        entry = Pending(values, records, model, request_id, tuple(predictions),
                        None if labels is None else tuple(labels), at or datetime.now(UTC))  # fmt: skip
        with self._lock:
            self._pending.append(entry)
            self._count += records
            return self._count >= self.config.flush_rows

    @property
    def buffered(self) -> int:
        return self._count

    def holds(self, request_id: str) -> bool:
        """Whether a request waits in the buffer, not yet written (a label for it may come before the flush)."""
        with self._lock:
            return any(entry.request_id == request_id for entry in self._pending)

    def flush(self) -> Path | None:
        """Write the buffered rows to a new Parquet file, then delete the oldest files beyond the size bound."""
        with self._lock:
            pending, self._pending, count, self._count = self._pending, [], self._count, 0
            if not count:
                return None
            self._sequence += 1
            sequence = self._sequence
        self.root.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        path = self.root / f"{stamp}-{os.getpid()}-{sequence:06d}.parquet"
        write_table(requests_table(self.schema, self.columns, pending), path)
        if self.index is not None:  # after the file is in place: an indexed request can always be read
            self.index.add([(e.request_id, e.records, e.ts, e.model) for e in pending], path.name)
        self.written_rows += count
        if self._folder_bytes is not None:
            self._folder_bytes += path.stat().st_size
        if (self._folder_bytes is None or self._folder_bytes > self.config.max_bytes
                or time.monotonic() - self._listed_at > RESCAN_S):  # fmt: skip
            self.enforce_bound(keep=path)
        return path

    def enforce_bound(self, keep: Path | None = None) -> list[Path]:
        """List the folder and delete the oldest files until it holds at most `max_bytes` (the newest file always
        stays)."""
        listed = []
        with os.scandir(self.root) as entries:
            for entry in entries:
                if entry.name.endswith(".parquet"):
                    try:
                        info = entry.stat()
                    except FileNotFoundError:  # deleted meanwhile by another worker
                        continue
                    listed.append((info.st_mtime, entry.name, info.st_size))
        listed.sort()
        total = sum(size for _, _, size in listed)
        removed = []
        for _, name, size in listed:
            old = self.root / name
            if total <= self.config.max_bytes or old == keep:
                break
            total -= size
            old.unlink(missing_ok=True)
            removed.append(old)
        if removed and self.index is not None:
            self.index.forget([p.name for p in removed])
        self._folder_bytes, self._listed_at = total, time.monotonic()
        return removed


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


class Pending(NamedTuple):
    """One buffered request."""

    values: tuple[tuple[Any, ...] | None, ...]  # per log column, its records' values (None: not sent)
    records: int
    model: str
    request_id: str
    predictions: tuple[float, ...]
    labels: tuple[str, ...] | None
    ts: datetime


def requests_table(schema: pa.Schema, columns: list[str], pending: list[Pending]) -> pa.Table:
    """Buffered requests as one Arrow table: each record column joined in Python, then converted once; the
    per-request columns (time, model, request id, record number) repeated by NumPy. One Arrow conversion per column
    whatever the requests' sizes: 10,000 single-record requests cost what one request of 10,000 records does, not
    10,000 conversions per column."""
    fields = {f.name: f.type for f in schema}
    counts = np.fromiter((e.records for e in pending), dtype=np.int64, count=len(pending))
    arrays = {}
    for i, column in enumerate(columns):
        joined: list[Any] = []
        for entry in pending:  # a field the answering model does not have (a challenger's answer): empty
            given = entry.values[i]
            joined.extend((None,) * entry.records if given is None else given)
        arrays[column] = pa.array(joined, type=fields[column])
    micros = np.fromiter(((e.ts - _EPOCH) // _MICROSECOND for e in pending), dtype=np.int64, count=len(pending))
    arrays["_ts"] = pa.array(np.repeat(micros, counts)).view(fields["_ts"])
    arrays["_model"] = _repeated([e.model for e in pending], counts)
    arrays["_request_id"] = _repeated([e.request_id for e in pending], counts)
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    arrays["_record"] = pa.array((np.arange(int(counts.sum())) - starts).astype(np.int32))
    predictions: list[float] = []
    labels: list[str | None] = []
    for entry in pending:
        predictions.extend(entry.predictions)
        labels.extend((None,) * entry.records if entry.labels is None else entry.labels)
    arrays["_prediction"] = pa.array(np.asarray(predictions, dtype=np.float64))
    arrays["_label"] = pa.array(labels, type=pa.string())
    return pa.Table.from_arrays([arrays[name] for name in fields], schema=schema)


def _repeated(values: list[str], counts: np.ndarray) -> pa.Array:
    """Each request's text repeated for its records: indices into the distinct texts, taken by Arrow."""
    return pa.array(values, type=pa.string()).take(pa.array(np.repeat(np.arange(len(values)), counts)))


def write_table(table: pa.Table, path: Path) -> None:
    """Write a log file so that readers never see it half-written. No column statistics: nothing prunes a file of
    one flush by them, and they were a fifth of the write (0.51 → 0.41 ms per 1,000 records); readers' filters
    still apply, row by row."""
    partial = path.with_suffix(".parquet.part")
    pq.write_table(table, partial, write_statistics=False)
    partial.replace(path)


@dataclass(frozen=True)
class LoggedRequest:
    """What the request log holds of one request: how many records, when, which model answered, in which file."""

    request_id: str
    records: int
    ts: datetime
    model: str
    file: str


class RequestIndex:
    """`_index.sqlite` beside the log's files: request id → records, time, model, file. SQLite, so every worker
    process of a service writes to one index and a label is checked in one indexed read, however large the log."""

    def __init__(self, root: Path) -> None:
        self.path = root / INDEX_FILE

    def _connect(self) -> closing[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE IF NOT EXISTS requests (request_id TEXT PRIMARY KEY, records INTEGER NOT NULL, "
                     "ts_us INTEGER NOT NULL, model TEXT NOT NULL, file TEXT NOT NULL)")  # fmt: skip
        return closing(conn)

    def add(self, entries: Iterable[tuple[str, int, datetime, str]], file: str) -> None:
        """Index the requests of one written file: (request id, records, time, model) each."""
        # One statement over a JSON array, not one per request: each step of `executemany` hands Python's lock to
        # the service's event loop and back, and 10,000 single-record requests took 0.4-0.65 s that way under load.
        rows = json.dumps([(rid, n, _micros(ts), model) for rid, n, ts, model in entries])
        with self._connect() as conn:
            conn.execute("INSERT OR REPLACE INTO requests SELECT json_extract(value, '$[0]'), json_extract(value, "
                         "'$[1]'), json_extract(value, '$[2]'), json_extract(value, '$[3]'), ? FROM json_each(?)",
                         (file, rows))  # fmt: skip

    def lookup(self, request_ids: Iterable[str]) -> dict[str, LoggedRequest]:
        """The logged requests among `request_ids` (unknown ones are absent)."""
        wanted = sorted(set(request_ids))
        if not wanted or not self.path.exists():
            return {}
        found: dict[str, LoggedRequest] = {}
        with self._connect() as conn:
            for start in range(0, len(wanted), 500):  # SQLite's bound on parameters per statement
                chunk = wanted[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for rid, n, ts_us, model, file in conn.execute(
                    f"SELECT request_id, records, ts_us, model, file FROM requests WHERE request_id IN ({marks})", chunk
                ):
                    found[rid] = LoggedRequest(rid, n, datetime.fromtimestamp(ts_us / 1e6, UTC), model, file)
        return found

    def forget(self, files: list[str]) -> None:
        """Drop the requests of deleted files: their labels can no longer be joined."""
        with self._connect() as conn:
            conn.executemany("DELETE FROM requests WHERE file = ?", [(f,) for f in files])


def _micros(ts: datetime) -> int:
    return int(ts.timestamp() * 1_000_000)
