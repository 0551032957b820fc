"""Admit one batch: register it, keep the raw copy, validate, and either commit its accepted rows and quarantine
ledger or reject it as a whole. Every input row is accounted for."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, replace
from typing import Literal

import pandas as pd
import pandera.pandas as pa

from schemas import schema_fingerprint
from schemas.config import PipelineConfig
from tasks.ingest.landing import scan_landing
from tasks.ingest.read import (
    FileChangedError,
    FileInput,
    ParsedBatch,
    SourceError,
    expand_files,
    parse_batch,
    read_input_bytes,
)
from tasks.ingest.schema_review import diff_frame
from tasks.ingest.sql import SqlIncrement, read_sql_increment, sql_source_label
from tasks.ingest.store import (
    BatchRecord,
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
    write_curated,
    write_ledger,
    write_raw_copy,
)
from tasks.ingest.validate import SchemaContractError, text_columns, validate_frame

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
    """Ingest one file or SQL increment as one batch and return its outcome; never raises for bad data."""
    schema_hash = schema_fingerprint(schema)
    rules_hash = admission_rules(item, config)
    started = now_utc()
    if isinstance(item, SqlIncrement):
        label, kind, part = item.source, "sql", ""
    else:
        label, kind, part = item.label, "files", item.part
    try:
        data = item.to_parquet_bytes() if isinstance(item, SqlIncrement) else read_input_bytes(item)
    except FileChangedError as exc:
        return BatchResult("skipped", label, str(exc))
    except SourceError as exc:
        record = BatchRecord(new_batch_id(""), label, kind, "", schema_hash, "rejected", started, part,
                             reasons=[str(exc)], finished_at=now_utc(), rules_hash=rules_hash)  # fmt: skip
        return _rejected(store, record, str(exc))
    content_hash = hashlib.sha256(data).hexdigest()
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
        result = _validate_and_commit(item, data, record, config, store, schema)
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


def _validate_and_commit(
    item: FileInput | SqlIncrement,
    data: bytes,
    record: BatchRecord,
    config: PipelineConfig,
    store: DatasetStore,
    schema: type[pa.DataFrameModel],
) -> BatchResult:
    label = record.source
    raw_suffix = ".parquet" if isinstance(item, SqlIncrement) or item.is_parquet else _suffix(item.path)
    record = replace(record, raw_path=str(write_raw_copy(store, data, record.content_hash, raw_suffix)))
    try:
        parsed = _parse(item, data, config, text_columns(schema))
    except SourceError as exc:
        return _rejected(store, replace(record, status="rejected", reasons=[str(exc)], finished_at=now_utc()), str(exc))
    record = replace(record, rows_read=parsed.rows_read)
    try:
        validated = validate_frame(parsed.frame, schema, what=label)
    except SchemaContractError as exc:
        rejected = replace(record, status="rejected", reasons=[str(exc)], finished_at=now_utc())
        return _rejected(store, rejected, str(exc), diff=_diff(parsed, schema, label))
    ledger = pd.concat([df for df in (parsed.rejected_rows, validated.quarantine) if not df.empty] or
                       [parsed.rejected_rows], ignore_index=True)  # fmt: skip
    accepted, quarantined = len(validated.valid), int(ledger["row"].nunique())
    if accepted + quarantined != parsed.rows_read or not validated.valid.index.is_unique:
        raise AssertionError(f"{label}: row accounting broke: {parsed.rows_read} read, {accepted} accepted, "
                             f"{quarantined} quarantined")  # fmt: skip
    reasons = top_reasons(ledger, config.ingest.top_reasons)
    record = replace(record, rows_accepted=accepted, rows_quarantined=quarantined, reasons=reasons)
    rate = quarantined / parsed.rows_read
    failed_rows = parsed.frame.loc[parsed.frame.index.isin(ledger["row"].unique())]
    if rate > config.ingest.max_quarantine_rate:
        write_ledger(store, record.batch_id, ledger, failed_rows)
        message = (f"{label}: rejected: {quarantined} of {parsed.rows_read} rows quarantined ({rate:.0%}), above "
                   f"ingest.max_quarantine_rate {config.ingest.max_quarantine_rate:.0%}; nothing was added to the "
                   f"curated store; top reasons: {'; '.join(reasons)}")  # fmt: skip
        rejected = replace(
            record, status="rejected", rows_accepted=0, reasons=[message, *reasons], finished_at=now_utc()
        )
        return _rejected(store, rejected, message, reasons, diff=_diff(parsed, schema, label))
    write_curated(store, record.batch_id, validated.valid)
    write_ledger(store, record.batch_id, ledger, failed_rows)
    final = record_batch(store, replace(record, status="accepted", finished_at=now_utc()))
    message = (
        f"{label}: batch {final.batch_id} accepted {accepted} of {parsed.rows_read} rows, quarantined {quarantined}"
    )
    log.info(message)
    return BatchResult("accepted", label, message, final, tuple(reasons))


def _remember(item: FileInput | SqlIncrement, store: DatasetStore, record: BatchRecord) -> None:
    if isinstance(item, FileInput) and item.settled_stat is not None and not record.failed_internally:
        remember_file(store, item.path, item.settled_stat, record.content_hash, record.batch_id)


def _parse(item: FileInput | SqlIncrement, data: bytes, config: PipelineConfig, text: frozenset[str]) -> ParsedBatch:
    if isinstance(item, SqlIncrement):
        parsed = parse_batch(data, FileInput(item.source, format="parquet"), config.source)
        if item.drop_columns:
            parsed = ParsedBatch(
                parsed.frame.drop(columns=list(item.drop_columns)), parsed.rejected_rows, parsed.rows_read
            )
        return parsed
    return parse_batch(data, item, config.source, text)


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
