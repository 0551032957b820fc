"""The training flow: ingest → validate → split → fit preprocessing → tune → final fit → evaluate → package."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from pydantic import BaseModel, Field

from mlcycle.flows.ingest import ingest_flow
from mlcycle.flows.models import flow_run_info, gate_task, record_decision_task
from mlcycle.schemas import PipelineConfig, resolve_schema, schema_fingerprint
from mlcycle.tasks import registry, tracking
from mlcycle.tasks.ingest.read import RawData
from mlcycle.tasks.ingest.store import (
    DatasetStore,
    Snapshot,
    list_batches,
    load_snapshot,
    read_ledger,
    read_new_batches,
    snapshot_hash,
    take_snapshot,
)
from mlcycle.tasks.ingest.validate import Validated, reasons_by_row, validate_frame
from mlcycle.tasks.paths import mlcycle_home
from mlcycle.tasks.preprocess import PreprocessorSpec, apply_preprocessor, fit_preprocessor
from mlcycle.tasks.registry.bundle import ModelBundle, collect_lineage, load_bundle, predict_raw, save_bundle
from mlcycle.tasks.registry.gate import GateRecord
from mlcycle.tasks.train.boost import StreamedData, TrainingData, refresh_booster, xgb_params
from mlcycle.tasks.train.dataset import (
    SnapshotScan,
    SplitSnapshot,
    data_form,
    duplicated_in_train,
    frames_data,
    ray_data,
    scan_snapshot,
    split_snapshot,
    train_labels,
    uses_ray_data,
)
from mlcycle.tasks.train.evaluate import evaluate_model, reference_predictions, reference_training_rows, score
from mlcycle.tasks.train.final import fit_final_model
from mlcycle.tasks.train.prepare import (
    LeakageReport,
    Splits,
    check_weight_column,
    encode_target,
    feature_columns,
    find_leaks,
    sample_weights,
    split_frame,
    target_classes,
)
from mlcycle.tasks.train.report import (
    ReportFiles,
    comparison_rows,
    markdown_report,
    markdown_table,
    tuning_markdown,
    write_report,
    write_tuning_report,
)
from mlcycle.tasks.train.steps import (
    Reused,
    StepKeys,
    StepStore,
    gate_key,
    load_search,
    save_search,
    stored_model,
)
from mlcycle.tasks.train.tune import RunDeadline, TuneResult, after_search_s, experiment_name, start_ray, tune_xgboost

# DataFrames and boosters are poor cache keys: no task here caches on its inputs.
_pure = {"cache_policy": NO_CACHE}


class TrainResult(BaseModel):
    """What a training run produced: the model's tag and its test metrics next to the baseline's."""

    tag: str
    task: str
    primary_metric: str
    test: dict[str, float]
    baseline: dict[str, float]
    references: dict[str, dict[str, float]]
    rows: dict[str, int]
    likely_leaks: list[list[str]]
    mostly_unseen: list[str] = Field(
        default_factory=list,
        description="Categorical features whose validation or test values are mostly values training never saw.",
    )
    tuning_seconds: float
    report: str
    quarantined: int = Field(
        default=0, description="Rows of the snapshot's files quarantined at ingest (`mlcycle quarantine show`)."
    )
    quarantined_no_target: int = Field(
        default=0, description="Of those, rows without a target (`not_nullable` on the target column)."
    )
    decision: str = Field(default="", description="The gate's verdict on this model: promote or reject.")
    champion: str | None = Field(default=None, description="The champion of the name after the gate.")
    gate_reasons: list[str] = Field(default_factory=list, description="Why: each failed rule, or what passed.")
    tracking: str = Field(default=tracking.OFF, description="What the mirror to MLflow did, or why it waits.")
    reused: dict[str, str] = Field(
        default_factory=dict,
        description="Steps not computed again (`search`, `model`), each with the flow run that computed it.",
    )


@dataclass(frozen=True)
class Evaluation:
    """The test-set report, and the predictions behind it (for the plots)."""

    metrics: dict[str, Any]
    y_test: np.ndarray
    predictions: np.ndarray
    references: dict[str, np.ndarray]


@task(name="take_snapshot", retries=2, **_pure)
def snapshot_task(config: PipelineConfig) -> Snapshot:
    """The rows this run trains on: `source.snapshot`, or every accepted batch (its hash is the data hash in the
    model's lineage and in every step's key)."""
    store = DatasetStore.for_dataset(config.name)
    return load_snapshot(store, config.source.snapshot) if config.source.snapshot else take_snapshot(store)


@task(name="scan_snapshot", retries=2, retry_delay_seconds=5, **_pure)
def scan_task(config: PipelineConfig, snapshot: Snapshot) -> SplitSnapshot:
    """One pass over the curated rows of the snapshot, rows no longer passing the schema set aside, then every
    row's split: see tasks.train.dataset. (One task, so that the rows the driver holds are held once: as the
    splits'.)"""
    store = DatasetStore.for_dataset(config.name)
    return split_snapshot(scan_snapshot(store, snapshot, config, resolve_schema(config.schema_ref)), config)


@task(name="write_quarantine", retries=2, **_pure)
def write_quarantine_task(scan: SnapshotScan, config: PipelineConfig) -> Path | None:
    """Keep every rejected row with where it came from and why, so nothing is dropped silently."""
    if scan.validated.quarantine.empty:
        return None
    reasons = reasons_by_row(scan.validated.quarantine).set_index("row")
    ledger = scan.quarantined.join(reasons)
    target = mlcycle_home() / "quarantine" / config.name / f"{flow_run.id or 'local'}.parquet"
    target.parent.mkdir(parents=True, exist_ok=True)
    ledger.reset_index(names="input_row").to_parquet(target)
    return target


@dataclass(frozen=True)
class Quarantined:
    """Rows of the snapshot's batches that ingest quarantined, and how many of them for a missing target."""

    rows: int
    no_target: int


@task(name="count_quarantined", retries=2, **_pure)
def quarantined_task(snapshot: Snapshot, config: PipelineConfig) -> Quarantined:
    """Read the quarantine ledger of the snapshot's batches: the rows ingest set aside, not only the rows the
    scan set aside now (`validated`, rows that no longer pass a changed schema)."""
    ledger = read_ledger(DatasetStore.for_dataset(config.name), sorted(snapshot.batch_ids))
    no_target = ledger[(ledger["column"] == config.target) & (ledger["check"] == "not_nullable")]
    return Quarantined(rows=len(ledger[["batch_id", "row"]].drop_duplicates()),
                       no_target=len(no_target[["batch_id", "row"]].drop_duplicates()))  # fmt: skip


@task(name="check_leakage", **_pure)
def leakage_task(split: SplitSnapshot, config: PipelineConfig) -> LeakageReport:
    features = feature_columns(list(split.splits.train.columns), config)
    return find_leaks(split.splits, features, config, duplicated=duplicated_in_train(split.scan, split.codes))


@task(name="prepare_training_data", **_pure)
def prepare_scan_task(split: SplitSnapshot, preprocessor: PreprocessorSpec, config: PipelineConfig,
                      classes: list[str]) -> TrainingData | StreamedData:  # fmt: skip
    """The model-ready rows: frames built in the driver, or Ray Data read from the curated store on Ray's workers
    when the snapshot is larger than the driver holds or the search runs on a cluster."""
    if uses_ray_data(split.scan, config):
        return ray_data(split.scan, split.codes, preprocessor, config, classes)
    return frames_data(split.splits, preprocessor, config, classes)


@task(name="validate_rows", **_pure)
def validate_task(raw: RawData, config: PipelineConfig) -> Validated:
    return validate_frame(raw.frame, resolve_schema(config.schema_ref), what=config.name)


@task(name="split_new_rows", **_pure)
def split_frame_task(validated: Validated, raw: RawData, config: PipelineConfig) -> Splits:
    return split_frame(validated.valid, raw.origin["part"], config)


@task(name="fit_preprocessor", **_pure)
def fit_preprocessor_task(splits: Splits, config: PipelineConfig) -> PreprocessorSpec:
    features = feature_columns(list(splits.train.columns), config)
    return fit_preprocessor(splits.train, features, config.preprocess)


@task(name="target_classes", **_pure)
def classes_task(split: SplitSnapshot, config: PipelineConfig) -> list[str]:
    """The classes the model predicts (from the schema, else the labels of every training row, not only of the
    driver's sample), after checking that the sample weight column, if any, is a training-only column."""
    check_weight_column(config)
    return target_classes(config, train_labels(split, config))


@task(name="prepare_training_data", **_pure)
def prepare_task(splits: Splits, preprocessor: PreprocessorSpec, config: PipelineConfig,
                 classes: list[str]) -> TrainingData:  # fmt: skip
    """Model inputs, labels encoded by `classes` (a validation label outside them stops the run, by name), and the
    sample weights."""
    return frames_data(splits, preprocessor, config, classes)


@task(name="tune_xgboost", **_pure)
def tune_task(data: TrainingData | StreamedData, config: PipelineConfig, data_hash: str, test_rows: int) -> TuneResult:
    return tune_xgboost(data, config.task, config.tune, config.seed, mlcycle_home() / "ray_results",
                        experiment_name(config, data_hash), run_deadline(config, data, test_rows))  # fmt: skip


def run_deadline(config: PipelineConfig, data: TrainingData | StreamedData, test_rows: int) -> RunDeadline | None:
    """`tune.run_budget_s` counted from this process's start, as a deadline for the search."""
    if config.tune.run_budget_s is None:
        return None
    import psutil

    started_ago = time.time() - psutil.Process().create_time()
    deadline = time.monotonic() - started_ago + config.tune.run_budget_s
    settings = config.tune
    refit = None
    if settings.final_fit == "train_valid" or settings.data_parallel_workers:
        # the best trial's time again, on all the CPUs instead of its own share, on train + validation rows
        rows = (data.train_rows + data.valid_rows) / data.train_rows
        refit = rows * settings.cpus_per_trial / max(1, os.cpu_count() or 1)
    return RunDeadline(deadline, after_search_s(test_rows), refit)


@task(name="fit_final_model", **_pure)
def fit_final_task(data: TrainingData | StreamedData, tuned: TuneResult, config: PipelineConfig) -> Any:
    return fit_final_model(data, tuned.best_config, tuned.best_rounds, config, tuned.best_boosted, tuned.best_booster)


@task(name="evaluate_model", **_pure)
def evaluate_task(booster: Any, preprocessor: PreprocessorSpec, splits: Splits, data: TrainingData | StreamedData,
                  config: PipelineConfig, classes: list[str]) -> Evaluation:  # fmt: skip
    """The test rows' metrics next to the reference models'; of a snapshot larger than the driver holds, on the
    driver's seeded sample of the test rows (recorded under `test_sample`), the references fitted on its sample of
    the training rows."""
    y_test = encode_target(splits.test[config.target], config, classes)
    predictions = predict_raw(booster, preprocessor, splits.test, nthread=0)
    if not isinstance(data, TrainingData):
        data = frames_data(splits, preprocessor, config, classes)
    references = reference_predictions(config.task, data, apply_preprocessor(preprocessor, splits.test), config.seed)
    every = [splits.train, splits.valid, splits.test]
    metrics = evaluate_model(config.task, y_test, predictions, references, splits.test[config.slices],
                             splits.train[config.slices], pd.concat([p[config.slices] for p in every]),
                             reference_training_rows(data.train_rows), classes,
                             sample_weights(splits.test, config))  # fmt: skip
    if splits.sampled:
        metrics["test_sample"] = {"rows": len(splits.test), "of": splits.sizes()["test"],
                                  "how": "a seeded sample of the test rows; slices and bias on the sampled rows"}  # fmt: skip
    return Evaluation(metrics=metrics, y_test=y_test, predictions=predictions, references=references)


@task(name="save_bundle", retries=2, **_pure)
def save_bundle_task(booster: Any, preprocessor: PreprocessorSpec, config: PipelineConfig, classes: list[str],
                     metrics: dict[str, Any], lineage: dict[str, Any]) -> str:  # fmt: skip
    return save_bundle(booster, preprocessor, config, classes, metrics, lineage)


@task(name="write_report", retries=2, **_pure)
def write_report_task(tag: str, evaluation: Evaluation, booster: Any, leakage: LeakageReport, tuned: TuneResult,
                      config: PipelineConfig) -> ReportFiles:  # fmt: skip
    folder = mlcycle_home() / "reports" / config.name / tag.split(":")[-1]
    files = write_report(folder, tag, config.task, evaluation.y_test, evaluation.predictions, evaluation.references,
                         evaluation.metrics, booster, leakage)  # fmt: skip
    return write_tuning_report(files, tuned)


@task(name="publish_reports", **_pure)
def publish_task(tag: str, evaluation: Evaluation, leakage: LeakageReport, files: ReportFiles, tuned: TuneResult,
                 splits: Splits, validated: Validated, quarantined: Quarantined | None = None) -> None:  # fmt: skip
    """The run's results where an operator looks: the terminal and Prefect artifacts."""
    metrics = evaluation.metrics
    accounting = f"rows {splits.sizes()}, {quarantine_line(validated, quarantined)}"
    create_markdown_artifact(key="evaluation", markdown=f"{accounting}\n\n" + markdown_report(tag, metrics, leakage, files),
                             description=f"Evaluation of {tag}")  # fmt: skip
    create_table_artifact(
        key="tuning-leaderboard", table=tuned.trials[:10], description="Top trials by validation score"
    )
    create_markdown_artifact(key="tuning", markdown=tuning_markdown(tuned, files), description="How the search went")
    print(f"{accounting}\n{markdown_table(comparison_rows(metrics))}")
    for column, rows in metrics["slices"].items():
        print(f"slices by {column}:\n{markdown_table(rows, ['value', 'rows', 'share', *metrics['test']])}")
    for column, entry in metrics["bias"].items():
        gaps = ", ".join(f"{k} {v:.4f}" for k, v in entry.items() if k != "groups" and v is not None)
        print(f"bias by {column}: {gaps}")
    for line in leakage.lines():
        print(line)
    print(f"report: {files.html}")


def quarantine_line(validated: Validated, quarantined: Quarantined | None) -> str:
    """Where the rows that are not in the splits went: quarantined at ingest (for a missing target among them),
    and set aside by this run's scan of the curated rows."""
    line = ""
    if quarantined is not None:
        line = f"quarantined at ingest {quarantined.rows:,}"
        line += f" ({quarantined.no_target:,} without a target), " if quarantined.no_target else ", "
    return line + f"set aside by this run's schema {validated.rows_quarantined:,} of {validated.rows_in:,} curated"


@flow(name="train", log_prints=True)
def train_flow(config: PipelineConfig, cache: bool = True) -> TrainResult:
    """Ingest what is new, then train, evaluate and package a model on a snapshot of the curated store.

    Steps whose inputs did not change are reused (tasks.train.steps): the same config on the same data and code is
    the same model, under the same tag; a changed gate judges that model again; a changed slice reuses the search.
    `cache=False` (`mlcycle train --no-cache`) computes every step again."""
    steps = StepStore.for_dataset(config.name)
    schema_hash = schema_fingerprint(resolve_schema(config.schema_ref))
    prestart_ray(config, cache, steps, schema_hash)  # a no-op when `mlcycle train` began it before the flow
    if config.source.snapshot is None:
        ingest_flow(config)  # admits new batches first; fails, naming the file, if one is rejected
    snapshot = snapshot_task(config)
    keys = StepKeys.of(config, snapshot.hash, schema_hash)
    reused: dict[str, Reused] = {}
    base = reused_model_task(steps, keys) if cache else None
    if base is not None:
        reused["model"] = base[1]
        decided = prior_decision(steps, base[0].tag, config)
        if decided is not None:
            return reused_result(config, snapshot, base[0], decided, reused)
    split = scan_task(config, snapshot)
    scan, splits = split.scan, split.splits
    write_quarantine_task(scan, config)
    quarantined = quarantined_task(snapshot, config)
    if base is not None:  # a stored model whose gate runs again: its own preprocessing, classes and booster
        bundle = base[0]
        data = prepare_scan_task(split, bundle.preprocessor, config, bundle.classes)
        evaluation = evaluate_task(bundle.booster, bundle.preprocessor, splits, data, config, bundle.classes)
        print(f"{reused['model'].line()}: {bundle.tag}, judged again (the gate's rules or the champion changed)")
        gate = judge(bundle.tag, splits, evaluation, config, steps)
        return run_result(config, bundle.tag, bundle.metrics, bundle.lineage, splits, quarantined, gate,
                          mirror_run_task(config, "train", bundle.tag, None, gate.decision, gate.reasons), reused)  # fmt: skip
    classes = classes_task(split, config)
    leakage = leakage_task(split, config)
    preprocessor = fit_preprocessor_task(splits, config)
    data = prepare_scan_task(split, preprocessor, config, classes)
    stored = load_search_task(steps, keys.search) if cache else None
    if stored is not None:
        tuned, reused["search"] = stored
        print(reused["search"].line())
    else:
        start_ray(config.tune.ray_address)  # the data changed during ingest, or --no-cache
        tuned = tune_task(data, config, scan.content_hash, splits.sizes()["test"])
        store_search_task(steps, keys.search, tuned)
    booster = fit_final_task(data, tuned, config)
    evaluation = evaluate_task(booster, preprocessor, splits, data, config, classes)
    validated = scan.validated
    lineage = collect_lineage(
        scan.content_hash,
        schema_hash,
        config,
        {"flow_run_id": flow_run.id, "best_trial_id": tuned.best_trial_id, "best_config": tuned.best_config,
         "best_rounds": tuned.best_rounds, "best_boosted": tuned.best_boosted,
         "final_model": "best trial's booster" if tuned.best_booster is not None and config.tune.final_fit == "train"
         else f"refit ({config.tune.final_fit})", "rows": splits.sizes(), "rows_quarantined": validated.rows_quarantined,
         "sample_weight": config.weight,
         "likely_leaks": leakage.suspects, "duplicated_in_train": leakage.duplicated_in_train,
         "mostly_unseen": leakage.unseen,
         "training_data": data_form(data, splits),
         "steps": {"keys": asdict(keys), "reused": {step: r.flow_run_id for step, r in reused.items()}}},
    )  # fmt: skip
    metrics = evaluation.metrics
    tag = save_bundle_task(booster, preprocessor, config, classes, metrics, lineage)
    store_model_task(steps, keys.model, tag)
    files = write_report_task(tag, evaluation, booster, leakage, tuned, config)
    publish_task(tag, evaluation, leakage, files, tuned, splits, validated, quarantined)
    gate = judge(tag, splits, evaluation, config, steps)
    mirrored = mirror_run_task(config, "train", tag, files.folder, gate.decision, gate.reasons)
    primary = metrics["primary"]
    print(f"model {tag}: test {primary} {metrics['test'][primary]:.4f} (trivial {metrics['baseline'][primary]:.4f})")
    return run_result(config, tag, metrics, lineage, splits, quarantined, gate, mirrored, reused,
                      tuning_seconds=0.0 if "search" in reused else tuned.elapsed_s, report=str(files.html))  # fmt: skip


def prestart_ray(
    config: PipelineConfig, cache: bool = True, steps: StepStore | None = None, schema_hash: str | None = None
) -> None:
    """Begin Ray's start-up in the background (tasks.train.tune.start_ray) unless the search is stored for the data
    as it stands: then Ray starts only if ingest adds rows. Ray's start-up and its trial workers' imports
    (tasks.train.preload) take about 4 s here; `mlcycle train` calls this before the flow, so they overlap Prefect's
    start-up as well as ingest and preparation, and the search starts on workers that are ready. The flow passes
    the step store and schema fingerprint it already has."""
    if cache:
        steps = steps or StepStore.for_dataset(config.name)
        schema_hash = schema_hash or schema_fingerprint(resolve_schema(config.schema_ref))
        if search_stored(steps, config, schema_hash):
            return
    start_ray(config.tune.ray_address)


def search_stored(steps: StepStore, config: PipelineConfig, schema_hash: str) -> bool:
    """Whether the search is stored for the snapshot the run would take if ingest found nothing new."""
    store = DatasetStore.for_dataset(config.name)
    if config.source.snapshot:
        data_hash = config.source.snapshot
    elif accepted := list_batches(store, status="accepted"):
        data_hash = snapshot_hash(accepted)
    else:
        return False
    return steps.get("search", StepKeys.of(config, data_hash, schema_hash).search) is not None


@task(name="reuse_model", **_pure)
def reused_model_task(steps: StepStore, keys: StepKeys) -> tuple[ModelBundle, Reused] | None:
    """The model this config made from this data before, loaded (its digests checked), or None. A stored model
    that no longer loads is trained again, with a warning saying why."""
    stored = stored_model(steps, keys.model)
    if stored is None:
        return None
    try:
        return load_bundle(stored.value["tag"]), stored
    except Exception as exc:  # deleted from the model store, or its files no longer match their digests
        get_run_logger().warning("steps: %s, stored for this run's key, does not load (%s): training again",
                                 stored.value["tag"], exc)  # fmt: skip
        return None


@task(name="reuse_search", **_pure)
def load_search_task(steps: StepStore, key: str) -> tuple[TuneResult, Reused] | None:
    return load_search(steps, key)


@task(name="store_search", **_pure)
def store_search_task(steps: StepStore, key: str, tuned: TuneResult) -> None:
    save_search(steps, key, tuned, str(flow_run.id) if flow_run.id else None)


@task(name="store_model", **_pure)
def store_model_task(steps: StepStore, key: str, tag: str) -> None:
    steps.put("model", key, {"tag": tag}, str(flow_run.id) if flow_run.id else None)


@dataclass(frozen=True)
class Decision:
    """A gate decision this run did not make again, and why."""

    decision: str
    reasons: list[str]


def prior_decision(steps: StepStore, tag: str, config: PipelineConfig) -> Decision | None:
    """The decision that stands for a stored model, or None when the gate must judge it again (it was rejected,
    and its rules or the champion have changed since). A champion is not judged against itself, a model in shadow
    waits for its live evidence, and a retired model (replaced, or rolled back) is not brought back by a run that
    changed nothing: `mlcycle promote` does that."""
    name = config.name
    champion = registry.champion(name)
    if tag == champion:
        return Decision("promote", [f"{tag} is the champion since {registry.champion_since(name)}: the same model "
                                    "is not judged again (a new one: --no-cache)"])  # fmt: skip
    if tag == registry.shadow(name):
        return Decision("shadow", [f"{tag} is in shadow since {registry.shadow_since(name)}: live evidence decides"])
    if registry.version(tag).status == "retired":
        return Decision("reject", [f"{tag} was the champion and was replaced or rolled back: a run that changed "
                                   f"nothing does not bring it back (`mlcycle promote {tag}` does)"])  # fmt: skip
    stored = steps.get("gate", gate_key(tag, config, champion))
    if stored is None:
        return None
    return Decision(stored.value["decision"], [*stored.value["reasons"], stored.line()])


def judge(tag: str, splits: Splits, evaluation: Evaluation, config: PipelineConfig, steps: StepStore) -> GateRecord:
    """The gate's decision on `tag`, made real and stored under its key (the rules and the champion it faced)."""
    gate = record_decision_task(
        gate_task(tag, splits.test, evaluation.y_test, evaluation.references["trivial"], config)
    )
    steps.put("gate", gate_key(tag, config, gate.champion), {"decision": gate.decision, "reasons": gate.reasons},
              str(flow_run.id) if flow_run.id else None)  # fmt: skip
    return gate


def reused_result(config: PipelineConfig, snapshot: Snapshot, bundle: ModelBundle, decided: Decision,
                  reused: dict[str, Reused]) -> TrainResult:  # fmt: skip
    """The answer of a run whose model is stored and whose decision stands: no row was read, no model fitted."""
    quarantined = quarantined_task(snapshot, config)
    print(f"{reused['model'].line()}: {bundle.tag}, decision: {decided.decision}")
    for reason in decided.reasons:
        print(f"  {reason}")
    report = mlcycle_home() / "reports" / config.name / bundle.tag.split(":")[-1] / "report.html"
    gate = Decision(decided.decision, decided.reasons)
    return run_result(config, bundle.tag, bundle.metrics, bundle.lineage, None, quarantined, gate, tracking.OFF,
                      reused, report=str(report) if report.exists() else "")  # fmt: skip


def run_result(config: PipelineConfig, tag: str, metrics: dict[str, Any], lineage: dict[str, Any],
               splits: Splits | None, quarantined: Quarantined, gate: GateRecord | Decision, mirrored: str,
               reused: dict[str, Reused], tuning_seconds: float = 0.0, report: str = "") -> TrainResult:  # fmt: skip
    """A run's answer, and in the Prefect UI the table of its steps: computed, or reused from which run."""
    rows = [{"step": step, "reused from run": r.flow_run_id or "local", "stored at": r.at, "key": r.key}
            for step, r in reused.items()]  # fmt: skip
    if rows:
        create_table_artifact(key=f"steps-{config.name}".replace("_", "-"), table=rows,
                              description=f"Steps of this run reused from earlier runs ({tag})")  # fmt: skip
    primary = metrics["primary"]
    return TrainResult(
        tag=tag,
        task=config.task,
        primary_metric=primary,
        test=metrics["test"],
        baseline=metrics["baseline"],
        references=metrics["references"],
        rows=splits.sizes() if splits is not None else lineage.get("rows", {}),
        likely_leaks=[list(s["columns"]) for s in lineage.get("likely_leaks", [])],
        mostly_unseen=list(dict.fromkeys(str(u["column"]) for u in lineage.get("mostly_unseen", []))),
        tuning_seconds=tuning_seconds,
        report=report,
        quarantined=quarantined.rows,
        quarantined_no_target=quarantined.no_target,
        decision=gate.decision,
        champion=registry.champion(config.name),
        gate_reasons=gate.reasons,
        tracking=mirrored,
        reused={step: r.flow_run_id or "local" for step, r in reused.items()},
    )


@task(name="mirror_to_mlflow", **_pure)
def mirror_run_task(config: PipelineConfig, flow: str, tag: str, report: Path | None, decision: str,
                    reasons: list[str]) -> str:  # fmt: skip
    """Queue this run for the MLflow mirror and push the queue (`tracking.mlflow_uri`); it never fails the run."""
    try:
        record = tracking.run_record(config, flow, tag, report, flow_run_info(), decision, reasons)
        return tracking.mirror(record, config.tracking.timeout_s, config.tracking.budget_s)
    except Exception as exc:
        tracking.log.warning("tracking: %s not mirrored: %s", tag, exc)
        return f"not mirrored: {exc}"


@task(name="load_champion", retries=2, **_pure)
def load_base_task(tag: str) -> ModelBundle:
    return load_bundle(tag)


@task(name="read_new_batches", retries=2, **_pure)
def read_new_task(config: PipelineConfig, base: ModelBundle) -> tuple[RawData, str] | None:
    return read_new_batches(DatasetStore.for_dataset(config.name), base.lineage["data_hash"])


@task(name="refresh_booster", **_pure)
def refresh_task(base: ModelBundle, data: TrainingData, config: PipelineConfig) -> Any:
    params = xgb_params(config.task, base.lineage.get("best_config", {}), nthread=0, seed=config.seed,
                        num_class=data.num_class)  # fmt: skip
    return refresh_booster(base.booster, data, params, config.refresh.rounds, config.refresh.early_stopping_rounds)


@flow(name="refresh", log_prints=True)
def refresh_flow(config: PipelineConfig, base_tag: str | None = None) -> TrainResult | None:
    """The cheap retraining path: continue boosting a model (default: the dataset's champion) on the
    batches that arrived after its snapshot, with its own preprocessing and parameters. None if nothing is new."""
    if config.source.snapshot is None:
        ingest_flow(config)
    base = load_base_task(base_tag or config.name)
    found = read_new_task(config, base)
    if found is None:
        print(f"nothing new since {base.tag}'s snapshot {base.lineage['data_hash']}: no refresh")
        return None
    raw, seen_hash = found
    validated = validate_task(raw, config)
    splits = split_frame_task(validated, raw, config)
    # the parent's classes: a label it never saw stops the refresh by name (a full training can add a class)
    data = prepare_task(splits, base.preprocessor, config, base.classes)
    booster = refresh_task(base, data, config)
    evaluation = evaluate_task(booster, base.preprocessor, splits, data, config, base.classes)
    base_on_new = evaluate_predictions_task(base, splits, config)
    lineage = collect_lineage(
        seen_hash,
        schema_fingerprint(resolve_schema(config.schema_ref)),
        config,
        {"flow_run_id": flow_run.id, "mode": "refresh", "parent_tag": base.tag, "refresh_data_hash": raw.content_hash,
         "best_config": base.lineage.get("best_config", {}), "rounds_before": base.booster.num_boosted_rounds(),
         "rounds_after": booster.num_boosted_rounds(), "rows": splits.sizes(),
         "rows_quarantined": validated.rows_quarantined, "sample_weight": config.weight},
    )  # fmt: skip
    metrics = {**evaluation.metrics, "parent_on_same_test": base_on_new}
    tag = save_bundle_task(booster, base.preprocessor, config, base.classes, metrics, lineage)
    gate = record_decision_task(
        gate_task(tag, splits.test, evaluation.y_test, evaluation.references["trivial"], config)
    )
    mirrored = mirror_run_task(config, "refresh", tag, None, gate.decision, gate.reasons)
    primary = metrics["primary"]
    print(f"model {tag} refreshed from {base.tag} with {booster.num_boosted_rounds() - base.booster.num_boosted_rounds()} "
          f"rounds on {splits.sizes()} new rows: test {primary} {metrics['test'][primary]:.4f} "
          f"(parent {base_on_new[primary]:.4f} on the same rows)")  # fmt: skip
    return TrainResult(
        tag=tag, task=config.task, primary_metric=primary, test=metrics["test"], baseline=metrics["baseline"],
        references=metrics["references"], rows=splits.sizes(), likely_leaks=[], tuning_seconds=0.0, report="",
        decision=gate.decision, champion=registry.champion(config.name), gate_reasons=gate.reasons,
        tracking=mirrored,
    )  # fmt: skip


@task(name="evaluate_parent", **_pure)
def evaluate_predictions_task(base: ModelBundle, splits: Splits, config: PipelineConfig) -> dict[str, float]:
    """The parent model's metrics on the refreshed model's test rows: the comparison a refresh must win."""
    y = encode_target(splits.test[config.target], config, base.classes)
    return score(config.task, y, base.predict_raw(splits.test), sample_weights(splits.test, config))
