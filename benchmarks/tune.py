"""Tuning speed: mlcycle's Ray Tune search against a plain serial loop and scikit-learn's RandomizedSearchCV.

Adult: the official train file split 80/20 (stratified) into train and validation, the official test file for
test. The same 24 configurations (those mlcycle's seeded random search samples) for:
  (a) mlcycle   tune_xgboost as the training flow runs it (ASHA at equal learning progress, parallel trials, reused
                actors): Ray is started first and the data read and prepared; (a)'s wall time is what the tuning
                task takes once the data is ready and Ray's workers have imported a trial's modules, as in
                `mlcycle train`, which starts Ray before Prefect's flow engine (its workers are ready 3-5 s before the
                search there: docs/performance.md). Ray's start-up, those imports included, is reported apart.
                Its trials score the validation split every `tune.eval_every` rounds (5)
  (b) loop      the same configurations trained one after another with bare `xgb.train`, 2 threads each, XGBoost's
                own early stopping (the validation split scored every round): the floor for the work itself
  (c) sklearn   RandomizedSearchCV over XGBClassifier on the same 24 configurations, the same validation split
                (PredefinedSplit) and early stopping, 2 jobs of 1 thread: the framework compared, not the luck
                of the draw
  (c') own draws the same, but 24 draws of scikit-learn's own from the same distributions (`own=false` skips it):
                shown because its best test AUC differs from the others' by the draw alone
Every approach picks its winner by validation log loss. The loop keeps its winner's booster; (a) and (c) keep no
models, so their winner is refit once, with the same early stopping, off their clocks, and scored on test: every
clock times the search alone.
Prints wall time, best validation AUC and test AUC per approach, Ray's start-up and per-trial overhead, and the
ratios measured in this run; the sklearn ratio also counting all of Ray's start-up, as if nothing overlapped it.
Run: `make bench` or `.venv/bin/python benchmarks/tune.py`; `seeds=42,7,1,123,2` runs the whole comparison per seed
and ends with a table and the medians (one seed takes about two minutes). Not a test.
`--small` (the suite runs it): 2,000 made-up rows in Adult's schema, 2 configurations of 50 rounds at most, ~1 min.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import log_loss, roc_auc_score
from sklearn.model_selection import PredefinedSplit, RandomizedSearchCV, train_test_split

from mlcycle.flows.options import parse_overrides
from mlcycle.schemas import adult, load_config, resolve_schema
from mlcycle.schemas.config import TuneConfig
from mlcycle.tasks.ingest.read import read_source
from mlcycle.tasks.ingest.validate import validate_frame
from mlcycle.tasks.paths import configure_environment
from mlcycle.tasks.preprocess import apply_preprocessor, fit_preprocessor
from mlcycle.tasks.train.boost import TrainingData, dmatrix, fit_booster, xgb_params
from mlcycle.tasks.train.prepare import encode_target, feature_columns
from mlcycle.tasks.train.tune import ensure_ray, tune_xgboost
from mlcycle.tasks.train.warm import warm_workers

ROOT = Path(__file__).resolve().parent.parent
N_CONFIGS = 24  # the default; `tune.num_samples=8` as an argument runs fewer
SMALL = {"tune.num_samples": 2, "tune.max_rounds": 50}  # --small, over the overrides below
SMALL_ROWS = 2000


def bench_config(args: list[str], small: bool = False) -> Any:
    # Further overrides as KEY=VALUE arguments, as `mlcycle train --set` takes them: tune.report_every=50
    # The same sampled configurations for all three: random search, no wall-clock budget, up to 1,000 rounds (the
    # config's own profile uses Optuna, a time budget and more rounds).
    # ASHA at mlcycle's defaults, not the thorough profile's longer grace.
    asha = {f"tune.{name}": TuneConfig.model_fields[name].default for name in ("grace_progress", "reduction_factor")}
    overrides = {"tune.num_samples": N_CONFIGS, "tune.resume": False, "tune.searcher": "random",
                 "tune.time_budget_s": None, "tune.max_rounds": 1000, **asha, **(SMALL if small else {}),
                 **parse_overrides(args)}  # fmt: skip
    return load_config(ROOT / "configs/adult.yaml", overrides)


def made_up_adult(n: int, seed: int) -> pd.DataFrame:
    """Rows in Adult's schema (seeded), some categories missing, the label a noisy function of age, hours, schooling
    and capital gain: the small mode's data."""
    rng = np.random.default_rng(seed)

    def pick(levels: list[str], missing: float = 0.0) -> np.ndarray:
        values = rng.choice(np.array(levels, dtype=object), n)
        values[rng.random(n) < missing] = None
        return values

    age, hours, schooling = rng.integers(17, 90, n), rng.integers(1, 99, n), rng.integers(1, 17, n)
    gain = np.where(rng.random(n) < 0.1, rng.integers(1, 99_999, n), 0)
    score = (age - 40) / 15 + (hours - 40) / 20 + (schooling - 10) / 3 + 2 * (gain > 5000) + rng.normal(0, 1, n)
    return pd.DataFrame({
        "age": age, "workclass": pick(adult.WORKCLASS, 0.05), "fnlwgt": rng.integers(10_000, 1_000_000, n),
        "education": pick(adult.EDUCATION), "education_num": schooling, "marital_status": pick(adult.MARITAL_STATUS),
        "occupation": pick(adult.OCCUPATION, 0.05), "relationship": pick(adult.RELATIONSHIP), "race": pick(adult.RACE),
        "sex": pick(adult.SEX), "capital_gain": gain, "capital_loss": np.zeros(n, dtype=int), "hours_per_week": hours,
        "native_country": pick(adult.NATIVE_COUNTRY, 0.02), "income": np.where(score > 1, ">50K", "<=50K"),
    })  # fmt: skip


def load_adult(config: Any, small: bool = False) -> tuple[TrainingData, pd.DataFrame, np.ndarray]:
    """Adult's official train file split 80/20 into train and validation, and its official test file; or (small)
    made-up rows, a quarter of them for test."""
    home = configure_environment()
    if small:
        valid = validate_frame(made_up_adult(SMALL_ROWS, config.seed), resolve_schema(config.schema_ref)).valid
        train_all, test = train_test_split(valid, test_size=0.25, stratify=valid[config.target],
                                           random_state=config.seed)  # fmt: skip
    else:
        raw = read_source(config.source, home / "cache" / "wheels", config.seed)
        valid = validate_frame(raw.frame, resolve_schema(config.schema_ref)).valid
        is_test = (raw.origin["part"] == "test").to_numpy()
        train_all, test = valid[~is_test], valid[is_test]
    train, val = train_test_split(train_all, test_size=0.2, stratify=train_all[config.target], random_state=config.seed)
    spec = fit_preprocessor(train, feature_columns(list(train.columns), config), config.preprocess)
    data = TrainingData(apply_preprocessor(spec, train), encode_target(train[config.target], config),
                        apply_preprocessor(spec, val), encode_target(val[config.target], config))  # fmt: skip
    return data, apply_preprocessor(spec, test), encode_target(test[config.target], config)


def bare_fit(
    data: TrainingData, params: dict[str, Any], max_rounds: int, early_stopping_rounds: int
) -> tuple[Any, int]:
    """XGBoost alone: `xgb.train` with its own early stopping; the booster cut to its best round, and the rounds
    boosted."""
    import xgboost as xgb

    dtrain, dvalid = dmatrix(data.x_train, data.y_train, 2), dmatrix(data.x_valid, data.y_valid, 2)
    booster = xgb.train(params, dtrain, max_rounds, evals=[(dvalid, "valid")],
                        early_stopping_rounds=early_stopping_rounds, verbose_eval=False)  # fmt: skip
    return booster[: booster.best_iteration + 1], booster.num_boosted_rounds()


def auc(booster: Any, x: pd.DataFrame, y: np.ndarray) -> float:
    return float(roc_auc_score(y, booster.predict(dmatrix(x, None, 2))))


SKLEARN_NAMES = {"eta": "learning_rate", "lambda": "reg_lambda", "alpha": "reg_alpha"}  # XGBClassifier's names


def sklearn_search(data: TrainingData, candidates: Any, settings: Any, seed: int) -> tuple[float, Any]:
    """RandomizedSearchCV over XGBClassifier on the validation split (PredefinedSplit), 2 jobs of 1 thread, with
    XGBoost's early stopping; then its winner refit off the clock. Returns the search's wall time and the refit
    model."""
    from xgboost import XGBClassifier

    fixed = {"n_estimators": settings.max_rounds, "early_stopping_rounds": settings.early_stopping_rounds,
             "tree_method": "hist", "enable_categorical": True, "eval_metric": "logloss", "random_state": seed}  # fmt: skip
    x_all = pd.concat([data.x_train, data.x_valid])
    y_all = np.concatenate([data.y_train, data.y_valid])
    fold = np.r_[np.full(len(data.x_train), -1), np.zeros(len(data.x_valid))]
    search = RandomizedSearchCV(XGBClassifier(n_jobs=1, **fixed), candidates, n_iter=settings.num_samples,
                                scoring="neg_log_loss", cv=PredefinedSplit(fold), n_jobs=2, random_state=seed,
                                refit=False)  # fmt: skip
    started = time.perf_counter()
    search.fit(x_all, y_all, eval_set=[(data.x_valid, data.y_valid)], verbose=False)
    wall = time.perf_counter() - started  # the search alone, as for (a): the winner's refit below is off the clock
    best = XGBClassifier(n_jobs=2, **fixed, **search.best_params_)
    best.fit(data.x_train, data.y_train, eval_set=[(data.x_valid, data.y_valid)], verbose=False)
    return wall, best


def same_configurations(trials: list[dict[str, Any]], space: dict[str, Any]) -> list[dict[str, list[Any]]]:
    """(a)'s sampled configurations as one-point grids under XGBClassifier's names: RandomizedSearchCV, given only
    lists, samples without replacement, so `n_iter` of them evaluates every one."""
    grids = []
    for trial in trials:
        sampled = xgb_params("binary", {k: trial[k] for k in space}, 1, 0)
        grids.append({SKLEARN_NAMES.get(k, k): [sampled[k]] for k in space})
    return grids


def own_draws(space: dict[str, Any]) -> dict[str, Any]:
    """The same distributions as mlcycle's search space, for scikit-learn to draw from with its own generator."""

    def uniform(low: float, high: float) -> Any:
        return stats.uniform(low, high - low)

    return {
        "learning_rate": stats.loguniform(*space["eta"]),
        "max_depth": stats.randint(int(space["max_depth"][0]), int(space["max_depth"][1]) + 1),
        "min_child_weight": uniform(*space["min_child_weight"]),
        "subsample": uniform(*space["subsample"]),
        "colsample_bytree": uniform(*space["colsample_bytree"]),
        "reg_lambda": stats.loguniform(*space["lambda"]),
        "reg_alpha": stats.loguniform(*space["alpha"]),
        "max_bin": stats.randint(int(space["max_bin"][0]), int(space["max_bin"][1]) + 1),
    }


def workers_ready(began: float, timeout_s: float = 120.0) -> float:
    """Wait until every worker the local Ray started with its node (one per CPU) has imported a trial's modules
    (tasks.train.preload); seconds since `began`. A Ray whose workers never say so fails the benchmark."""
    import ray

    cpus = int(ray.cluster_resources()["CPU"])
    logs = Path(ray._private.worker._global_node.get_logs_dir_path())
    while len(warm_workers(logs)) < cpus:
        if time.perf_counter() - began > timeout_s:
            raise SystemExit(f"Ray's workers did not import a trial's modules within {timeout_s:.0f} s ({logs})")
        time.sleep(0.05)
    return time.perf_counter() - began


def classifier_row(approach: str, wall: float, model: Any, data: TrainingData, x_test: Any, y_test: Any) -> dict:
    return {"approach": approach, "wall_s": wall,
            "val_auc": float(roc_auc_score(data.y_valid, model.predict_proba(data.x_valid)[:, 1])),
            "test_auc": float(roc_auc_score(y_test, model.predict_proba(x_test)[:, 1]))}  # fmt: skip


def run(config: Any, own: bool, small: bool = False) -> dict[str, float]:
    """One comparison at `config.seed` (`small`: on made-up rows): prints its table and returns its figures."""
    settings = config.tune
    rows = []

    # (a) mlcycle, as `mlcycle train` runs it: Ray first, whose workers import a trial's modules while the data is
    # loaded and prepared, then the tuning task on workers that are ready. Ray's start-up is reported apart (in
    # `mlcycle train` it overlaps Prefect's start-up, ingest and preparation).
    began = time.perf_counter()
    ensure_ray(None)
    ray_start = time.perf_counter() - began
    storage = tempfile.TemporaryDirectory()
    load_began = time.perf_counter()
    data, x_test, y_test = load_adult(config, small)
    loaded = time.perf_counter()
    warm_after = workers_ready(began)
    ready = time.perf_counter()
    result = tune_xgboost(data, "binary", settings, config.seed, Path(storage.name), "bench")
    done = time.perf_counter()
    storage.cleanup()
    wall_a = done - ready  # the tuning task, from the moment the data is ready
    whole_a = done - began  # Ray's start-up and the whole search included
    load_s = loaded - load_began
    best_a = fit_booster(data, xgb_params("binary", result.best_config, 2, config.seed), settings.max_rounds,
                         settings.early_stopping_rounds)  # fmt: skip
    import ray

    cpus = int(ray.cluster_resources()["CPU"])
    trial_seconds = sum(t["seconds"] for t in result.trials)
    overhead = max(0.0, (wall_a * cpus - trial_seconds) / len(result.trials))
    boosted_a = sum(t["boosted"] for t in result.trials)
    rows.append({"approach": "(a) mlcycle", "wall_s": wall_a, "val_auc": auc(best_a, data.x_valid, data.y_valid),
                 "test_auc": auc(best_a, x_test, y_test)})  # fmt: skip
    ray.shutdown()

    # (b) the plain loop over exactly the configurations (a) sampled
    started = time.perf_counter()
    best_b, best_loss = None, np.inf
    rounds_b = 0
    for sampled in ({k: trial[k] for k in settings.space} for trial in result.trials):
        booster, boosted = bare_fit(data, xgb_params("binary", sampled, 2, config.seed), settings.max_rounds,
                                    settings.early_stopping_rounds)  # fmt: skip
        rounds_b += boosted
        loss = float(log_loss(data.y_valid, booster.predict(dmatrix(data.x_valid, None, 2))))
        if loss < best_loss:
            best_b, best_loss = booster, loss
    wall_b = time.perf_counter() - started
    rows.append({"approach": "(b) loop", "wall_s": wall_b, "val_auc": auc(best_b, data.x_valid, data.y_valid),
                 "test_auc": auc(best_b, x_test, y_test)})  # fmt: skip

    # (c) scikit-learn over the same configurations; (c') over its own draws from the same distributions
    wall_c, best_c = sklearn_search(data, same_configurations(result.trials, settings.space), settings, config.seed)
    rows.append(classifier_row("(c) sklearn", wall_c, best_c, data, x_test, y_test))
    if own:
        wall, best = sklearn_search(data, own_draws(settings.space), settings, config.seed)
        rows.append(classifier_row("(c') own draws", wall, best, data, x_test, y_test))

    what = "made-up Adult rows" if small else "Adult"
    print(f"{what}, seed {config.seed}: {len(data.x_train)} train, {len(data.x_valid)} validation, {len(x_test)} test "
          f"rows; {settings.num_samples} configurations; up to {settings.max_rounds} rounds, early stopping "
          f"{settings.early_stopping_rounds}")  # fmt: skip
    print(f"{'approach':<15} {'wall s':>8} {'val AUC':>9} {'test AUC':>9}")
    for row in rows:
        print(f"{row['approach']:<15} {row['wall_s']:>8.1f} {row['val_auc']:>9.4f} {row['test_auc']:>9.4f}")
    print(f"(a) Ray start-up {ray_start:.1f} s, its workers ready {warm_after:.1f} s after it began; {load_s:.1f} s "
          f"loading the data; the search took {wall_a:.1f} s; "
          f"per-trial overhead {overhead:.2f} s ({len(result.trials)} trials on {cpus} CPUs; ASHA let about "
          f"{boosted_a} rounds be boosted, the loop {rounds_b} with early stopping alone)")  # fmt: skip
    a, b, c = rows[:3]
    figures = {"seed": config.seed, "vs_loop": a["wall_s"] / b["wall_s"], "vs_sklearn": a["wall_s"] / c["wall_s"],
               "whole_vs_sklearn": whole_a / c["wall_s"], "overhead": overhead,
               "val_gap": a["val_auc"] - b["val_auc"], "test_gap": a["test_auc"] - c["test_auc"]}  # fmt: skip
    own_gap = f"; (a) - (c') {a['test_auc'] - rows[3]['test_auc']:+.4f}" if own else ""
    print(f"val AUC (a) - (b) {figures['val_gap']:+.4f}; test AUC (a) - (c) {figures['test_gap']:+.4f}{own_gap}")
    return figures


def verdict(figures: dict[str, float]) -> str:
    return (
        f"time vs loop {figures['vs_loop']:.2f}, time vs sklearn {figures['vs_sklearn']:.2f} "
        f"({figures['whole_vs_sklearn']:.2f} counting Ray's start-up and the data loading), per-trial overhead "
        f"{figures['overhead']:.2f} s"
    )


def main() -> None:
    # `seeds=42,7,1` runs the whole comparison once per seed and ends with the medians; `own=false` skips (c').
    small = "--small" in sys.argv[1:]
    given = [a for a in sys.argv[1:] if a != "--small"]
    args = [a for a in given if not a.startswith(("seeds=", "own="))]
    options = parse_overrides([a for a in given if a not in args])
    seeds = options.get("seeds")
    seeds = [int(s) for s in str(seeds).split(",")] if seeds is not None else [None]
    configure_environment()  # telemetry off before Ray starts
    results = []
    for seed in seeds:
        config = bench_config(args + ([f"seed={seed}"] if seed is not None else []), small)
        results.append(run(config, own=bool(options.get("own", True)), small=small))
        print(verdict(results[-1]), flush=True)
    if len(results) > 1:
        print(
            f"{'seed':>6} {'vs loop':>8} {'vs sklearn':>11} {'overhead s':>11} {'val (a)-(b)':>12} {'test (a)-(c)':>13}"
        )
        for f in results:
            print(f"{f['seed']:>6} {f['vs_loop']:>8.2f} {f['vs_sklearn']:>11.2f} {f['overhead']:>11.2f} "
                  f"{f['val_gap']:>+12.4f} {f['test_gap']:>+13.4f}")  # fmt: skip
        median = {k: float(np.median([f[k] for f in results])) for k in results[0] if k != "seed"}
        print(f"median over seeds {','.join(str(f['seed']) for f in results)}: {verdict(median)}")


if __name__ == "__main__":
    main()
