"""The ingest flow: find the source's new inputs, admit each as a batch, report every batch in Prefect."""

from __future__ import annotations

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event
from pydantic import BaseModel

from mlcycle.schemas import PipelineConfig, resolve_schema
from mlcycle.tasks.errors import UserError
from mlcycle.tasks.ingest.admit import BatchResult, IngestPlan, admit_batch, plan_inputs, replay_quarantine
from mlcycle.tasks.ingest.read import FileInput
from mlcycle.tasks.ingest.sql import SqlIncrement
from mlcycle.tasks.ingest.store import DatasetStore


class IngestRejected(UserError, RuntimeError):
    """At least one batch was rejected; the message names each file, its row counts and top reasons, and `summary`
    holds what happened to every input of the run."""

    def __init__(self, message: str, summary: IngestResult | None = None) -> None:
        super().__init__(message)
        self.summary = summary


class BatchSummary(BaseModel):
    """One input's outcome, as the CLI prints it and the flow returns it."""

    source: str
    outcome: str
    batch_id: str | None
    rows_read: int
    rows_accepted: int
    rows_quarantined: int
    message: str
    top_reasons: list[str]


class IngestResult(BaseModel):
    """What an ingest run did with each input, and what it left for later."""

    dataset: str
    batches: list[BatchSummary]
    notes: list[str]

    def count(self, outcome: str) -> int:
        return sum(b.outcome == outcome for b in self.batches)

    def table(self) -> str:
        """What `mlcycle ingest` prints: a row per input (a skipped one names the batch it repeats), then notes."""
        from mlcycle.tasks.tables import markdown_table

        rows = [{"source": b.source, "outcome": b.outcome, "batch": b.batch_id, "read": b.rows_read,
                 "accepted": b.rows_accepted, "quarantined": b.rows_quarantined,
                 "top reason": b.top_reasons[0] if b.top_reasons else ""} for b in self.batches]  # fmt: skip
        columns = ["source", "outcome", "batch", "read", "accepted", "quarantined", "top reason"]
        lines = [markdown_table(rows, columns) if rows else f"{self.dataset}: no new input to ingest"]
        counts = ", ".join(f"{self.count(o)} {o}" for o in ("accepted", "skipped", "rejected") if self.count(o))
        if counts:
            lines.append(f"{self.dataset}: {counts}")
        return "\n".join([*lines, *self.notes])


# Inputs carry DataFrames and configs: poor cache keys, so no task here caches on its inputs (NO_CACHE).
@task(name="plan_ingest", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def plan_task(config: PipelineConfig, paths: list[str] | None) -> IngestPlan:
    store = DatasetStore.for_dataset(config.name)
    return plan_inputs(config, store, resolve_schema(config.schema_ref), paths)


# Retrying is safe: bad data never raises (it is recorded as rejected), and a failure of the machinery (a full
# disk) releases its claim, so the retry claims the same content afresh.
@task(name="admit_batch", task_run_name="admit {item.source}", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def admit_task(item: FileInput | SqlIncrement, config: PipelineConfig) -> BatchResult:
    return admit_batch(item, config, DatasetStore.for_dataset(config.name), resolve_schema(config.schema_ref))


@task(name="publish_batch", cache_policy=NO_CACHE)
def publish_task(result: BatchResult, config: PipelineConfig) -> None:
    """A table artifact and an `mlcycle.batch.*` event for each batch that was admitted or rejected."""
    record = result.record
    if result.outcome == "skipped" or record is None:
        return
    rejected_rows = record.rows_read if result.outcome == "rejected" else 0
    create_table_artifact(
        key=f"ingest-{config.name}-{record.batch_id}".replace("_", "-").lower(),
        table=[{"batch": record.batch_id, "source": record.source, "status": record.status,
                "read": record.rows_read, "accepted": record.rows_accepted, "quarantined": record.rows_quarantined,
                "rejected": rejected_rows, "top reasons": "; ".join(result.top_reasons) or "-"}],
        description=result.message,
    )  # fmt: skip
    if result.schema_diff:
        create_markdown_artifact(
            key=f"schema-diff-{config.name}-{record.batch_id}".replace("_", "-").lower(),
            markdown=result.schema_diff,
            description=f"How {record.source} departs from the schema",
        )
    emit_event(
        event=f"mlcycle.batch.{'ingested' if result.outcome == 'accepted' else 'rejected'}",
        # The source kind lets a trigger tell live data (landing, sql) from a training run re-reading its files.
        resource={"prefect.resource.id": f"mlcycle.dataset.{config.name}", "mlcycle.source.kind": config.source.kind},
        payload={"batch_id": record.batch_id, "source": record.source, "rows_read": record.rows_read,
                 "rows_accepted": record.rows_accepted, "rows_quarantined": record.rows_quarantined},
    )  # fmt: skip


@flow(name="ingest", log_prints=True)
def ingest_flow(config: PipelineConfig, paths: list[str] | None = None) -> IngestResult:
    """Ingest the source's new inputs (or `paths`) into the curated store; fails if any batch is rejected."""
    plan = plan_task(config, paths)
    results = [admit_task(item, config) for item in plan.inputs]
    for result in results:
        publish_task(result, config)
        print(result.message)
    for note in plan.notes:
        print(note)
    summary = summarize(config.name, results, plan.notes)
    if summary.count("rejected"):
        raise IngestRejected("\n".join(b.message for b in summary.batches if b.outcome == "rejected"), summary)
    return summary


@task(name="replay_quarantine", cache_policy=NO_CACHE)
def replay_task(config: PipelineConfig) -> list[BatchResult]:
    store = DatasetStore.for_dataset(config.name)
    return replay_quarantine(config, store, resolve_schema(config.schema_ref))


@flow(name="quarantine-replay", log_prints=True)
def replay_flow(config: PipelineConfig) -> IngestResult:
    """After a schema change: validate quarantined rows again and admit those that now pass."""
    results = replay_task(config)
    for result in results:
        publish_task(result, config)
        print(result.message)
    return summarize(config.name, results, [])


def summarize(dataset: str, results: list[BatchResult], notes: list[str]) -> IngestResult:
    """The run's outcome per input; a skipped input names the earlier batch with the same content."""
    batches = []
    for result in results:
        record = result.record
        fresh = record is not None and result.outcome != "skipped"
        batches.append(BatchSummary(
            source=result.source, outcome=result.outcome, batch_id=record.batch_id if record else None,
            rows_read=record.rows_read if fresh and record else 0,
            rows_accepted=record.rows_accepted if fresh and record else 0,
            rows_quarantined=record.rows_quarantined if fresh and record else 0,
            message=result.message, top_reasons=list(result.top_reasons),
        ))  # fmt: skip
    return IngestResult(dataset=dataset, batches=batches, notes=notes)
