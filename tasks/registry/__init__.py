"""The model registry: which versions of a model exist, which one is champion, and every change of champion.

The sub-modules are what a version goes through: `bundle` (the model as saved in the BentoML model store), `gate`
and `smoke` (may it replace the champion?), `export` (for client devices) and `reproduce`. This module keeps the
versions' status next to the model store, in `MLCYCLE_HOME/models/registry.sqlite`:

- `versions`: one row per saved bundle, with its status: `challenger` (saved, not decided), `champion`,
  `rejected` (a gate said no) or `retired` (was champion, replaced or rolled back from).
- `champions`: at most one row per model name. A promotion changes it, both version rows and appends to the log in
  one SQLite transaction, so a process killed mid-way leaves the old champion or the new one, never none or two.
- `events`: the append-only promotion log: promotions, rejections and rollbacks with time, from/to tag, reason,
  evidence, flow run and actor.
- `shadows`: at most one row per model name: the challenger the service scores beside the champion (its answers
  unseen) until live labels promote or reject it. Promoting or rejecting that version ends its shadow in the same
  transaction; a new shadow replaces the old one, which is rejected as superseded.
"""

from __future__ import annotations

import getpass
import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlcycle.tasks.errors import UserError
from mlcycle.tasks.paths import mlcycle_home

STATUSES = ("challenger", "champion", "rejected", "retired")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    tag TEXT PRIMARY KEY, name TEXT NOT NULL, created TEXT NOT NULL, status TEXT NOT NULL,
    primary_metric TEXT, metric REAL, data_hash TEXT
);
CREATE TABLE IF NOT EXISTS champions (name TEXT PRIMARY KEY, tag TEXT NOT NULL, since TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS digests (tag TEXT PRIMARY KEY, files TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS shadows (name TEXT PRIMARY KEY, tag TEXT NOT NULL, since TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, name TEXT NOT NULL, action TEXT NOT NULL,
    from_tag TEXT, to_tag TEXT, reason TEXT NOT NULL, evidence TEXT NOT NULL, flow_run_id TEXT, actor TEXT
);
"""


class RegistryError(UserError, ValueError):
    """A registry operation that cannot be done: an unknown tag, a tag of another model, a bad status."""


@dataclass(frozen=True)
class Version:
    tag: str
    name: str
    created: str
    status: str
    primary_metric: str | None
    metric: float | None
    data_hash: str | None


@dataclass(frozen=True)
class Event:
    id: int
    at: str
    name: str
    action: str
    from_tag: str | None
    to_tag: str | None
    reason: str
    evidence: dict[str, Any]
    flow_run_id: str | None
    actor: str | None


def registry_path() -> Path:
    return mlcycle_home() / "models" / "registry.sqlite"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


@contextmanager
def _connect() -> Iterator[sqlite3.Connection]:
    path = registry_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE) so each change is one atomic unit.
    with closing(sqlite3.connect(path, timeout=60, isolation_level=None)) as conn:
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(_SCHEMA)
        yield conn


def register(tag: str, *, primary_metric: str | None = None, metric: float | None = None,
             data_hash: str | None = None, created: str | None = None,
             digests: dict[str, str] | None = None) -> Version:  # fmt: skip
    """Record a newly saved bundle as a challenger, with the SHA-256 of each of its files (idempotent: a known tag
    keeps its status and its digests)."""
    name = tag.partition(":")[0]
    with _connect() as conn:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            "INSERT OR IGNORE INTO versions VALUES (?, ?, ?, 'challenger', ?, ?, ?)",
            (tag, name, created or _now(), primary_metric, metric, data_hash),
        )
        if digests is not None:
            conn.execute("INSERT OR IGNORE INTO digests VALUES (?, ?)", (tag, json.dumps(digests, sort_keys=True)))
        conn.execute("COMMIT")
        return _version(conn, tag)


def digests(tag: str) -> dict[str, str] | None:
    """The SHA-256 of each file of the bundle, recorded when it was saved; None for a tag saved without them."""
    with _connect() as conn:
        row = conn.execute("SELECT files FROM digests WHERE tag = ?", (tag,)).fetchone()
    return None if row is None else dict(json.loads(row["files"]))


def _version(conn: sqlite3.Connection, tag: str) -> Version:
    row = conn.execute("SELECT * FROM versions WHERE tag = ?", (tag,)).fetchone()
    if row is None:
        raise RegistryError(f"{tag}: not in the model registry ({registry_path()})")
    return Version(**dict(row))


def version(tag: str) -> Version:
    with _connect() as conn:
        return _version(conn, tag)


def versions(name: str | None = None) -> list[Version]:
    """All recorded versions (of one model name), newest first."""
    query, args = "SELECT * FROM versions", ()
    if name:
        query, args = query + " WHERE name = ?", (name,)
    with _connect() as conn:
        return [Version(**dict(r)) for r in conn.execute(query + " ORDER BY created DESC, rowid DESC", args)]


def champion(name: str) -> str | None:
    """The champion's tag for a model name, or None before the first promotion."""
    with _connect() as conn:
        row = conn.execute("SELECT tag FROM champions WHERE name = ?", (name,)).fetchone()
    return row["tag"] if row else None


def champion_since(name: str) -> str | None:
    with _connect() as conn:
        row = conn.execute("SELECT since FROM champions WHERE name = ?", (name,)).fetchone()
    return row["since"] if row else None


def promote(tag: str, *, reason: str, evidence: dict[str, Any] | None = None, action: str = "promote",
            flow_run_id: str | None = None, actor: str | None = None) -> Event:  # fmt: skip
    """Make `tag` the champion of its name, retire the previous one and log it, all in one transaction."""
    name = tag.partition(":")[0]
    with _connect() as conn:
        conn.execute("BEGIN IMMEDIATE")
        try:
            _version(conn, tag)
            row = conn.execute("SELECT tag FROM champions WHERE name = ?", (name,)).fetchone()
            previous = row["tag"] if row else None
            at = _now()
            if previous and previous != tag:
                conn.execute("UPDATE versions SET status = 'retired' WHERE tag = ?", (previous,))
            conn.execute("UPDATE versions SET status = 'champion' WHERE tag = ?", (tag,))
            conn.execute(
                "INSERT INTO champions VALUES (?, ?, ?) ON CONFLICT(name) DO UPDATE SET tag = ?, since = ?",
                (name, tag, at, tag, at),
            )
            conn.execute("DELETE FROM shadows WHERE tag = ?", (tag,))
            event_id = _log(conn, at, name, action, previous, tag, reason, evidence, flow_run_id, actor)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return _event(conn, event_id)


def reject(tag: str, *, reason: str, evidence: dict[str, Any] | None = None, flow_run_id: str | None = None,
           actor: str | None = None) -> Event:  # fmt: skip
    """Mark a challenger rejected (the champion is unchanged) and log why."""
    name = tag.partition(":")[0]
    with _connect() as conn:
        conn.execute("BEGIN IMMEDIATE")
        try:
            current = _version(conn, tag)
            if current.status == "champion":
                raise RegistryError(f"{tag} is the champion of {name}; roll back to another version instead")
            row = conn.execute("SELECT tag FROM champions WHERE name = ?", (name,)).fetchone()
            conn.execute("UPDATE versions SET status = 'rejected' WHERE tag = ?", (tag,))
            conn.execute("DELETE FROM shadows WHERE tag = ?", (tag,))
            event_id = _log(conn, _now(), name, "reject", row["tag"] if row else None, tag, reason, evidence,
                            flow_run_id, actor)  # fmt: skip
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return _event(conn, event_id)


def shadow(name: str) -> str | None:
    """The challenger in shadow for a model name, or None."""
    with _connect() as conn:
        row = conn.execute("SELECT tag FROM shadows WHERE name = ?", (name,)).fetchone()
    return row["tag"] if row else None


def shadow_since(name: str) -> str | None:
    with _connect() as conn:
        row = conn.execute("SELECT since FROM shadows WHERE name = ?", (name,)).fetchone()
    return row["since"] if row else None


def put_in_shadow(tag: str, *, reason: str, evidence: dict[str, Any] | None = None, flow_run_id: str | None = None,
                  actor: str | None = None, at: str | None = None) -> Event:  # fmt: skip
    """Make a challenger its name's shadow (scored beside the champion, never answering); a previous shadow is
    rejected as superseded. `at` backdates the start (a replay's clock)."""
    name = tag.partition(":")[0]
    with _connect() as conn:
        conn.execute("BEGIN IMMEDIATE")
        try:
            current = _version(conn, tag)
            if current.status != "challenger":
                raise RegistryError(f"{tag} is {current.status}: only a challenger can be put in shadow")
            row = conn.execute("SELECT tag FROM shadows WHERE name = ?", (name,)).fetchone()
            at = at or _now()
            if row and row["tag"] != tag:
                conn.execute("UPDATE versions SET status = 'rejected' WHERE tag = ?", (row["tag"],))
                _log(conn, at, name, "reject", None, row["tag"], f"superseded in shadow by {tag}", None, flow_run_id,
                     actor)  # fmt: skip
            conn.execute("INSERT INTO shadows VALUES (?, ?, ?) ON CONFLICT(name) DO UPDATE SET tag = ?, since = ?",
                         (name, tag, at, tag, at))  # fmt: skip
            champion_row = conn.execute("SELECT tag FROM champions WHERE name = ?", (name,)).fetchone()
            event_id = _log(conn, at, name, "shadow", champion_row["tag"] if champion_row else None, tag, reason,
                            evidence, flow_run_id, actor)  # fmt: skip
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return _event(conn, event_id)


def end_shadow(name: str) -> str | None:
    """Stop shadowing (the version keeps its status); the tag that was in shadow, if any."""
    with _connect() as conn:
        row = conn.execute("SELECT tag FROM shadows WHERE name = ?", (name,)).fetchone()
        conn.execute("DELETE FROM shadows WHERE name = ?", (name,))
    return row["tag"] if row else None


def _log(conn: sqlite3.Connection, at: str, name: str, action: str, from_tag: str | None, to_tag: str | None,
         reason: str, evidence: dict[str, Any] | None, flow_run_id: str | None, actor: str | None) -> int:  # fmt: skip
    cursor = conn.execute(
        "INSERT INTO events (at, name, action, from_tag, to_tag, reason, evidence, flow_run_id, actor) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (at, name, action, from_tag, to_tag, reason, json.dumps(evidence or {}, sort_keys=True, default=str),
         flow_run_id, actor or _actor()),
    )  # fmt: skip
    return int(cursor.lastrowid or 0)


def _event(conn: sqlite3.Connection, event_id: int) -> Event:
    row = dict(conn.execute("SELECT * FROM events WHERE id = ?", (event_id,)).fetchone())
    return Event(**{**row, "evidence": json.loads(row["evidence"])})


def history(name: str) -> list[Event]:
    """The promotion log of a model name, oldest first."""
    with _connect() as conn:
        rows = conn.execute("SELECT id FROM events WHERE name = ? ORDER BY id", (name,)).fetchall()
        return [_event(conn, r["id"]) for r in rows]


def serving_tag(ref: str) -> str:
    """What may be served for `ref`: a full tag as given; a bare name only through its champion, never a version
    the gate has not promoted (RegistryError naming the fix when the name has no champion)."""
    if ":" in ref:
        return ref
    tag = champion(ref)
    if tag is None:
        known = versions(ref)
        found = f"its {len(known)} version(s) are not promoted" if known else "it has no versions"
        raise RegistryError(f"{ref} has no champion ({found}; see `mlcycle models list {ref}`): nothing to serve by "
                            f"name; serve one version by its full tag, e.g. {known[0].tag if known else ref + ':<version>'}"
                            f", to serve it anyway")  # fmt: skip
    return tag


def resolve(ref: str) -> str:
    """A full tag as given; a bare model name means its champion, or its newest version before any promotion."""
    if ":" in ref:
        return ref
    tag = champion(ref)
    if tag:
        return tag
    import bentoml

    return str(bentoml.models.get(ref).tag)
