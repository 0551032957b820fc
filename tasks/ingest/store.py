"""The dataset store under MLCYCLE_HOME: batch registry, immutable raw copies, curated store, quarantine ledger,
snapshots.

Layout, per dataset (`<home>/datasets/<name>/`):

- `registry.sqlite`: one record per batch; the registry is the commit point, so a batch whose files exist but
  whose record is not `accepted` is invisible to snapshots.
- `raw/<sha256><suffix>`: the input exactly as received, read-only, named by its content hash.
- `curated/batch=<id>/part-<k>.parquet`: the accepted rows of a batch, coerced to the schema, with `_row`; one
  part per chunk the batch was read in (`part-0` alone for most files).
- `quarantine/batch=<id>/part-<k>.parquet`: one line per failed check: batch, row, column, check, value; with the
  failed rows' values as read in `rows.parquet` (`rows-<k>.parquet` for later chunks).
- `snapshots/<hash>.json`: a fixed list of accepted batches, named by its hash.
- `claims/<batch id>.lock`: locked by the process working on a pending batch for as long as it works on it; a
  pending batch whose lock is free was left by a run that died.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, Literal

import pandas as pd

from mlcycle.tasks.errors import UserError
from mlcycle.tasks.ingest.read import RawData
from mlcycle.tasks.paths import mlcycle_home

try:
    import fcntl
except ImportError:  # not POSIX: a dead run's claim is only abandoned after `abandon_after_s`
    fcntl = None  # type: ignore[assignment]

BatchStatus = Literal["pending", "accepted", "rejected"]
LEDGER_COLUMNS = ["batch_id", "row", "column", "check", "value"]
ROW_COLUMN = "_row"
# Curated parts are written in row groups of this many rows, which readers take one at a time: training reads a
# part of any size in bounded memory.
ROW_GROUP_ROWS = 65_536
QUARANTINED_ROWS = "rows.parquet"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    batch_id TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    source_kind TEXT NOT NULL,
    part TEXT NOT NULL DEFAULT '',
    content_hash TEXT NOT NULL,
    schema_hash TEXT NOT NULL,
    rows_read INTEGER NOT NULL DEFAULT 0,
    rows_accepted INTEGER NOT NULL DEFAULT 0,
    rows_quarantined INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL CHECK (status IN ('pending', 'accepted', 'rejected')),
    reasons TEXT NOT NULL DEFAULT '[]',
    raw_path TEXT,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    watermark_from TEXT,
    watermark_to TEXT,
    failed_internally INTEGER NOT NULL DEFAULT 0,
    replay_of TEXT,
    rules_hash TEXT NOT NULL DEFAULT ''
);
-- The database itself refuses a second live batch of the same content, even from two concurrent runs.
-- Landing files already decided, by name, size and mtime: an unchanged file is not read and hashed again.
CREATE TABLE IF NOT EXISTS seen_files (
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    content_hash TEXT NOT NULL,
    batch_id TEXT NOT NULL,
    PRIMARY KEY (path, size, mtime_ns)
);
CREATE UNIQUE INDEX IF NOT EXISTS one_live_batch_per_content ON batches (content_hash)
    WHERE status IN ('pending', 'accepted') AND content_hash != '';
"""


class StoreError(UserError, RuntimeError):
    """The store is missing something a caller asked for (an unknown batch or snapshot)."""


@dataclass(frozen=True)
class BatchRecord:
    """One batch's line in the registry."""

    batch_id: str
    source: str
    source_kind: str
    content_hash: str
    schema_hash: str
    status: BatchStatus
    started_at: str
    part: str = ""
    rows_read: int = 0
    rows_accepted: int = 0
    rows_quarantined: int = 0
    reasons: list[str] = field(default_factory=list)
    raw_path: str | None = None
    finished_at: str | None = None
    watermark_from: str | None = None
    watermark_to: str | None = None
    # Rejected because mlcycle failed (disk full, a crash), not because of the data: the content may be retried.
    failed_internally: bool = False
    # A replay batch: the quarantined rows of this batch, validated again under a changed schema.
    replay_of: str | None = None
    # The admission rules besides the schema (how the input is read, the quarantine rate admitted): a batch
    # rejected under other rules is judged again (`tasks.ingest.admit.admission_rules`).
    rules_hash: str = ""


@dataclass(frozen=True)
class Snapshot:
    """A fixed set of accepted batches; `hash` goes into a model's lineage."""

    hash: str
    batch_ids: tuple[str, ...]
    rows: int


@dataclass(frozen=True)
class DatasetStore:
    """Where one dataset's batches live."""

    root: Path

    @classmethod
    def for_dataset(cls, name: str, home: Path | None = None) -> DatasetStore:
        return cls((home or mlcycle_home()) / "datasets" / name)

    @property
    def registry_path(self) -> Path:
        return self.root / "registry.sqlite"

    @property
    def raw_dir(self) -> Path:
        return self.root / "raw"

    @property
    def curated_dir(self) -> Path:
        return self.root / "curated"

    @property
    def quarantine_dir(self) -> Path:
        return self.root / "quarantine"

    @property
    def snapshots_dir(self) -> Path:
        return self.root / "snapshots"

    def claim_lock(self, batch_id: str) -> Path:
        return self.root / "claims" / f"{batch_id}.lock"

    def curated_file(self, batch_id: str) -> Path:
        """The batch's first curated part (a batch ingested in chunks has `part-1.parquet`, ... after it)."""
        return self.curated_dir / f"batch={batch_id}" / "part-0.parquet"

    def ledger_file(self, batch_id: str) -> Path:
        return self.quarantine_dir / f"batch={batch_id}" / "part-0.parquet"

    def curated_files(self, batch_id: str) -> list[Path]:
        """Every curated part of a batch, in the order its rows were read."""
        return _parts(self.curated_file(batch_id).parent, "part-")

    def ledger_files(self, batch_id: str) -> list[Path]:
        return _parts(self.ledger_file(batch_id).parent, "part-")


def _parts(folder: Path, prefix: str) -> list[Path]:
    """`<prefix>0.parquet`, `<prefix>1.parquet`, ... in numeric order."""
    found = [p for p in folder.glob(f"{prefix}*.parquet") if p.stem[len(prefix) :].isdigit()]
    return sorted(found, key=lambda p: int(p.stem[len(prefix) :]))


def now_utc() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def new_batch_id(content_hash: str) -> str:
    """Sortable by time, readable, unique: `20261126t072612-1a2b3c4d-9f8e7d`."""
    stamp = datetime.now(UTC).strftime("%Y%m%dt%H%M%S")
    return f"{stamp}-{(content_hash or 'none')[:8]}-{uuid.uuid4().hex[:6]}"


@contextmanager
def _registry(store: DatasetStore) -> Iterator[sqlite3.Connection]:
    store.root.mkdir(parents=True, exist_ok=True)
    # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE), so a claim is one atomic check-and-insert.
    with closing(sqlite3.connect(store.registry_path, timeout=60, isolation_level=None)) as conn:
        conn.row_factory = sqlite3.Row
        conn.executescript(_SCHEMA)
        if "rules_hash" not in {r["name"] for r in conn.execute("PRAGMA table_info(batches)")}:
            # A registry from before the rules were recorded: its rejections match no rules, so are judged again.
            conn.execute("ALTER TABLE batches ADD COLUMN rules_hash TEXT NOT NULL DEFAULT ''")
        yield conn


def _from_row(row: sqlite3.Row) -> BatchRecord:
    values = dict(row)
    values["reasons"] = json.loads(values["reasons"])
    values["failed_internally"] = bool(values["failed_internally"])
    return BatchRecord(**values)


def _to_row(record: BatchRecord) -> dict[str, Any]:
    values = asdict(record)
    values["reasons"] = json.dumps(record.reasons)
    values["failed_internally"] = int(record.failed_internally)
    return values


# The claims this process holds: lock file path -> the file, open and locked until the batch's final state is written.
_HELD: dict[Path, IO[str]] = {}


def _hold_claim(store: DatasetStore, batch_id: str) -> None:
    if fcntl is None:
        return
    path = store.claim_lock(batch_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.open("w")
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    _HELD[path] = lock


def _release_claim(store: DatasetStore, batch_id: str, remove: bool = True) -> None:
    """Unlock a claim; `remove` False keeps its lock file, which tells the next claim that nobody works on it."""
    lock = _HELD.pop(store.claim_lock(batch_id), None)
    if lock is not None:
        if remove:
            store.claim_lock(batch_id).unlink(missing_ok=True)
        lock.close()


def _claim_left_by_dead_run(store: DatasetStore, batch_id: str) -> bool:
    """Whether a pending batch's lock is free: the process that claimed it has ended (the kernel releases a dead
    process's locks). A claim without a lock file (from an older mlcycle) is only abandoned after the timeout."""
    if fcntl is None or store.claim_lock(batch_id) in _HELD:
        return False
    try:
        lock = store.claim_lock(batch_id).open("r")
    except FileNotFoundError:
        return False
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
    return True


def _discard_dead_claim(store: DatasetStore, batch_id: str) -> None:
    """Remove what a dead run wrote of a batch it never finished: its partitions, staging folders and lock."""
    discard_batch_files(store, batch_id)
    for folder in (store.curated_dir, store.quarantine_dir):
        for staging in folder.glob(f".staging-batch={batch_id}-*"):
            shutil.rmtree(staging, ignore_errors=True)
    store.claim_lock(batch_id).unlink(missing_ok=True)


def claim_batch(store: DatasetStore, record: BatchRecord, abandon_after_s: float = 3600) -> BatchRecord | None:
    """Register `record` as pending unless the same content is already live (pending or accepted) or was
    rejected under the same schema and admission rules; returns that earlier record, or None when the claim
    succeeded. The claim holds a lock (`claims/<batch id>.lock`) until `record_batch` writes the batch's final state.

    A claim whose lock is free belongs to a run that died (killed, or the machine went down): it is marked rejected
    (as an internal failure) and what it wrote is removed, so that its content is ingested again at once. A claim
    without a lock is abandoned the same way once pending for longer than `abandon_after_s`.
    """
    cutoff = (datetime.now(UTC) - timedelta(seconds=abandon_after_s)).isoformat(timespec="milliseconds")
    abandoned = json.dumps([f"abandoned: still pending after {abandon_after_s:.0f} s; the run that claimed it died"])
    dead = json.dumps(["abandoned: the run that claimed it ended before it finished the batch"])
    _hold_claim(store, record.batch_id)
    try:
        with _registry(store) as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(
                    "UPDATE batches SET status = 'rejected', failed_internally = 1, reasons = ?, finished_at = ? "
                    "WHERE status = 'pending' AND started_at < ?",
                    (abandoned, now_utc(), cutoff),
                )
                for row in conn.execute("SELECT batch_id FROM batches WHERE status = 'pending'").fetchall():
                    if _claim_left_by_dead_run(store, row["batch_id"]):
                        conn.execute(
                            "UPDATE batches SET status = 'rejected', failed_internally = 1, reasons = ?, "
                            "finished_at = ? WHERE batch_id = ?",
                            (dead, now_utc(), row["batch_id"]),
                        )
                        _discard_dead_claim(store, row["batch_id"])
                earlier = conn.execute(
                    "SELECT * FROM batches WHERE content_hash = ? AND content_hash != '' AND (status IN "
                    "('pending', 'accepted') OR (status = 'rejected' AND schema_hash = ? AND rules_hash = ? AND NOT "
                    "failed_internally)) ORDER BY started_at LIMIT 1",
                    (record.content_hash, record.schema_hash, record.rules_hash),
                ).fetchone()
                if earlier is None:
                    values = _to_row(replace(record, status="pending"))
                    conn.execute(
                        f"INSERT INTO batches ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",
                        list(values.values()),
                    )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
    except BaseException:
        _release_claim(store, record.batch_id)
        raise
    if earlier is not None:
        _release_claim(store, record.batch_id)
    return _from_row(earlier) if earlier is not None else None


def remember_file(store: DatasetStore, path: str, stat: tuple[int, int], content_hash: str, batch_id: str) -> None:
    """Note that this landing file (at this size and mtime) has been decided, as or like `batch_id`."""
    with _registry(store) as conn:
        conn.execute("INSERT OR REPLACE INTO seen_files VALUES (?, ?, ?, ?, ?)", (path, *stat, content_hash, batch_id))


def seen_files(store: DatasetStore) -> set[tuple[str, int, int]]:
    """(path, size, mtime_ns) of the landing files already decided."""
    if not store.registry_path.exists():
        return set()
    with _registry(store) as conn:
        return {(r["path"], r["size"], r["mtime_ns"]) for r in conn.execute("SELECT * FROM seen_files")}


def record_batch(store: DatasetStore, record: BatchRecord) -> BatchRecord:
    """Write the final state of a batch (insert or update): the commit point of an ingest. The claim is released
    even when the write fails (a full disk): the batch then stays pending with its lock free, and the next claim
    of its content abandons it."""
    values = _to_row(record)
    written = False
    try:
        with _registry(store) as conn:
            conn.execute(
                f"INSERT OR REPLACE INTO batches ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",
                list(values.values()),
            )
        written = True
    finally:
        if record.status != "pending":
            _release_claim(store, record.batch_id, remove=written)
    return record


def list_batches(
    store: DatasetStore, status: BatchStatus | None = None, source: str | None = None
) -> list[BatchRecord]:
    """Registry records in the order they started."""
    if not store.registry_path.exists():
        return []
    query, args = "SELECT * FROM batches WHERE 1 = 1", list[str]()
    if status is not None:
        query, args = query + " AND status = ?", [*args, status]
    if source is not None:
        query, args = query + " AND source = ?", [*args, source]
    with _registry(store) as conn:
        return [_from_row(row) for row in conn.execute(query + " ORDER BY started_at, rowid", args)]


def get_batch(store: DatasetStore, batch_id: str) -> BatchRecord:
    with _registry(store) as conn:
        row = conn.execute("SELECT * FROM batches WHERE batch_id = ?", (batch_id,)).fetchone()
    if row is None:
        raise StoreError(f"{store.root.name}: no batch {batch_id!r} in {store.registry_path}")
    return _from_row(row)


def _write_parquet_atomically(frame: pd.DataFrame, target: Path) -> None:
    """Write into a hidden sibling folder, then rename the folder into place: readers see all of it or none."""
    target.parent.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent.parent, prefix=f".staging-{target.parent.name}-"))
    try:
        frame.to_parquet(staging / target.name, index=False, row_group_size=ROW_GROUP_ROWS)
        os.replace(staging, target.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def write_curated(store: DatasetStore, batch_id: str, accepted: pd.DataFrame) -> Path:
    """Append a batch's accepted rows to the curated store (one new partition; existing ones are never touched).

    The frame's index is the row number in the source; it is kept as `_row`.
    """
    target = store.curated_file(batch_id)
    _write_parquet_atomically(accepted.rename_axis(ROW_COLUMN).reset_index(), target)
    return target


def write_ledger(
    store: DatasetStore, batch_id: str, ledger: pd.DataFrame, rows: pd.DataFrame | None = None
) -> Path | None:
    """Write a batch's quarantine ledger (nothing when no row failed), with the failed rows' values as read
    (`rows.parquet`, index `_row`) so that `quarantine replay` can validate them again."""
    if ledger.empty:
        return None
    target = store.ledger_file(batch_id)
    frame = _ledger_frame(ledger, batch_id)
    target.parent.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent.parent, prefix=f".staging-{target.parent.name}-"))
    try:
        frame.to_parquet(staging / target.name, index=False)
        if rows is not None and not rows.empty:
            _write_rows(rows.rename_axis(ROW_COLUMN).reset_index(), staging / QUARANTINED_ROWS)
        os.replace(staging, target.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _write_rows(rows: pd.DataFrame, path: Path) -> None:
    import pyarrow as pa

    try:
        rows.to_parquet(path, index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        # A column mixing types (text among numbers) is kept as text; missing values stay missing.
        mixed = {c: rows[c].map(lambda v: None if v is None or v != v else str(v)).astype("str")
                 for c in rows.columns if rows[c].dtype == object}  # fmt: skip
        rows.assign(**mixed).to_parquet(path, index=False)


class BatchWriter:
    """Writes a batch chunk by chunk: each chunk's accepted rows as a curated part, its ledger lines and failed
    rows' values as quarantine parts, all in hidden staging folders that `commit` renames into place (readers see
    a batch whole or not at all) and `discard` removes."""

    def __init__(self, store: DatasetStore, batch_id: str) -> None:
        self.store, self.batch_id = store, batch_id
        self.parts = 0
        self.ledger_parts = 0
        self._curated: Path | None = None
        self._ledger: Path | None = None

    def _staging(self, target: Path) -> Path:
        target.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(dir=target.parent, prefix=f".staging-{target.name}-"))

    def add(self, accepted: pd.DataFrame, ledger: pd.DataFrame, failed_rows: pd.DataFrame | None = None) -> None:
        """One chunk: its accepted rows (indexed by source row number) and its ledger lines (`row, column, check,
        value`) with the failed rows' values as read."""
        if self._curated is None:
            self._curated = self._staging(self.store.curated_file(self.batch_id).parent)
        accepted.rename_axis(ROW_COLUMN).reset_index().to_parquet(
            self._curated / f"part-{self.parts}.parquet", index=False, row_group_size=ROW_GROUP_ROWS
        )
        self.parts += 1
        if ledger.empty:
            return
        if self._ledger is None:
            self._ledger = self._staging(self.store.ledger_file(self.batch_id).parent)
        n = self.ledger_parts
        _ledger_frame(ledger, self.batch_id).to_parquet(self._ledger / f"part-{n}.parquet", index=False)
        if failed_rows is not None and not failed_rows.empty:
            name = QUARANTINED_ROWS if n == 0 else QUARANTINED_ROWS.replace(".parquet", f"-{n}.parquet")
            _write_rows(failed_rows.rename_axis(ROW_COLUMN).reset_index(), self._ledger / name)
        self.ledger_parts += 1

    def commit(self, curated: bool = True) -> None:
        """Put the ledger in place, and the curated parts too unless `curated` is False (a rejected batch keeps its
        ledger, and none of its rows)."""
        if self._ledger is not None:
            os.replace(self._ledger, self.store.ledger_file(self.batch_id).parent)
            self._ledger = None
        if self._curated is not None and curated:
            os.replace(self._curated, self.store.curated_file(self.batch_id).parent)
            self._curated = None
        self.discard()

    def discard(self) -> None:
        for folder in (self._curated, self._ledger):
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
        self._curated = self._ledger = None


def _ledger_frame(ledger: pd.DataFrame, batch_id: str) -> pd.DataFrame:
    frame = ledger.assign(batch_id=batch_id)[LEDGER_COLUMNS].astype({"row": "int64"})
    return frame.astype({c: "str" for c in ("batch_id", "column", "check", "value")})


def stage_raw_copy(store: DatasetStore, copy: Callable[[IO[bytes]], str], suffix: str) -> tuple[Path, str]:
    """Keep an input as received, streamed by `copy` (which writes the bytes and returns their sha256) into a
    hidden file, then named by its hash, read-only (a re-drop of the same bytes is one copy)."""
    store.raw_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=store.raw_dir, prefix=".incoming-", delete=False) as fh:
        try:
            content_hash = copy(fh)
        except BaseException:
            fh.close()
            os.unlink(fh.name)
            raise
    target = store.raw_dir / f"{content_hash}{suffix}"
    if target.exists():
        os.unlink(fh.name)
    else:
        os.chmod(fh.name, 0o444)
        os.replace(fh.name, target)
    return target, content_hash


def discard_batch_files(store: DatasetStore, batch_id: str) -> None:
    """Remove a failed batch's curated partition and ledger, if they were written (the raw copy stays)."""
    for folder in (store.curated_file(batch_id).parent, store.ledger_file(batch_id).parent):
        shutil.rmtree(folder, ignore_errors=True)


def read_quarantined_rows(store: DatasetStore, batch_id: str) -> pd.DataFrame:
    """The values of a batch's quarantined rows as they were read, indexed by source row number."""
    folder = store.ledger_file(batch_id).parent
    paths = [folder / QUARANTINED_ROWS, *_parts(folder, QUARANTINED_ROWS.replace(".parquet", "-"))]
    frames = [pd.read_parquet(p) for p in paths if p.exists()]
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True).set_index(ROW_COLUMN)


def read_ledger(store: DatasetStore, batch_ids: list[str] | None = None) -> pd.DataFrame:
    """The quarantine ledger of the given batches (all when None)."""
    ids = batch_ids if batch_ids is not None else [b.batch_id for b in list_batches(store)]
    frames = [pd.read_parquet(path) for i in ids for path in store.ledger_files(i)]
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype="int64" if c == "row" else "str") for c in LEDGER_COLUMNS})
    return pd.concat(frames, ignore_index=True)


def quarantine_report(store: DatasetStore, batch_id: str | None = None) -> list[dict[str, Any]]:
    """One entry per quarantined input row (of one batch, or of every batch, newest first): its batch and the batch's
    status, source, row number, every failed check as `column: check (value)`, and its values as read."""
    batches = [get_batch(store, batch_id)] if batch_id else list(reversed(list_batches(store)))
    report = []
    for batch in batches:
        ledger = read_ledger(store, [batch.batch_id])
        if ledger.empty:
            continue
        values = read_quarantined_rows(store, batch.batch_id)
        for row, lines in ledger.groupby("row", sort=True):
            found = values.loc[row] if row in values.index else None
            report.append({
                "batch": batch.batch_id, "batch status": batch.status, "source": batch.source, "row": int(row),
                "reasons": "; ".join(f"{c}: {k} ({v})" for c, k, v in zip(lines["column"], lines["check"],
                                                                         lines["value"], strict=True)),
                "values": {} if found is None else {k: _plain(v) for k, v in found.items()},
            })  # fmt: skip
    return report


def _plain(value: Any) -> Any:
    """A value as JSON has it: missing as None, numpy scalars as Python's."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    return value.item() if hasattr(value, "item") else value


def snapshot_hash(batches: list[BatchRecord]) -> str:
    """Hash of the batches' ids and contents: the same batches always give the same snapshot hash."""
    text = json.dumps(sorted([b.batch_id, b.content_hash, b.schema_hash, b.rows_accepted] for b in batches))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def take_snapshot(store: DatasetStore, batch_ids: list[str] | None = None) -> Snapshot:
    """Fix a set of accepted batches (all accepted ones by default) and record it under its hash."""
    accepted = {b.batch_id: b for b in list_batches(store, status="accepted")}
    if batch_ids is None:
        chosen = list(accepted.values())
    else:
        unknown = [i for i in batch_ids if i not in accepted]
        if unknown:
            raise StoreError(f"{store.root.name}: not accepted batches: {unknown}")
        chosen = [accepted[i] for i in batch_ids]
    if not chosen:
        raise StoreError(f"{store.root.name}: no accepted batches in {store.root}; run `mlcycle ingest` first")
    chosen.sort(key=lambda b: (b.started_at, b.batch_id))
    snapshot = Snapshot(
        hash=snapshot_hash(chosen),
        batch_ids=tuple(b.batch_id for b in chosen),
        rows=sum(b.rows_accepted for b in chosen),
    )
    target = store.snapshots_dir / f"{snapshot.hash}.json"
    if not target.exists():
        store.snapshots_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=store.snapshots_dir, prefix=".incoming-", delete=False) as fh:
            json.dump({**asdict(snapshot), "taken_at": now_utc()}, fh, indent=2)
        os.replace(fh.name, target)
    return snapshot


def load_snapshot(store: DatasetStore, snapshot_id: str) -> Snapshot:
    """A snapshot recorded earlier, by its hash (e.g. from a model's lineage)."""
    path = store.snapshots_dir / f"{snapshot_id}.json"
    if not path.exists():
        raise StoreError(f"{store.root.name}: no snapshot {snapshot_id!r} in {store.snapshots_dir}")
    data = json.loads(path.read_text())
    return Snapshot(hash=data["hash"], batch_ids=tuple(data["batch_ids"]), rows=data["rows"])


def read_snapshot(store: DatasetStore, snapshot: Snapshot) -> RawData:
    """The rows of a snapshot with their provenance, as `RawData` (`content_hash` is the snapshot hash)."""
    records = {b.batch_id: b for b in list_batches(store)}
    frames, origins = [], []
    for batch_id in snapshot.batch_ids:
        record = records.get(batch_id)
        if record is None or record.status != "accepted":
            raise StoreError(
                f"{store.root.name}: snapshot {snapshot.hash} names batch {batch_id}, which is not accepted"
            )
        frame = read_curated_batch(store, batch_id)
        if len(frame) != record.rows_accepted:
            raise StoreError(
                f"{store.curated_file(batch_id).parent}: {len(frame)} rows, the registry says {record.rows_accepted}"
            )
        origins.append(pd.DataFrame({"file": record.source, "row": frame[ROW_COLUMN].to_numpy(), "part": record.part,
                                     "batch_id": batch_id}))  # fmt: skip
        frames.append(frame.drop(columns=ROW_COLUMN))
    frame = pd.concat(frames, ignore_index=True)
    origin = pd.concat(origins, ignore_index=True)
    if len(frame) != snapshot.rows:
        raise StoreError(f"{store.root.name}: snapshot {snapshot.hash} has {len(frame)} rows, expected {snapshot.rows}")
    return RawData(frame=frame, origin=origin, content_hash=snapshot.hash)


def read_curated_batch(store: DatasetStore, batch_id: str) -> pd.DataFrame:
    """A batch's accepted rows, every part of it, with their source row numbers in `_row`."""
    paths = store.curated_files(batch_id)
    if not paths:
        raise StoreError(f"{store.root.name}: batch {batch_id} has no curated rows in {store.curated_dir}")
    frames = [pd.read_parquet(p) for p in paths]
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


def last_watermark(store: DatasetStore, source: str) -> str | None:
    """The watermark (JSON text) up to which `source` has been admitted; None before its first batch.

    Only accepted batches move it: the rows of a rejected increment are read again by the next run.
    """
    accepted = [b for b in list_batches(store, status="accepted", source=source) if b.watermark_to is not None]
    return accepted[-1].watermark_to if accepted else None


def read_curated(
    store: DatasetStore, snapshot_id: str | None = None, sample_rows: int | None = None, seed: int = 0
) -> RawData:
    """A training run's input: the given snapshot, or a new one of every accepted batch, optionally sampled.

    The sample is seeded and taken per batch (as `read_source` samples per file); `content_hash` stays the
    snapshot hash, and the sample size is part of the config recorded next to it.
    """
    snapshot = load_snapshot(store, snapshot_id) if snapshot_id else take_snapshot(store)
    raw = read_snapshot(store, snapshot)
    if sample_rows is None:
        return raw
    keep = [
        rows.sample(n=sample_rows, random_state=seed).index if len(rows) > sample_rows else rows.index
        for _, rows in raw.origin.groupby("batch_id", sort=False)
    ]
    index = pd.Index(sorted(i for part in keep for i in part))
    frame, origin = raw.frame.loc[index].reset_index(drop=True), raw.origin.loc[index].reset_index(drop=True)
    return RawData(frame=frame, origin=origin, content_hash=raw.content_hash)


def read_new_batches(store: DatasetStore, since: str) -> tuple[RawData, str] | None:
    """The rows of accepted batches that snapshot `since` does not hold (None if there are none), and the hash of
    a snapshot of all accepted batches: what a model refreshed on these rows has seen in all."""
    old = load_snapshot(store, since)
    everything = take_snapshot(store)
    new_ids = [b for b in everything.batch_ids if b not in old.batch_ids]
    if not new_ids:
        return None
    return read_snapshot(store, take_snapshot(store, new_ids)), everything.hash
