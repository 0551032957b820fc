"""Tune: a Ray Tune search over XGBoost with ASHA early stopping, trials filling the cores, resumable."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import ray
from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search.basic_variant import BasicVariantGenerator

from mlcycle.schemas.config import PipelineConfig, TaskType, TuneConfig
from mlcycle.tasks.processes import environment
from mlcycle.tasks.train.boost import STOPPING_METRIC, StreamedData, TrainingData, xgb_params

log = logging.getLogger("mlcycle.tune")

_LOG_SCALE = {"eta", "lambda", "alpha"}
_INTEGER = {"max_depth", "max_bin"}


@dataclass(frozen=True)
class TuneResult:
    """The winning configuration and what the search did, trial by trial."""

    best_config: dict[str, Any]
    best_rounds: int
    best_score: float
    metric: str
    best_trial_id: str
    trials: list[dict[str, Any]]
    curves: dict[str, list[dict[str, float]]]
    experiment_path: str
    elapsed_s: float
    resumed: bool
    best_booster: Any = None  # the best trial's own booster at its best round, when the trial kept one
    best_boosted: int = 0  # rounds the best trial had boosted when it stopped

    def best_over_time(self) -> list[tuple[float, float]]:
        """(seconds since the search began, best validation score so far) at every report of every trial."""
        points = sorted((p["timestamp"], p["valid_score"]) for curve in self.curves.values() for p in curve)
        if not points:
            return []
        start, best, out = points[0][0], math.inf, []
        for stamp, value in points:
            best = min(best, value)
            out.append((stamp - start, best))
        return out


def experiment_name(config: PipelineConfig, data_hash: str) -> str:
    """The same config on the same data names the same experiment, so re-running an interrupted command resumes
    it; with `tune.resume: false` every run gets a fresh name."""
    settings = config.model_copy(update={"tune": config.tune.model_copy(update={"resume": True})})
    name = f"{config.name}-{settings.fingerprint()}-{data_hash[:12]}"
    return name if config.tune.resume else f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def search_space(config: TuneConfig) -> dict[str, Any]:
    """Ray Tune distributions from the config's bounds."""
    space: dict[str, Any] = {}
    for name, (low, high) in config.space.items():
        if name in _INTEGER:
            space[name] = tune.randint(int(low), int(high) + 1)
        elif name in _LOG_SCALE:
            space[name] = tune.loguniform(low, high)
        else:
            space[name] = tune.uniform(low, high)
    return space


def ensure_ray(address: str | None) -> None:
    """Join the configured Ray cluster (config, then RAY_ADDRESS), or start a local Ray if none is running; if
    `start_ray` began that in the background, wait for it."""
    starting = _STARTING.get("ready")
    if starting is not None:
        starting.wait()
        error = _STARTING.pop("error", None)
        _STARTING.clear()
        if error is not None:
            raise error
    _init_ray(address)


def _init_ray(address: str | None) -> None:
    if ray.is_initialized():
        return
    began = time.monotonic()
    address = address or os.environ.get("RAY_ADDRESS")
    _OWN_RAY["local"] = not address
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        # "local": always a fresh Ray of our own, never a stale cluster some other process left behind. Its workers
        # import a trial's modules as they start (see tasks.train.preload): Ray's raylet setting `preload_python_modules`.
        # Its idle workers are never stopped: Ray's idle-worker killer stopped the warm workers it starts with the
        # node a few seconds after they were ready, before a search could use them (seen in the raylet's log), and
        # started fresh ones for the trials. This Ray lives as long as the flow's process.
        _let_trials_start_warm()
        _quiet_ray_notices()
        with _without_idle_monitors():
            ray.init(address="local", include_dashboard=False, log_to_driver=False, configure_logging=False,
                     _node_ip_address="127.0.0.1",
                     _system_config={"preload_python_modules": ["mlcycle.tasks.train.preload"], "kill_idle_workers_interval_ms": 0})  # fmt: skip
    log.info("Ray ready in %.1f s (%s)", time.monotonic() - began, address or "local")


@contextlib.contextmanager
def _without_idle_monitors() -> Iterator[None]:
    """Start a local Ray without the two processes it has no work for here: the autoscaler's monitor (a local Ray
    has nothing to scale) and the log monitor (which only forwards workers' output to the driver, and mlcycle's Ray
    runs with `log_to_driver=False`; workers' logs stay in Ray's session directory). Both import Ray and poll for
    as long as Ray lives, on the two cores the warm workers are importing a trial's modules on: without them a
    local Ray's own processes use about half the CPU time before the workers are ready (1.5–2.0 s → 0.7–1.0 s,
    measured in docs/performance.md). `ray.init` has no switch for either, so for the call its `RayParams` (Ray's
    `ray start --no-monitor --include-log-monitor=false`) defaults them off."""
    import ray._private.parameter as parameter

    full = parameter.RayParams

    class Lean(full):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("no_monitor", True)
            kwargs.setdefault("include_log_monitor", False)
            super().__init__(*args, **kwargs)

    parameter.RayParams = Lean
    try:
        yield
    finally:
        parameter.RayParams = full


def _let_trials_start_warm() -> None:
    """Ray hands an actor only a worker started with the same runtime environment, and the workers a local Ray
    starts with its node (one per CPU, warm: see tasks.train.preload) have none. Ray Tune gives every trial actor the
    environment variable `PL_DISABLE_FORK=1` (for PyTorch Lightning, `ray.tune.execution.class_cache`) as a runtime
    environment, so no trial could start on them. Before a local Ray starts, the variable goes into this process's
    environment instead, which Ray's processes inherit, and out of Tune's list: every worker still has it, and
    trial actors start on the warm workers. (Tune still adds the credentials it forwards, if any are set; trials
    then start on fresh workers, as before.)"""
    from ray.tune.execution.class_cache import DEFAULT_ENV_VARS

    for name, value in list(DEFAULT_ENV_VARS.items()):
        os.environ.setdefault(name, value)
        del DEFAULT_ENV_VARS[name]


_STARTING: dict[str, Any] = {}
_OWN_RAY: dict[str, bool] = {}  # "local": this process started the Ray it uses, on this machine alone


def start_ray(address: str | None) -> None:
    """Begin `ensure_ray` on a background thread and return at once. A local Ray takes 5–7 s to start on this
    machine; the training flow calls this first, so the start-up overlaps ingest and preparation, and the tuning
    task's `ensure_ray` only waits for what is left.

    The thread lives as long as Ray does: Ray's own processes get the parent-death signal when the *thread* that
    started them ends (Linux's PR_SET_PDEATHSIG is per thread), so a thread that returned would take Ray down."""
    if ray.is_initialized() or "ready" in _STARTING:
        return
    ready = threading.Event()
    _STARTING["ready"] = ready
    log.info("Ray starting in the background (%s)", address or os.environ.get("RAY_ADDRESS") or "local")

    def run() -> None:
        try:
            _init_ray(address)
        except BaseException as exc:  # handed to the ensure_ray that waits
            _STARTING["error"] = exc
        finally:
            ready.set()
        while ray.is_initialized():  # until ray.shutdown(), or the process ends (daemon thread)
            time.sleep(1.0)

    threading.Thread(target=run, name="mlcycle-ray-start", daemon=True).start()


def _data_parallel_trial(
    sampled: dict[str, Any],
    shards: Any,
    task: TaskType,
    settings: TuneConfig,
    seed: int,
    storage: str,
    num_class: int = 0,
) -> None:
    """One trial trained data-parallel: the trial's function runs a Ray Train trainer (Train v2's way of nesting
    in Tune), whose workers' reports reach Tune through Ray's TuneReportCallback."""
    from mlcycle.tasks.train.distributed import fit_data_parallel

    params = xgb_params(task, sampled, nthread=settings.cpus_per_trial, seed=seed, num_class=num_class)
    trial_id = tune.get_context().get_trial_id()
    fit = fit_data_parallel(shards, params, settings.max_rounds, settings.early_stopping_rounds,
                            settings.data_parallel_workers, Path(storage), f"train-{trial_id}",
                            report_every=settings.report_every, in_tune=True)  # fmt: skip
    tune.report({"valid_score": fit.best_score, "rounds": fit.best_rounds, "boosted": fit.boosted, "done": True,
                 # as text: Tune's result loggers take scalars, not lists
                 "node_id": fit.workers[0]["node_id"], "worker_nodes": ",".join(w["node_id"] for w in fit.workers),
                 "worker_rows": ",".join(str(w["rows"]) for w in fit.workers)})  # fmt: skip


class _LendFreedCpus(tune.Callback):
    """Once no trial is waiting to start, the CPUs that finished trials freed go to the trials still running: the
    last trials of a search otherwise boost on one thread each while the other cores idle. The number of threads
    each running trial may use goes to a file that the trials read (`tasks.train.trial.CpuShare`), so this is only for a
    Ray of mlcycle's own on one machine, where no other work can be waiting for those CPUs."""

    def __init__(self, path: Path, cpus: int, per_trial: int, total: int) -> None:
        self.path, self.cpus, self.per_trial, self.total = path, cpus, per_trial, total
        self.threads = per_trial

    def _share(self, trials: list[Any], starting: Any = None, ending: Any = None) -> None:
        # Tune calls on_trial_start before it marks the trial running, and on_trial_complete before it marks it done
        if len(trials) < self.total or any(t.status == "PENDING" and t is not starting for t in trials):
            return  # more trials are to start: they need the CPUs
        running = [t for t in trials if (t.status == "RUNNING" or t is starting) and t is not ending]
        if not running:
            return
        threads = self.per_trial + (self.cpus - len(running) * self.per_trial) // len(running)
        if threads > self.threads:
            self.threads = threads
            staged = self.path.with_name(self.path.name + ".tmp")
            staged.parent.mkdir(parents=True, exist_ok=True)
            staged.write_text(str(threads))
            staged.replace(self.path)
            log.info("tuning: no trial is waiting; the %d running may use %d threads each", len(running), threads)

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._share(trials, starting=trial)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._share(trials, ending=trial)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._share(trials, ending=trial)


# Ray Tune's own output, off for the search (read when the search starts, so set only while it runs):
# - no TensorBoard logger: Tune adds one to every search unless told not to, and then prints "To visualize your
#   results with TensorBoard, run: ..." (a subclass that writes nothing still counts as one). mlcycle's own records
#   are `trials.json`, the leaderboard and the plot of the best score over time; the JSON and CSV loggers are given
#   explicitly (resuming and the result grid read them). TensorBoard files also cost the driver 1.6 ms a report
#   (0.43 s of 1.26 s over a 264-report search, profiled): time the reporting trial waits for.
# - Tune's older output engine at verbosity 0, which prints nothing: the newer one prints its configuration table
#   and "View detailed results here" whatever the verbosity. mlcycle's `_ProgressLog` reports the search.
_QUIET_TUNE = {"TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1", "RAY_AIR_NEW_OUTPUT": "0"}


def _quiet_tune() -> contextlib.AbstractContextManager[None]:
    return environment(_QUIET_TUNE)


class _DropNotices(logging.Filter):
    """Drops the log records of a Ray logger that begin with one of `prefixes`."""

    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


# Notices a local Ray of mlcycle's own prints as it starts, which a user reads as instructions: its SIGTERM handler
# is not set because `start_ray` starts it on a thread on purpose (mlcycle's supervising parent handles SIGTERM,
# flows/exits.py); token authentication is on, as it should be for a Ray that listens on 127.0.0.1 only, and the
# notice says how to turn it off.
_RAY_NOTICES = {
    "ray._private.worker": ("SIGTERM handler is not set",),
    "ray._private.authentication.authentication_token_setup": ("Token authentication is enabled",),
}


def _quiet_ray_notices() -> None:
    for name, prefixes in _RAY_NOTICES.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropNotices) for f in logger.filters):
            logger.addFilter(_DropNotices(prefixes))


class _ProgressLog(tune.Callback):
    """One line every `every` finished trials (and at the last): trials done of total, the best score so far and
    the elapsed time, in the terminal and the Prefect logs; and while trials run long, a line at least every
    `quiet_s` seconds with each running trial's rounds and score, so a search of a few slow trials shows it is
    moving. Ray's own progress table is turned off: it redraws every few seconds and floods the Prefect logs."""

    def __init__(self, total: int, metric: str, every: int, budget_s: float | None = None, quiet_s: float = 20) -> None:
        self.total, self.metric, self.every = total, metric, max(1, every)
        self.budget_s, self.quiet_s = budget_s, quiet_s
        self.started = self.last_line = time.monotonic()
        self.best = math.inf
        self.running: dict[str, tuple[int, float]] = {}  # trial id -> (rounds boosted, its best score)

    def _elapsed(self) -> str:
        elapsed = time.monotonic() - self.started
        return f"{elapsed:.0f} s elapsed" + (f" of {self.budget_s:.0f} s" if self.budget_s else "")

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        self.best = min(self.best, result["valid_score"])
        self.running[trial.trial_id] = (int(result.get("boosted", 0)), float(result["valid_score"]))
        now = time.monotonic()
        if now - self.last_line >= self.quiet_s:
            self.last_line = now
            done = sum(1 for t in trials if t.is_finished())
            inside = "; ".join(f"{trial_id}: {rounds} rounds, {score:.5f}"
                               for trial_id, (rounds, score) in sorted(self.running.items()))  # fmt: skip
            log.info("tuning: %d/%d trials done, best valid %s so far %.5f, %s; running: %s",
                     done, self.total, self.metric, self.best, self._elapsed(), inside)  # fmt: skip

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        # Tune calls this before it marks `trial` finished
        self.running.pop(trial.trial_id, None)
        done = sum(1 for t in trials if t.is_finished() or t is trial)
        if done % self.every == 0 or done >= self.total:
            self.last_line = time.monotonic()
            log.info("tuning: %d/%d trials done, best valid %s so far %.5f, %s",
                     done, self.total, self.metric, self.best, self._elapsed())  # fmt: skip

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.running.pop(trial.trial_id, None)


def _searcher(settings: TuneConfig, seed: int, concurrent: int) -> Any:
    """The search algorithm, limited to `concurrent` trials at a time (Ray ignores `max_concurrent_trials` for the
    random-search generator, so the limit is passed to it directly)."""
    if settings.searcher == "optuna":
        try:
            from ray.tune.search.optuna import OptunaSearch
        except ImportError as exc:  # pragma: no cover - optuna is in the lock, but it is an optional extra
            raise RuntimeError(
                "tune.searcher: optuna needs the optuna package (pip install 'mlcycle[optuna]')"
            ) from exc
        import optuna
        from ray.tune.search import ConcurrencyLimiter

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # not "A new study created in memory" in every run
        return ConcurrencyLimiter(OptunaSearch(seed=seed), max_concurrent=concurrent)
    return BasicVariantGenerator(random_state=seed, max_concurrent=concurrent)


def after_search_s(test_rows: int) -> float:
    """What evaluation, packaging, the report and the gate take after the search, estimated: measured on this
    project's 2-core machine at about 30 s (the gate's smoke test starts the real service) plus 4 s per 100,000
    test rows (predictions, references, slices)."""
    return 30.0 + 4e-5 * test_rows


class RunDeadline(tune.Stopper):
    """Ends the search when what is left of the run's budget is what the steps after it need: `after_s`, plus,
    when the final model is fitted again, the best trial's own time on the CPUs it will have."""

    def __init__(self, deadline: float, after_s: float, refit_share: float | None) -> None:
        self.deadline, self.after_s, self.refit_share = deadline, after_s, refit_share
        self.best: tuple[float, float] = (math.inf, 0.0)  # (score, seconds) of the best trial so far

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        score, seconds = float(result.get("valid_score", math.inf)), float(result.get("time_total_s", 0.0))
        if score < self.best[0]:
            self.best = (score, seconds)
        return False

    def needed_s(self) -> float:
        refit = self.best[1] * self.refit_share if self.refit_share is not None else 0.0
        return self.after_s + refit

    def stop_all(self) -> bool:
        stop = time.monotonic() + self.needed_s() >= self.deadline
        if stop:
            log.info("tuning: stopping to keep %.0f s of the run's budget for the final fit, evaluation and the gate",
                     self.needed_s())  # fmt: skip
        return stop


def tune_xgboost(
    data: TrainingData | StreamedData,
    task: TaskType,
    settings: TuneConfig,
    seed: int,
    storage: Path,
    experiment: str,
    deadline: RunDeadline | None = None,
) -> TuneResult:
    """Search XGBoost hyperparameters with Ray Tune and ASHA.

    The data goes to Ray's object store once and every trial reads it from there. Trials run
    `cluster CPUs // cpus_per_trial` at a time with `nthread = cpus_per_trial`, so trials × threads never exceeds
    the cores; on a Ray that mlcycle starts they start on workers that have already imported what a trial needs
    (see tasks.train.preload). An experiment of the same name that was interrupted is resumed: its finished trials are
    kept and only the rest run. Data-parallel trials (`tune.data_parallel_workers`) each train on shards across
    Ray Train workers. Streamed rows on one machine run one trial at a time (`one_trial_for_streamed_rows`).
    """
    ensure_ray(settings.ray_address)
    started = time.monotonic()
    cpus = int(ray.cluster_resources().get("CPU", 1))
    configured = settings.cpus_per_trial
    settings = one_trial_for_streamed_rows(data, settings, cpus, nodes=len(ray.nodes()))
    if deadline is not None and deadline.refit_share is not None:
        deadline.refit_share *= settings.cpus_per_trial / configured  # a refit on all CPUs: as fast as such a trial
    path, claim = _claim_experiment(storage.resolve() / experiment)
    callbacks: list[Any] = [_ProgressLog(settings.num_samples, STOPPING_METRIC[task], settings.log_every,
                                         settings.time_budget_s), CSVLoggerCallback(), JsonLoggerCallback()]  # fmt: skip
    share: Path | None = None
    keeper: Any = None
    if settings.data_parallel_workers:
        from mlcycle.tasks.train.distributed import shard_data

        # The trial's own process only drives the trainer; its Ray Train workers hold the CPUs. (Tune refuses a
        # trial with no resources at all, so it asks for one byte of memory: nothing a worker needs.)
        trainable = tune.with_resources(
            tune.with_parameters(_data_parallel_trial, shards=shard_data(data), task=task, settings=settings,
                                 seed=seed, storage=str(path / "train"), num_class=data.num_class),
            {"cpu": 0, "memory": 1},
        )  # fmt: skip
    else:
        # Imported here, not at the top: a data-parallel trial's worker imports this module, and tasks.train.trial trims
        # what a Ray worker that imports it may load.
        from mlcycle.tasks.train.keeper import LIGHT_WORKER, BoosterKeeper
        from mlcycle.tasks.train.trial import TrialSettings, run_trial

        # On a Ray of mlcycle's own, in a light worker of its own (tasks.train.keeper), so that every warm worker is
        # a trial's: in one of them, it left the second trial waiting for a cold one. Not on a cluster: its nodes
        # import nothing ahead (unless set up to), and a worker started for a runtime environment held up a one-CPU
        # node's first trial worker until Tune had moved that trial elsewhere (test_trials_run_on_both_nodes_...).
        own = _OWN_RAY.get("local", False)
        keeper_name = f"mlcycle-keeper-{path.name}-{os.getpid()}"
        light = {"runtime_env": {"env_vars": {LIGHT_WORKER: "1"}}} if own else {}
        keeper = ray.remote(num_cpus=0)(BoosterKeeper).options(name=keeper_name, **light).remote()
        lend = own and not settings.gpus_per_trial and len(ray.nodes()) == 1
        if lend:
            share = path / ".cpu-share"  # the experiment's own: the same again when the search is resumed
            callbacks.append(_LendFreedCpus(share, cpus, settings.cpus_per_trial, settings.num_samples))
        plain = TrialSettings(task, seed, settings.max_rounds, settings.early_stopping_rounds, settings.report_every,
                              settings.eval_every, settings.cpus_per_trial, settings.gpus_per_trial,
                              str(share) if share else None, keeper_name)  # fmt: skip
        resources = {
            "cpu": settings.cpus_per_trial,
            **({"gpu": settings.gpus_per_trial} if settings.gpus_per_trial else {}),
        }
        trainable = tune.with_resources(tune.with_parameters(run_trial, data=data, settings=plain), resources)
    if deadline is not None:
        left = deadline.deadline - time.monotonic() - deadline.after_s
        if left <= 0:
            raise RuntimeError(f"tune.run_budget_s leaves no time to search: the steps before the search took the "
                               f"budget but {left + deadline.after_s:.0f} s, and the steps after need "
                               f"{deadline.after_s:.0f} s")  # fmt: skip
        budget = min(left, settings.time_budget_s or math.inf)
        log.info("tuning: %.0f s of search fit the run's budget", budget)
        settings = settings.model_copy(update={"time_budget_s": budget})
    try:
        tuner, resumed = _tuner(trainable, task, settings, seed, path, cpus, callbacks, deadline)
        with _mlflow_unseen(), _quiet_tune():
            grid = tuner.fit()
        return _collect(grid, STOPPING_METRIC[task], time.monotonic() - started, resumed, keeper)
    finally:
        if share is not None:
            share.unlink(missing_ok=True)
        if claim is not None:
            claim.close()
        if keeper is not None:  # also after a failed search: the next attempt in this process takes its name
            with contextlib.suppress(Exception):
                ray.kill(keeper)


def _claim_experiment(path: Path) -> tuple[Path, IO[str] | None]:
    """The experiment's folder for this search alone, and the lock that says so (held until the search ends). Two
    runs of the same command at once (two triggers, a second terminal) would otherwise drive one Tune experiment from
    two processes, each restoring and rewriting the other's trials; the second searches in a fresh folder instead."""
    try:
        import fcntl
    except ImportError:  # not POSIX: unguarded, as before
        return path, None
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = (path.parent / f".{path.name}.lock").open("w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.close()
        fresh = path.with_name(f"{path.name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
        log.info("another run is searching in %s: this one searches in %s", path, fresh)
        return fresh, None
    return path, lock


def one_trial_for_streamed_rows(data: TrainingData | StreamedData, settings: TuneConfig, cpus: int,
                                nodes: int) -> TuneConfig:  # fmt: skip
    """Rows that come as Ray Data (more than the driver holds) on a single machine: one trial at a time on every
    CPU, unless the config sets `cpus_per_trial` itself.

    Each trial bins its own copy of the rows (`training_matrix`), so trials side by side hold that copy once each:
    on SBA resampled to 9 million rows, 1.7-1.9 GiB a trial. One trial with every core keeps the cores as busy
    (XGBoost's `hist` spreads a round over its threads) and holds it once. On a Ray cluster each node holds its own
    trials' copies in its own memory, and `cpus_per_trial` stands.
    """
    if (not isinstance(data, StreamedData) or nodes > 1 or settings.data_parallel_workers or settings.gpus_per_trial
            or "cpus_per_trial" in settings.model_fields_set or settings.cpus_per_trial >= cpus):  # fmt: skip
        return settings
    log.info("tuning: %d rows come as Ray Data, more than the driver holds: one trial at a time on %d CPUs, so that "
             "one binned copy of them is in memory, not %d", data.train_rows, cpus, cpus // settings.cpus_per_trial)  # fmt: skip
    return settings.model_copy(update={"cpus_per_trial": cpus})


@contextlib.contextmanager
def _mlflow_unseen() -> Iterator[None]:
    """Tune counts the callbacks it is given by importing its MLflow integration, which imports mlflow whenever it
    is installed (Ray 2.60, `ray.air._internal.usage`): 0.65 s of imports here, in every run, for nothing, since
    mlcycle mirrors to MLflow itself (`tasks.tracking`). Where mlflow is not imported yet, Tune finds it missing."""
    if "mlflow" in sys.modules:
        yield
        return
    sys.modules["mlflow"] = None  # type: ignore[assignment]  # `import mlflow` raises ImportError
    try:
        yield
    finally:
        if sys.modules.get("mlflow", False) is None:
            del sys.modules["mlflow"]


def _tuner(
    trainable: Any,
    task: TaskType,
    settings: TuneConfig,
    seed: int,
    path: Path,
    cpus: int,
    callbacks: list[Any],
    deadline: RunDeadline | None = None,
) -> tuple[Any, bool]:
    workers = settings.data_parallel_workers
    concurrent = max(1, cpus // ((workers or 1) * settings.cpus_per_trial))
    log.info("tuning: %d trials, %d at a time on %d CPUs, %d thread(s) each",
             settings.num_samples, concurrent, cpus, settings.cpus_per_trial)  # fmt: skip
    resumed = settings.resume and tune.Tuner.can_restore(str(path))
    if resumed and not _any_trial_reported(path):
        # Nothing to keep, and restoring would fail at once: the trials it holds ended without a result (a time
        # budget that ran out before they started, a run killed as they started) and its searcher has drawn every
        # sample already, so no new trial would start.
        log.info("the search in %s ended before any trial reported: starting it again", path)
        shutil.rmtree(path)
        resumed = False
    if resumed:
        log.info("resuming the search in %s: finished trials are kept", path)
        tuner = tune.Tuner.restore(str(path), trainable=trainable, resume_unfinished=True, resume_errored=True)
        return tuner, True
    # ASHA compares trials at equal learning progress (rounds × eta, see `tune.grace_progress`), not at equal
    # reports, so `report_every` only sets how often it looks. No trial gets past max_t: its rounds run out first.
    max_progress = settings.max_rounds * max(settings.space.get("eta", [0.3, 0.3]))
    scheduler: Any = ASHAScheduler(
        time_attr="progress",
        max_t=max_progress,
        grace_period=min(settings.grace_progress, max_progress),
        reduction_factor=settings.reduction_factor,
    )
    if workers:
        # No ASHA for data-parallel trials: stopping one kills its Ray Train controller before it releases its
        # workers' placement group, and Ray 2.60's cleaner for that needs the dashboard's state API (off here),
        # so the CPUs would stay held. Each trial stops by its own early stopping instead.
        scheduler = FIFOScheduler()
    tuner = tune.Tuner(
        trainable,
        param_space=search_space(settings),
        tune_config=tune.TuneConfig(
            metric="valid_score",
            mode="min",
            num_samples=settings.num_samples,
            time_budget_s=settings.time_budget_s,
            search_alg=_searcher(settings, seed, concurrent),
            scheduler=scheduler,
            # A worker process per trial costs seconds of start-up and imports; reuse them. Not with Ray
            # Train inside: there the trial's process only drives a trainer and is cheap next to it.
            reuse_actors=not workers,
        ),
        run_config=tune.RunConfig(
            name=path.name,
            storage_path=str(path.parent),
            verbose=0,
            callbacks=callbacks,
            stop=deadline,
        ),
    )
    return tuner, False


def _any_trial_reported(path: Path) -> bool:
    """Whether a trial of the experiment at `path` reported a result (Tune's JSON logger writes one line a report)."""
    return any(f.stat().st_size > 0 for f in path.glob("*/result.json"))


def _collect(grid: Any, metric: str, elapsed: float, resumed: bool, keeper: Any = None) -> TuneResult:
    trials = [_trial_record(r) for r in grid]
    curves = {t["trial_id"]: _curve(r) for t, r in zip(trials, grid, strict=True)}
    scored = [t for t in trials if t["valid_score"] is not None]
    if not scored:
        raise RuntimeError(
            f"no trial reported a result; first errors: {[t['error'] for t in trials if t['error']][:3]}"
        )
    best = grid.get_best_result(metric="valid_score", mode="min", scope="last")
    best_id, rounds = str(best.metrics.get("trial_id", "")), int(best.metrics["rounds"])
    score, boosted = float(best.metrics["valid_score"]), int(best.metrics.get("boosted", 0))
    log.info("tuning done in %.0f s: best valid %s %.5f at %d rounds", elapsed, metric, score, rounds)
    # The best trial offered its booster as it reported this score (tasks.train.trial.BestBooster), unless it reported
    # before this run began (a resumed search): the offer may still be on its way to the keeper.
    offered = float(best.metrics.get("timestamp", 0)) >= time.time() - elapsed - 1
    booster, kept = None, _kept(keeper, score if offered else math.inf)
    if kept is not None and kept[2] == best_id and kept[0] < score:
        # The search stopped the best trial (its time budget) after the trial offered a better booster but before
        # Tune recorded that report: the kept booster is the best model measured, at the trial's own config.
        log.info("the best trial %s improved to %.5f at %d rounds as the search stopped it: that booster is kept",
                 best_id, kept[0], kept[1])  # fmt: skip
        score, rounds = kept[0], kept[1]
        boosted = max(boosted, rounds)
        for trial in scored:
            if trial["trial_id"] == best_id:
                trial.update(valid_score=score, rounds=rounds, boosted=boosted)
    if kept is not None and (kept[2], kept[1]) == (best_id, rounds):
        booster = _booster(kept[3])
    elif keeper is not None:  # the best trial ran before a resume, or its offer never came: the final fit boosts again
        log.info("the final fit boosts again: the search kept %s, its best is trial %s at %d rounds",
                 f"trial {kept[2]} at {kept[1]} rounds" if kept else "no booster", best_id, rounds)  # fmt: skip
    return TuneResult(
        best_config=dict(best.config),
        best_rounds=rounds,
        best_score=score,
        metric=metric,
        best_trial_id=best_id,
        trials=sorted(scored, key=lambda t: t["valid_score"]) + [t for t in trials if t["valid_score"] is None],
        curves=curves,
        experiment_path=grid.experiment_path,
        elapsed_s=elapsed,
        resumed=bool(resumed),
        best_booster=booster,
        best_boosted=boosted,
    )


OFFER_WAIT_S = 10.0  # the most the search waits for the best trial's booster to reach the keeper


def _kept(keeper: Any, offered: float = math.inf) -> tuple[float, int, str, bytes] | None:
    """What the search's keeper holds (score, best round, trial id, booster bytes), the keeper then ended. Trials do
    not wait for their offers to arrive, so this waits (up to `OFFER_WAIT_S`) until the keeper holds a booster
    scoring `offered` or better: the best trial's, still on its way when the search ended."""
    if keeper is None:
        return None
    until = time.monotonic() + OFFER_WAIT_S
    kept = ray.get(keeper.get.remote())
    while (kept is None or kept[0] > offered) and time.monotonic() < until:
        time.sleep(0.05)
        kept = ray.get(keeper.get.remote())
    ray.kill(keeper)
    return kept


def _booster(raw: bytes) -> Any:
    import xgboost as xgb

    booster = xgb.Booster()
    booster.load_model(bytearray(raw))
    return booster


def _trial_record(result: Any) -> dict[str, Any]:
    metrics = result.metrics or {}
    status = "error" if result.error else ("finished" if metrics.get("done") else "stopped early")
    return {
        "trial_id": metrics.get("trial_id") or Path(result.path).name,
        "status": status,
        "valid_score": float(metrics["valid_score"]) if "valid_score" in metrics else None,
        "rounds": int(metrics.get("rounds", 0)),
        "reports": int(metrics.get("training_iteration", 0)),
        "boosted": int(metrics.get("boosted", 0)),
        "seconds": float(metrics.get("time_total_s", 0.0)),
        "node_id": metrics.get("node_id"),
        "pid": metrics.get("pid"),  # the worker process it ran in
        "threads": metrics.get("threads"),  # the most XGBoost threads it used (see _LendFreedCpus)
        **(
            {
                "worker_nodes": metrics["worker_nodes"].split(","),
                "worker_rows": [int(r) for r in metrics["worker_rows"].split(",")],
            }
            if "worker_nodes" in metrics
            else {}
        ),  # fmt: skip
        "error": str(result.error)[:300] if result.error else None,
        **dict(result.config or {}),
    }


def _curve(result: Any) -> list[dict[str, float]]:
    frame = result.metrics_dataframe
    if frame is None or frame.empty or "valid_score" not in frame:
        return []
    return [{"timestamp": float(t), "rounds": int(r), "valid_score": float(v)}
            for t, r, v in zip(frame["timestamp"], frame["rounds"], frame["valid_score"], strict=True)]  # fmt: skip
