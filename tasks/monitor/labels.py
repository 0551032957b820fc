"""Labels that arrive after the predictions: checked against the request log by request id, and kept once each.

A label names a served record by `request_id` (in the answer) and `record` (its 0-based place in the request) and
gives the outcome: a number for regression, a class (`>50K`, or 1 / 0, true / false) for binary tasks, a class name
for multiclass. Every label gets one verdict, the same whether it came over HTTP (POST /feedback) or in a file of the
feedback landing folder:

- accepted: a known request, an existing record, a valid label, not late;
- duplicate: the same label for the same record again (from anywhere, at any time): accepted, counted once;
- contradiction: another label for a record that has one: refused (HTTP 409, a file's row quarantined) with
  `feedback.on_conflict: keep_first` (the default), recorded as a correction with `replace`;
- refused, a file's row quarantined: an unknown request id (never logged, not sampled, or older than the request log
  keeps) or a record the request does not have (HTTP 404); a label the task cannot take, or one received more than
  `feedback.max_delay_h` after its prediction, late (HTTP 422).

HTTP is all or nothing (any refusal: nothing is stored); a file keeps its good rows and quarantines the others with
their reasons, and its accounting is exact: rows read = accepted + duplicates + corrections + quarantined.
Labels live in `$MLCYCLE_HOME/feedback/<name>/labels.sqlite`, one row per labelled record, with the answering
model and prediction time copied from the request index; the check and the write are one SQLite transaction, so
concurrent workers cannot both accept contradicting labels.
"""

from __future__ import annotations

import hashlib
import io
import math
import sqlite3
from collections.abc import Callable, Iterable
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from mlcycle.schemas.config import FeedbackConfig, LandingConfig, SourceConfig, TaskType
from mlcycle.tasks.monitor.request_log import LoggedRequest
from mlcycle.tasks.paths import mlcycle_home

Outcome = Literal["accepted", "duplicate", "corrected", "refused"]
Lookup = Callable[[set[str]], dict[str, LoggedRequest]]
LABEL_COLUMNS = ("request_id", "record", "label")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS labels (
    request_id TEXT NOT NULL, record INTEGER NOT NULL, y REAL NOT NULL, label TEXT NOT NULL, model TEXT NOT NULL,
    predicted_us INTEGER NOT NULL, received_us INTEGER NOT NULL, source TEXT NOT NULL,
    corrections INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (request_id, record)
);
CREATE INDEX IF NOT EXISTS labels_by_time ON labels (predicted_us);
CREATE TABLE IF NOT EXISTS files (
    content_hash TEXT PRIMARY KEY, name TEXT NOT NULL, at TEXT NOT NULL, rows_in INTEGER NOT NULL,
    accepted INTEGER NOT NULL, duplicates INTEGER NOT NULL, corrected INTEGER NOT NULL, quarantined INTEGER NOT NULL
);
"""


def feedback_dir(name: str) -> Path:
    return mlcycle_home() / "feedback" / name


def landing_dir(name: str, settings: FeedbackConfig) -> Path:
    return Path(settings.landing) if settings.landing else feedback_dir(name) / "landing"


@dataclass(frozen=True)
class Label:
    """One label as sent: which served record, and its outcome."""

    request_id: str
    record: int
    label: Any


@dataclass(frozen=True)
class LabelTarget:
    """How a task's labels are read: numbers for regression; for binary, the class names, 1/0 or true/false; for
    multiclass, the class names (y is the class's index, as training encodes it)."""

    task: TaskType
    classes: tuple[str, ...] = ()  # binary: (negative, positive); multiclass: in the model's order

    def encode(self, value: Any) -> tuple[float, str] | str:
        """(the label as the metric's y, its text), or why it is not a label of this task."""
        if self.task == "regression":
            if isinstance(value, bool) or value is None:
                return f"label {value!r} is not a number"
            try:
                number = float(value)
            except (TypeError, ValueError):
                return f"label {value!r} is not a number"
            return (number, repr(number)) if math.isfinite(number) else f"label {value!r} is not a finite number"
        if self.task == "multiclass":
            if isinstance(value, str) and value in self.classes:
                return float(self.classes.index(value)), value
            return f"label {value!r} is not a class of this model: one of {list(self.classes)}"
        negative, positive = self.classes
        if isinstance(value, str) and value in (negative, positive):
            return float(value == positive), value
        if isinstance(value, bool) or (isinstance(value, int | float) and value in (0, 1)):
            return float(value), positive if value else negative
        if isinstance(value, str) and value.strip().lower() in ("0", "1", "true", "false"):
            yes = value.strip().lower() in ("1", "true")
            return float(yes), positive if yes else negative
        return f"label {value!r} is not a class of this model: {negative!r} or {positive!r} (or 0/1, false/true)"


@dataclass(frozen=True)
class Verdict:
    """What became of one label; `status` is the HTTP answer a refusal gets (422, or 409 for a contradiction)."""

    index: int
    label: Label
    outcome: Outcome
    reason: str = ""
    status: int = 200
    y: float | None = None
    text: str = ""
    request: LoggedRequest | None = None


def judge_labels(labels: list[Label], known: dict[str, LoggedRequest], existing: dict[tuple[str, int], float],
                 target: LabelTarget, settings: FeedbackConfig, received: datetime) -> list[Verdict]:  # fmt: skip
    """One verdict per label, in order; a label sent twice in one batch is judged against the first."""
    seen = dict(existing)
    verdicts = []
    for i, item in enumerate(labels):
        request = known.get(item.request_id)
        encoded = target.encode(item.label)
        if request is None:
            verdicts.append(Verdict(i, item, "refused", f"request id {item.request_id!r} is not in the request log "
                                    "(unknown, not sampled, or older than the log keeps)", 404))  # fmt: skip
            continue
        if not 0 <= item.record < request.records:
            verdicts.append(Verdict(i, item, "refused", f"request {item.request_id} has {request.records} record(s): "
                                    f"there is no record {item.record}", 404, request=request))  # fmt: skip
            continue
        if isinstance(encoded, str):
            verdicts.append(Verdict(i, item, "refused", encoded, 422, request=request))
            continue
        y, text = encoded
        delay_h = (received - request.ts).total_seconds() / 3600
        if settings.max_delay_h is not None and delay_h > settings.max_delay_h:
            verdicts.append(Verdict(i, item, "refused", f"late: received {delay_h:.1f} h after the prediction; "
                                    f"feedback.max_delay_h is {settings.max_delay_h:g}", 422, request=request))  # fmt: skip
            continue
        key = (item.request_id, item.record)
        before = seen.get(key)
        if before is None:
            outcome: Outcome = "accepted"
        elif before == y:
            outcome = "duplicate"
        elif settings.on_conflict == "keep_first":
            verdicts.append(Verdict(i, item, "refused", f"contradicts the label already recorded for request "
                                    f"{item.request_id} record {item.record} ({target_text(target, before)}); "
                                    "feedback.on_conflict is keep_first", 409, request=request))  # fmt: skip
            continue
        else:
            outcome = "corrected"
        seen[key] = y
        verdicts.append(Verdict(i, item, outcome, y=y, text=text, request=request))
    return verdicts


def target_text(target: LabelTarget, y: float) -> str:
    if target.task != "regression":
        return target.classes[int(y)]
    return f"{y:g}"


@dataclass
class LabelBatch:
    """The verdicts on one batch of labels and whether they were stored."""

    verdicts: list[Verdict]
    stored: bool

    def count(self, outcome: Outcome) -> int:
        return sum(v.outcome == outcome for v in self.verdicts)

    @property
    def refused(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.outcome == "refused"]

    def summary(self) -> dict[str, int]:
        return {"labels": len(self.verdicts), "accepted": self.count("accepted"), "duplicates": self.count("duplicate"),
                "corrected": self.count("corrected"), "refused": len(self.refused)}  # fmt: skip


class LabelStore:
    """`labels.sqlite` of one model name: the labels received, and the label files already ingested."""

    def __init__(self, name: str, root: Path | None = None) -> None:
        self.name = name
        self.root = root or feedback_dir(name)
        self.path = self.root / "labels.sqlite"

    def _connect(self) -> closing[sqlite3.Connection]:
        self.root.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(_SCHEMA)
        return closing(conn)

    def record(self, labels: list[Label], lookup: Lookup, target: LabelTarget, settings: FeedbackConfig,
               source: str, received: datetime | None = None, all_or_nothing: bool = True) -> LabelBatch:  # fmt: skip
        """Judge `labels` and store what they add, in one transaction. `all_or_nothing` (HTTP): any refusal stores
        nothing; else (files) the refused ones are left out."""
        received = received or datetime.now(UTC)
        known = lookup({label.request_id for label in labels})
        keys = sorted({(label.request_id, label.record) for label in labels})
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")  # the read of what exists and the write are one unit across processes
            try:
                existing = _existing(conn, keys)
                verdicts = judge_labels(labels, known, existing, target, settings, received)
                store = not (all_or_nothing and any(v.outcome == "refused" for v in verdicts))
                if store:
                    _write(conn, verdicts, source, received)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return LabelBatch(verdicts, store)

    def read(self, since: datetime | None = None, until: datetime | None = None) -> pd.DataFrame:
        """Labels of predictions made in [since, until): request_id, record, y, label, model, predicted, received,
        source, corrections."""
        query, args = "SELECT * FROM labels WHERE 1 = 1", []
        if since is not None:
            query, args = query + " AND predicted_us >= ?", [*args, _micros(since)]
        if until is not None:
            query, args = query + " AND predicted_us < ?", [*args, _micros(until)]
        if not self.path.exists():
            return _frame([])
        with self._connect() as conn:
            return _frame(conn.execute(query, args).fetchall())

    def of_request(self, request_id: str) -> pd.DataFrame:
        if not self.path.exists():
            return _frame([])
        with self._connect() as conn:
            return _frame(conn.execute("SELECT * FROM labels WHERE request_id = ?", (request_id,)).fetchall())

    def claimed(self, content_hash: str) -> bool:
        with self._connect() as conn:
            return conn.execute("SELECT 1 FROM files WHERE content_hash = ?", (content_hash,)).fetchone() is not None

    def claim(self, content_hash: str, name: str, counts: dict[str, int]) -> None:
        with self._connect() as conn:
            conn.execute("INSERT OR IGNORE INTO files VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                         (content_hash, name, datetime.now(UTC).isoformat(timespec="seconds"), counts["rows_in"],
                          counts["accepted"], counts["duplicates"], counts["corrected"], counts["quarantined"]))  # fmt: skip


def _existing(conn: sqlite3.Connection, keys: list[tuple[str, int]]) -> dict[tuple[str, int], float]:
    found: dict[tuple[str, int], float] = {}
    ids = sorted({rid for rid, _ in keys})
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        for rid, record, y in conn.execute(f"SELECT request_id, record, y FROM labels WHERE request_id IN ({marks})",
                                           chunk):  # fmt: skip
            found[(rid, record)] = y
    return found


def _write(conn: sqlite3.Connection, verdicts: list[Verdict], source: str, received: datetime) -> None:
    for v in verdicts:
        assert v.request is not None or v.outcome == "refused"
        if v.outcome == "accepted":
            assert v.request is not None
            conn.execute("INSERT INTO labels VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0)",
                         (v.label.request_id, v.label.record, v.y, v.text, v.request.model, _micros(v.request.ts),
                          _micros(received), source))  # fmt: skip
        elif v.outcome == "corrected":
            conn.execute("UPDATE labels SET y = ?, label = ?, received_us = ?, source = ?, corrections = corrections "
                         "+ 1 WHERE request_id = ? AND record = ?",
                         (v.y, v.text, _micros(received), source, v.label.request_id, v.label.record))  # fmt: skip


def _frame(rows: list[tuple[Any, ...]]) -> pd.DataFrame:
    columns = ["request_id", "record", "y", "label", "model", "predicted_us", "received_us", "source", "corrections"]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.assign(
        record=frame["record"].astype("int64"),
        y=frame["y"].astype("float64"),
        predicted=pd.to_datetime(frame["predicted_us"].astype("int64"), unit="us", utc=True),
        received=pd.to_datetime(frame["received_us"].astype("int64"), unit="us", utc=True),
    ).drop(columns=["predicted_us", "received_us"])


def _micros(ts: datetime) -> int:
    return int(ts.timestamp() * 1_000_000)


# --- label files -------------------------------------------------------------------------------------------------


@dataclass
class FileOutcome:
    """One label file's accounting: rows read = accepted + duplicates + corrected + quarantined."""

    file: str
    content_hash: str
    rows_in: int = 0
    accepted: int = 0
    duplicates: int = 0
    corrected: int = 0
    quarantined: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    quarantine: str | None = None

    def counts(self) -> dict[str, int]:
        return {"rows_in": self.rows_in, "accepted": self.accepted, "duplicates": self.duplicates,
                "corrected": self.corrected, "quarantined": self.quarantined}  # fmt: skip


def read_label_file(data: bytes, name: str) -> pd.DataFrame | str:
    """The rows of a label file (CSV, Parquet, or JSON lines by suffix), or why it cannot be read."""
    suffix = Path(name).suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(io.BytesIO(data))
        if suffix in (".jsonl", ".ndjson", ".json"):
            return pd.read_json(io.BytesIO(data), lines=True, dtype=False)
        return pd.read_csv(io.BytesIO(data), dtype={"request_id": str, "label": object}, keep_default_na=False)
    except Exception as exc:  # any parser error is the file's fault
        return f"cannot read {name}: {type(exc).__name__}: {exc}"


def labels_from_frame(frame: pd.DataFrame) -> tuple[list[tuple[int, Label]], list[tuple[int, str]]]:
    """(row, Label) for each well-formed row, and (row, reason) for the others."""
    missing = [c for c in LABEL_COLUMNS if c not in frame.columns]
    if missing:
        return [], [(i, f"the file has no column {', '.join(missing)} (needs {', '.join(LABEL_COLUMNS)})")
                    for i in range(len(frame))]  # fmt: skip
    good, bad = [], []
    for i, (rid, record, label) in enumerate(zip(frame["request_id"], frame["record"], frame["label"], strict=True)):
        number = pd.to_numeric(pd.Series([record]), errors="coerce").iloc[0]
        if not isinstance(rid, str) or not rid.strip():
            bad.append((i, f"request_id {rid!r} is not a request id"))
        elif pd.isna(number) or float(number) != int(number) or isinstance(record, bool):
            bad.append((i, f"record {record!r} is not a record index (0, 1, ...)"))
        elif label is None or (isinstance(label, float) and math.isnan(label)) or label == "":
            bad.append((i, "label is missing"))
        else:
            good.append((i, Label(rid.strip(), int(number), label)))
    return good, bad


def ingest_label_file(path: Path, store: LabelStore, lookup: Lookup, target: LabelTarget, settings: FeedbackConfig,
                      received: datetime | None = None) -> FileOutcome | None:  # fmt: skip
    """Ingest one label file (None: its content was ingested before); bad rows go to the quarantine ledger."""
    data = path.read_bytes()
    content_hash = hashlib.sha256(data).hexdigest()
    if store.claimed(content_hash):
        return None
    outcome = FileOutcome(str(path), content_hash)
    frame = read_label_file(data, path.name)
    quarantined: list[dict[str, Any]] = []
    if isinstance(frame, str):
        quarantined.append({"row": None, "request_id": None, "record": None, "label": None, "reason": frame,
                            "status": 400})  # fmt: skip
    else:
        outcome.rows_in = len(frame)
        good, bad = labels_from_frame(frame)
        for row, reason in bad:
            quarantined.append({"row": row, **_raw(frame, row), "reason": reason, "status": 422})
        batch = store.record([label for _, label in good], lookup, target, settings, f"file:{path.name}", received,
                             all_or_nothing=False)  # fmt: skip
        for (row, _), verdict in zip(good, batch.verdicts, strict=True):
            if verdict.outcome == "refused":
                quarantined.append({"row": row, **_raw(frame, row), "reason": verdict.reason,
                                    "status": verdict.status})  # fmt: skip
        outcome.accepted = batch.count("accepted")
        outcome.duplicates = batch.count("duplicate")
        outcome.corrected = batch.count("corrected")
    outcome.quarantined = sum(q["row"] is not None for q in quarantined)
    for q in quarantined:
        kind = _reason_kind(q["reason"])
        outcome.reasons[kind] = outcome.reasons.get(kind, 0) + 1
    if quarantined:
        outcome.quarantine = str(write_quarantine(store, content_hash, path.name, quarantined))
    assert outcome.rows_in == outcome.accepted + outcome.duplicates + outcome.corrected + outcome.quarantined
    store.claim(content_hash, path.name, outcome.counts())
    return outcome


def _raw(frame: pd.DataFrame, row: int) -> dict[str, str | None]:
    return {c: (None if c not in frame.columns else str(frame[c].iloc[row])) for c in LABEL_COLUMNS}


def _reason_kind(reason: str) -> str:
    """A short kind for counting reasons: the words before the first specific value."""
    kinds = ("is not in the request log", "there is no record", "contradicts", "is not a class", "is not a number",
             "is not a finite number", "is not a request id", "is not a record index", "label is missing",
             "has no column", "late", "cannot read")  # fmt: skip
    return next((kind for kind in kinds if kind in reason), reason)


def write_quarantine(store: LabelStore, content_hash: str, name: str, rows: list[dict[str, Any]]) -> Path:
    """The refused rows of a label file, with reasons, as Parquet under `feedback/<name>/quarantine/`."""
    folder = store.root / "quarantine"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{content_hash[:16]}.parquet"
    frame = pd.DataFrame(rows).assign(file=name).astype({"row": "Int64", "status": "int64"})
    partial = target.with_suffix(".parquet.part")
    frame.astype({c: "string" for c in LABEL_COLUMNS}).to_parquet(partial, index=False)
    partial.replace(target)
    return target


def ingest_label_folder(name: str, settings: FeedbackConfig, lookup: Lookup, target: LabelTarget,
                        received: datetime | None = None, store: LabelStore | None = None) -> list[FileOutcome]:  # fmt: skip
    """Every settled, not yet ingested file of the feedback landing folder, in name order."""
    from mlcycle.tasks.ingest.landing import scan_landing

    folder = landing_dir(name, settings)
    folder.mkdir(parents=True, exist_ok=True)
    source = SourceConfig(kind="landing", landing=LandingConfig(path=str(folder), settle_s=settings.settle_s))
    store = store or LabelStore(name)
    found = [ingest_label_file(Path(f.path), store, lookup, target, settings, received)
             for f in scan_landing(source).ready]  # fmt: skip
    return [f for f in found if f is not None]


def labels_of(rows: Iterable[dict[str, Any]]) -> list[Label]:
    """Labels from JSON objects `{request_id, record, label}` already validated by the request model."""
    return [Label(r["request_id"], int(r["record"]), r["label"]) for r in rows]
