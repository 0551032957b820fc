"""Admit one batch: register it, keep the raw copy, validate, and either commit its accepted rows and quarantine
ledger or reject it as a whole. Every input row is accounted for."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Literal

import numpy as np
import pandas as pd
import pandera.pandas as pa

from mlcycle.schemas import schema_fingerprint
from mlcycle.schemas.config import PipelineConfig
from mlcycle.tasks.ingest.landing import scan_landing
from mlcycle.tasks.ingest.read import (
    FileChangedError,
    FileInput,
    ParsedBatch,
    SourceError,
    copy_input,
    expand_files,
    iter_batch,
    parse_batch,
)
from mlcycle.tasks.ingest.schema_review import diff_frame
from mlcycle.tasks.ingest.sql import SqlIncrement, read_sql_increment, sql_source_label
from mlcycle.tasks.ingest.store import (
    BatchRecord,
    BatchWriter,
    DatasetStore,
    claim_batch,
    discard_batch_files,
    last_watermark,
    list_batches,
    new_batch_id,
    now_utc,
    read_quarantined_rows,
    record_batch,
    remember_file,
    seen_files,
    stage_raw_copy,
    write_curated,
    write_ledger,
)
from mlcycle.tasks.ingest.validate import SchemaContractError, text_columns, validate_frame

log = logging.getLogger("mlcycle.ingest")

Outcome = Literal["accepted", "rejected", "skipped"]


@dataclass(frozen=True)
class BatchResult:
    """What happened to one input: its registry record (the earlier one when skipped) and a message to show."""

    outcome: Outcome
    source: str
    message: str
    record: BatchRecord | None = None
    top_reasons: tuple[str, ...] = ()
    schema_diff: str | None = None  # markdown: how a rejected batch departs from the schema


def top_reasons(ledger: pd.DataFrame, limit: int) -> list[str]:
    """The most frequent (column, check) failures with a count and one example: `age: ge(16) ×3 (row 4: 2)`."""
    if ledger.empty:
        return []
    groups = ledger.groupby(["column", "check"], sort=False)
    counts = groups["row"].nunique().sort_values(ascending=False, kind="stable").head(limit)
    first = groups.first()
    reasons = []
    for (column, check), count in counts.items():
        example = first.loc[(column, check)]
        reasons.append(f"{column}: {check} ×{count} (row {example['row']}: {str(example['value'])[:60]})")
    return reasons


def admission_rules(item: FileInput | SqlIncrement, config: PipelineConfig) -> str:
    """A hash of what decides a batch's verdict besides its bytes and its schema: how the input is read (the
    source's read options, this file's own) and how much quarantine it may carry. A batch rejected under other
    rules is judged again: raising `ingest.max_quarantine_rate` admits what it refused."""
    # Everything in `source` but where the data is: a read option added later counts without being named here.
    where = {"kind", "package", "version", "sha256", "files", "landing", "sql", "snapshot"}
    rules = {
        "source": config.source.model_dump(mode="json", exclude=where),
        "item": [item.format, item.skiprows] if isinstance(item, FileInput) else list(item.drop_columns),
        "max_quarantine_rate": config.ingest.max_quarantine_rate,
    }
    return hashlib.sha256(json.dumps(rules, sort_keys=True, default=str).encode()).hexdigest()[:16]


def admit_batch(
    item: FileInput | SqlIncrement, config: PipelineConfig, store: DatasetStore, schema: type[pa.DataFrameModel]
) -> BatchResult:
    """Ingest one file or SQL increment as one batch and return its outcome; never raises for bad data.

    A file is copied into the raw store and hashed as it streams, then read, validated and written a chunk
    (`ingest.chunk_mb`) at a time, so that a file of any size passes in bounded memory; the batch is accepted or
    rejected as a whole, with the same row accounting as in one piece."""
    schema_hash = schema_fingerprint(schema)
    rules_hash = admission_rules(item, config)
    started = now_utc()
    if isinstance(item, SqlIncrement):
        label, kind, part = item.source, "sql", ""
    else:
        label, kind, part = item.label, "files", item.part
    try:
        raw_path, content_hash = _keep_raw_copy(item, store)
    except FileChangedError as exc:
        return BatchResult("skipped", label, str(exc))
    except SourceError as exc:
        record = BatchRecord(new_batch_id(""), label, kind, "", schema_hash, "rejected", started, part,
                             reasons=[str(exc)], finished_at=now_utc(), rules_hash=rules_hash)  # fmt: skip
        return _rejected(store, record, str(exc))
    record = BatchRecord(
        batch_id=new_batch_id(content_hash), source=label, source_kind=kind, content_hash=content_hash,
        schema_hash=schema_hash, status="pending", started_at=started, part=part, rules_hash=rules_hash,
        watermark_from=item.watermark_from if isinstance(item, SqlIncrement) else None,
        watermark_to=item.watermark_to if isinstance(item, SqlIncrement) else None,
    )  # fmt: skip
    earlier = claim_batch(store, record, config.ingest.abandon_after_s)
    if earlier is not None:
        why = ("already ingested" if earlier.status != "rejected" else "already rejected under this schema and these "
               "admission rules (read options, ingest.max_quarantine_rate)")  # fmt: skip
        message = f"{label}: skipped, same content as batch {earlier.batch_id} from {earlier.source} ({why})"
        log.info(message)
        _remember(item, store, earlier)
        return BatchResult("skipped", label, message, earlier)
    try:
        result = _validate_and_commit(item, raw_path, replace(record, raw_path=str(raw_path)), config, store, schema)
        if result.record is not None:
            _remember(item, store, result.record)
        return result
    except BaseException as exc:
        # Whatever went wrong, nothing half-written stays and the claim does not stay pending (which would block
        # this content until the claim is abandoned); the content may be ingested again.
        discard_batch_files(store, record.batch_id)
        record_batch(store, replace(record, status="rejected", reasons=[f"{label}: ingest failed: {exc!r}"],
                                    finished_at=now_utc(), failed_internally=True))  # fmt: skip
        raise


def _keep_raw_copy(item: FileInput | SqlIncrement, store: DatasetStore) -> tuple[Path, str]:
    """The input's raw copy in the store and its content hash."""
    if isinstance(item, SqlIncrement):
        data = item.to_parquet_bytes()

        def copy(target: IO[bytes]) -> str:
            target.write(data)
            return hashlib.sha256(data).hexdigest()

        return stage_raw_copy(store, copy, ".parquet")
    suffix = ".parquet" if item.is_parquet else _suffix(item.path)
    return stage_raw_copy(store, lambda target: copy_input(item, target), suffix)


@dataclass
class _Tally:
    """A batch's counts and its most frequent failures, summed over its chunks."""

    rows_read: int = 0
    accepted: int = 0
    quarantined: int = 0
    ledgers: list[pd.DataFrame] = field(default_factory=list)  # per chunk: rows, first row and value per reason

    def add(self, parsed: ParsedBatch, valid: pd.DataFrame, ledger: pd.DataFrame, label: str) -> None:
        accepted, quarantined = len(valid), int(ledger["row"].nunique())
        if accepted + quarantined != parsed.rows_read or not valid.index.is_unique:
            raise AssertionError(f"{label}: row accounting broke: {parsed.rows_read} read, {accepted} accepted, "
                                 f"{quarantined} quarantined")  # fmt: skip
        self.rows_read += parsed.rows_read
        self.accepted += accepted
        self.quarantined += quarantined
        if not ledger.empty:
            groups = ledger.groupby(["column", "check"], sort=False)
            self.ledgers.append(groups.first().assign(count=groups["row"].nunique()).reset_index())

    def top_reasons(self, limit: int) -> list[str]:
        """`top_reasons` of the whole batch's ledger, from the chunks' summaries (the first chunk's example first)."""
        if not self.ledgers:
            return []
        summary = pd.concat(self.ledgers, ignore_index=True)
        groups = summary.groupby(["column", "check"], sort=False)
        counts = groups["count"].sum().sort_values(ascending=False, kind="stable").head(limit)
        first = groups.first()
        return [f"{column}: {check} ×{count} (row {first.loc[(column, check), 'row']}: "
                f"{str(first.loc[(column, check), 'value'])[:60]})" for (column, check), count in counts.items()]  # fmt: skip


def _validate_and_commit(
    item: FileInput | SqlIncrement,
    raw_path: Path,
    record: BatchRecord,
    config: PipelineConfig,
    store: DatasetStore,
    schema: type[pa.DataFrameModel],
) -> BatchResult:
    label = record.source
    writer = BatchWriter(store, record.batch_id)
    tally = _Tally()
    first: ParsedBatch | None = None  # kept for the schema diff of a rejected batch
    try:
        for parsed in _parse(item, raw_path, config, text_columns(schema)):
            first = first or parsed
            try:
                validated = validate_frame(parsed.frame, schema, what=label)
            except SchemaContractError as exc:
                writer.discard()
                rejected = replace(record, rows_read=tally.rows_read + parsed.rows_read, status="rejected",
                                   reasons=[str(exc)], finished_at=now_utc())  # fmt: skip
                return _rejected(store, rejected, str(exc), diff=_diff(parsed, schema, label))
            ledger = _chunk_ledger(parsed.rejected_rows, validated.quarantine)
            tally.add(parsed, validated.valid, ledger, label)
            failed_rows = parsed.frame.loc[parsed.frame.index.isin(ledger["row"].unique())]
            writer.add(validated.valid, ledger, failed_rows)
    except SourceError as exc:
        writer.discard()
        return _rejected(store, replace(record, status="rejected", reasons=[str(exc)], finished_at=now_utc()), str(exc))
    except BaseException:
        writer.discard()
        raise
    reasons = tally.top_reasons(config.ingest.top_reasons)
    accepted, quarantined, rows_read = tally.accepted, tally.quarantined, tally.rows_read
    record = replace(record, rows_read=rows_read, rows_accepted=accepted, rows_quarantined=quarantined,
                     reasons=reasons)  # fmt: skip
    rate = quarantined / rows_read
    if rate > config.ingest.max_quarantine_rate:
        writer.commit(curated=False)
        message = (f"{label}: rejected: {quarantined} of {rows_read} rows quarantined ({rate:.0%}), above "
                   f"ingest.max_quarantine_rate {config.ingest.max_quarantine_rate:.0%}; nothing was added to the "
                   f"curated store; top reasons: {'; '.join(reasons)}")  # fmt: skip
        rejected = replace(
            record, status="rejected", rows_accepted=0, reasons=[message, *reasons], finished_at=now_utc()
        )
        assert first is not None
        return _rejected(store, rejected, message, reasons, diff=_diff(first, schema, label))
    writer.commit()
    final = record_batch(store, replace(record, status="accepted", finished_at=now_utc()))
    message = f"{label}: batch {final.batch_id} accepted {accepted} of {rows_read} rows, quarantined {quarantined}"
    log.info(message)
    return BatchResult("accepted", label, message, final, tuple(reasons))


def _chunk_ledger(reader: pd.DataFrame, validator: pd.DataFrame) -> pd.DataFrame:
    """A chunk's ledger lines in row order (the reader's and the validator's never share a row), so that a batch's
    ledger reads the same whether it was read in one piece or in chunks."""
    ledger = pd.concat([df for df in (reader, validator) if not df.empty] or [reader], ignore_index=True)
    if reader.empty or validator.empty:
        return ledger
    return ledger.iloc[np.argsort(ledger["row"].to_numpy(dtype="int64"), kind="stable")].reset_index(drop=True)


def _remember(item: FileInput | SqlIncrement, store: DatasetStore, record: BatchRecord) -> None:
    if isinstance(item, FileInput) and item.settled_stat is not None and not record.failed_internally:
        remember_file(store, item.path, item.settled_stat, record.content_hash, record.batch_id)


def _parse(
    item: FileInput | SqlIncrement, raw_path: Path, config: PipelineConfig, text: frozenset[str]
) -> Iterator[ParsedBatch]:
    """The batch's rows, a chunk at a time, read from its raw copy."""
    if isinstance(item, SqlIncrement):
        parsed = parse_batch(raw_path.read_bytes(), FileInput(item.source, format="parquet"), config.source)
        if item.drop_columns:
            parsed = ParsedBatch(
                parsed.frame.drop(columns=list(item.drop_columns)), parsed.rejected_rows, parsed.rows_read
            )
        yield parsed
        return
    yield from iter_batch(raw_path, item, config.source, text, config.ingest.chunk_mb << 20)


def _rejected(
    store: DatasetStore, record: BatchRecord, message: str, reasons: list[str] | None = None, diff: str | None = None
) -> BatchResult:
    final = record_batch(store, record)
    log.error(message)
    return BatchResult("rejected", record.source, message, final, tuple(reasons or record.reasons), diff)


def _diff(parsed: ParsedBatch, schema: type[pa.DataFrameModel], label: str) -> str:
    return diff_frame(parsed.frame, schema, parsed.rejected_rows).to_markdown(f"Schema diff: {label}")


def _suffix(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    return "." + name.rsplit(".", 1)[-1].lower() if "." in name else ""


@dataclass(frozen=True)
class IngestPlan:
    """The inputs one ingest run will admit, and notes on what it leaves for later."""

    inputs: list[FileInput | SqlIncrement]
    notes: list[str]


def plan_inputs(
    config: PipelineConfig, store: DatasetStore, schema: type[pa.DataFrameModel], paths: list[str] | None = None
) -> IngestPlan:
    """What to ingest: the given paths, the source's files, the settled files of its landing folder, or the new
    rows of its SQL table."""
    source = config.source
    if paths or source.kind in ("files", "wheel"):
        return IngestPlan(list(expand_files(source, paths)), [])
    if source.kind == "landing":
        scan = scan_landing(source)
        notes = [f"{path}: still being written; left for the next run" for path in scan.still_changing]
        seen = seen_files(store)
        new = [i for i in scan.ready if i.settled_stat is None or (i.path, *i.settled_stat) not in seen]
        if len(new) < len(scan.ready):
            notes.append(f"{len(scan.ready) - len(new)} file(s) already ingested or rejected, and unchanged since")
        return IngestPlan(new, notes)
    assert source.sql is not None
    after = last_watermark(store, sql_source_label(source.sql))
    increment = read_sql_increment(source.sql, after, keep_watermark=source.sql.watermark in schema.to_schema().columns)
    if increment.frame.empty:
        return IngestPlan([], [f"{increment.source}: no rows after watermark {after}"])
    return IngestPlan([increment], [])


def replay_quarantine(
    config: PipelineConfig, store: DatasetStore, schema: type[pa.DataFrameModel]
) -> list[BatchResult]:
    """Validate the quarantined rows of every accepted batch again (after a schema change) and admit the rows that
    now pass as a replay batch of the same source; rows that still fail stay quarantined in the replay's ledger.

    Accounting stays exact per batch: a replay reads exactly the rows its batch quarantined (rows the reader
    refused, such as lines with the wrong number of fields, stay with the original batch: they have no values).
    """
    batches = list_batches(store)
    replayed = {b.replay_of for b in batches if b.replay_of and b.status in ("pending", "accepted")}
    schema_hash = schema_fingerprint(schema)
    results = []
    for batch in batches:
        if batch.status != "accepted" or batch.batch_id in replayed or batch.rows_quarantined == 0:
            continue
        rows = read_quarantined_rows(store, batch.batch_id)
        if rows.empty:
            continue
        try:
            validated = validate_frame(rows, schema, what=f"{batch.source} (replay of {batch.batch_id})")
        except SchemaContractError as exc:
            results.append(BatchResult("skipped", batch.source, str(exc)))
            continue
        if validated.valid.empty:
            results.append(BatchResult("skipped", batch.source, f"{batch.source}: none of the {len(rows)} quarantined "
                                       f"rows of batch {batch.batch_id} passes the schema now"))  # fmt: skip
            continue
        content_hash = hashlib.sha256(f"{batch.batch_id}:{schema_hash}".encode()).hexdigest()
        record = BatchRecord(
            batch_id=new_batch_id(content_hash), source=batch.source, source_kind="replay", content_hash=content_hash,
            schema_hash=schema_hash, status="pending", started_at=now_utc(), part=batch.part, replay_of=batch.batch_id,
            raw_path=batch.raw_path,
        )  # fmt: skip
        if claim_batch(store, record) is not None:
            continue  # another replay of this batch under this schema is running or done
        accepted, quarantined = len(validated.valid), validated.rows_quarantined
        if accepted + quarantined != len(rows):
            raise AssertionError(f"{batch.source}: replay accounting broke: {len(rows)} replayed, {accepted} accepted, "
                                 f"{quarantined} quarantined")  # fmt: skip
        write_curated(store, record.batch_id, validated.valid)
        write_ledger(
            store, record.batch_id, validated.quarantine, rows.loc[rows.index.isin(validated.quarantine["row"])]
        )
        reasons = top_reasons(validated.quarantine, config.ingest.top_reasons)
        done = replace(record, status="accepted", rows_read=len(rows), rows_accepted=accepted,
                       rows_quarantined=quarantined, reasons=reasons, finished_at=now_utc())  # fmt: skip
        final = record_batch(store, done)
        message = (f"{batch.source}: replay {final.batch_id} of batch {batch.batch_id} admitted {accepted} of "
                   f"{len(rows)} quarantined rows; {quarantined} still fail")  # fmt: skip
        log.info(message)
        results.append(BatchResult("accepted", batch.source, message, final, tuple(reasons)))
    return results
