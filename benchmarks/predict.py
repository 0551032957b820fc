"""What validation and the shared preprocessing cost on the prediction path, against bare XGBoost.

Trains a small model on the real Adult data (no Ray, no Prefect), then times, for 1 and 1,000 records per call:
  bare      booster.predict on a DMatrix built from an already-prepared frame (the floor)
  pandera   the reference path: check_records (pandera) + apply_preprocessor (pandas) + predict
  mlcycle   what the service does per request: the record model generated from the schema (pydantic-core) +
            encode_records (NumPy, same spec) + inplace_predict
Prints median milliseconds per call and the ratios to bare.

Then saves the model as training does (to a throw-away model store) and times the Python API,
`mlcycle.load(tag).predict(frame)` (pandera validation + encode_frame + inplace_predict), for 1 and 100,000 rows
of a DataFrame, beside what a user writes by hand for the same frame: categoricals with the training vocabulary
(the preprocessor spec's categories), numbers as float, `xgb.DMatrix(..., enable_categorical=True)`,
`booster.predict`. Both answers must agree to 1e-6 or the run fails. Prints rows/s of each and their ratio; the
last line is the 100,000-row figure (target: the API at >= 0.8 of the hand-written rows/s).

Everything is measured in this run, single thread. `--small`: made-up Adult-like rows, a 30-round model and
5,000 rows instead of 100,000, in a few seconds (tests/test_benchmarks_predict.py runs it).
Run: `make bench` (or `.venv/bin/python benchmarks/predict.py`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xgboost as xgb

from mlcycle.schemas import adult, load_config, resolve_schema
from mlcycle.schemas.api import record_model
from mlcycle.schemas.config import PipelineConfig
from mlcycle.tasks.ingest.read import read_source
from mlcycle.tasks.ingest.validate import validate_frame
from mlcycle.tasks.paths import configure_environment, mlcycle_home
from mlcycle.tasks.preprocess import PreprocessorSpec, apply_preprocessor, encode_records, fit_preprocessor
from mlcycle.tasks.records import check_records
from mlcycle.tasks.registry.bundle import ModelBundle, collect_lineage, save_bundle
from mlcycle.tasks.train.boost import TrainingData, dmatrix, fit_booster, xgb_params
from mlcycle.tasks.train.prepare import Splits, encode_target, feature_columns, split_frame

ROOT = Path(__file__).resolve().parent.parent
TOLERANCE = 1e-6  # the API's probabilities against the hand-written ones
TARGET = 0.8  # the API's rows/s at least this share of the hand-written rows/s, for the big frame


@dataclass(frozen=True)
class Scale:
    """How much work each part does: the full run, or `--small`."""

    rounds: int
    records: tuple[tuple[int, int], ...]  # (records per call, repeats) for the service paths
    frames: tuple[tuple[int, int], ...]  # (rows per call, repeats) for the Python API; the last one is the target's


FULL = Scale(rounds=300, records=((1, 300), (1000, 30)), frames=((1, 300), (100_000, 5)))
SMALL = Scale(rounds=30, records=((1, 20), (100, 5)), frames=((1, 20), (5_000, 3)))


def median_ms(call: Callable[[], object], repeats: int) -> float:
    call()  # warm up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def made_up_adult(n: int, seed: int = 0) -> pd.DataFrame:
    """Adult-like labelled rows within the schema, some categories missing, the label depending on a few columns."""
    rng = np.random.default_rng(seed)

    def pick(levels: list[str], missing: float = 0.0) -> np.ndarray:
        values = rng.choice(np.array(levels, dtype=object), n)
        values[rng.random(n) < missing] = None
        return values

    age, hours, education_num = rng.integers(17, 90, n), rng.integers(1, 99, n), rng.integers(1, 17, n)
    gain = np.where(rng.random(n) < 0.1, rng.integers(1, 99_999, n), 0)
    score = (age - 40) / 15 + (hours - 40) / 20 + (education_num - 10) / 3 + (gain > 5000) * 2 + rng.normal(0, 1, n)
    return pd.DataFrame({
        "age": age, "workclass": pick(adult.WORKCLASS, 0.05), "fnlwgt": rng.integers(10_000, 1_000_000, n),
        "education": pick(adult.EDUCATION), "education_num": education_num,
        "marital_status": pick(adult.MARITAL_STATUS), "occupation": pick(adult.OCCUPATION, 0.05),
        "relationship": pick(adult.RELATIONSHIP), "race": pick(adult.RACE), "sex": pick(adult.SEX),
        "capital_gain": gain, "capital_loss": np.where(rng.random(n) < 0.05, rng.integers(1, 4_000, n), 0),
        "hours_per_week": hours, "native_country": pick(adult.NATIVE_COUNTRY, 0.02),
        "income": np.where(score > 1, ">50K", "<=50K"),
    })  # fmt: skip


def adult_splits(config: PipelineConfig, small: bool, cache: Path) -> Splits:
    """The real Adult data split as training splits it, or (small) 3,000 made-up rows split the same way."""
    if small:
        frame, part = made_up_adult(3000), pd.Series(dtype=object)
    else:
        raw = read_source(config.source, cache, config.seed)
        frame, part = raw.frame, raw.origin["part"]
    return split_frame(validate_frame(frame, resolve_schema(config.schema_ref)).valid, part, config)


def predict_by_hand(booster: xgb.Booster, spec: PreprocessorSpec, frame: pd.DataFrame) -> np.ndarray:
    """What a user writes for a frame without mlcycle: each categorical column as a pandas Categorical with the
    training vocabulary, each number as float, a DMatrix and `booster.predict`. No validation."""
    columns = {f.name: pd.Categorical(frame[f.name], categories=f.categories) if f.kind == "categorical"
               else frame[f.name].astype("float64") for f in spec.features}  # fmt: skip
    return booster.predict(xgb.DMatrix(pd.DataFrame(columns), enable_categorical=True, nthread=1))


def refuse_different(api: np.ndarray, hand: np.ndarray) -> None:
    """Stop the run unless the API answered every row as the hand-written path did, to `TOLERANCE`: a fast path
    that answers wrongly must not produce a figure."""
    worst = float(np.max(np.abs(api - hand))) if api.shape == hand.shape else np.inf
    if not worst <= TOLERANCE:  # also refuses NaN
        raise SystemExit(f"the API's probabilities differ from the hand-written ones on {len(hand)} rows: by {worst}")


def repeated(frame: pd.DataFrame, n: int) -> pd.DataFrame:
    """The first `n` rows of the frame repeated as often as needed, with a fresh index."""
    copies = -(-n // len(frame))
    return pd.concat([frame] * copies, ignore_index=True).head(n)


def bench_service_paths(bundle: ModelBundle, features: pd.DataFrame, scale: Scale) -> None:
    booster, spec, schema = bundle.booster, bundle.preprocessor, bundle.features_schema
    validator = record_model(schema)
    print(f"{'records':>8} {'bare ms':>9} {'pandera ms':>11} {'mlcycle ms':>11} {'vs bare':>8} {'rows/s':>11}")
    for n, repeats in scale.records:
        rows = features.head(n)
        records = [{k: (None if pd.isna(v) else v) for k, v in r.items()} for r in rows.to_dict("records")]
        prepared = apply_preprocessor(spec, rows)
        bare = median_ms(lambda: booster.predict(dmatrix(prepared, None, nthread=1)), repeats)

        def reference() -> object:
            frame, errors = check_records(records, schema, max_records=10_000)
            assert frame is not None and not errors
            return bundle.predict_records(frame)

        def served() -> object:
            valid, errors = validator.validate_python(records)
            assert not errors
            return booster.inplace_predict(encode_records(spec, valid)[0])

        slow = median_ms(reference, repeats)
        ours = median_ms(served, repeats)
        print(f"{n:>8} {bare:>9.2f} {slow:>11.2f} {ours:>11.2f} {ours / bare:>7.2f}x {n / ours * 1000:>11,.0f}")


def bench_python_api(tag: str, features: pd.DataFrame, scale: Scale) -> None:
    import mlcycle

    model = mlcycle.load(tag)
    booster, spec = model.bundle.booster, model.bundle.preprocessor
    booster.set_param({"nthread": 1})  # the booster both paths call; inplace_predict takes its threads from it
    print(f"{'rows':>8} {'api rows/s':>12} {'by hand rows/s':>15} {'api/hand':>9}")
    figures = []
    for n, repeats in scale.frames:
        rows = repeated(features, n)
        api, hand = model.predict(rows)["probability"].to_numpy(), predict_by_hand(booster, spec, rows)
        refuse_different(api, hand)
        api_rate = n / median_ms(lambda: model.predict(rows), repeats) * 1000
        hand_rate = n / median_ms(lambda: predict_by_hand(booster, spec, rows), repeats) * 1000
        print(f"{n:>8} {api_rate:>12,.0f} {hand_rate:>15,.0f} {api_rate / hand_rate:>9.2f}")
        figures.append((n, api_rate, hand_rate))
    n, api_rate, hand_rate = figures[-1]
    print(f"python api: {n} rows {api_rate:,.0f} rows/s vs hand-written {hand_rate:,.0f} rows/s, "
          f"ratio {api_rate / hand_rate:.2f} (target >= {TARGET})")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="made-up rows and small sizes: a few seconds")
    args = parser.parse_args(argv)
    scale = SMALL if args.small else FULL
    cache = mlcycle_home() / "cache" / "wheels"  # the user's downloaded data; the model goes to a throw-away store
    with tempfile.TemporaryDirectory(prefix="mlcycle-bench-predict-") as home:
        os.environ.update({"MLCYCLE_HOME": home, "BENTOML_HOME": str(Path(home) / "bentoml")})
        configure_environment()
        config = load_config(ROOT / "configs/adult.yaml")
        splits = adult_splits(config, args.small, cache)
        spec = fit_preprocessor(splits.train, feature_columns(list(splits.train.columns), config), config.preprocess)
        data = TrainingData(apply_preprocessor(spec, splits.train), encode_target(splits.train[config.target], config),
                            apply_preprocessor(spec, splits.valid), encode_target(splits.valid[config.target], config))  # fmt: skip
        params = xgb_params("binary", {"eta": 0.1, "max_depth": 6}, nthread=1, seed=0)
        booster = fit_booster(data, params, scale.rounds, 20)
        booster.set_param({"nthread": 1})
        classes = ["<=50K", ">50K"]
        bundle = ModelBundle("bench:local", booster, spec, config, classes, {}, {})
        features = splits.test.drop(columns=[config.target])

        print(f"model: {booster.num_boosted_rounds()} rounds; median of repeated calls, single thread"
              f"{'; --small: made-up rows' if args.small else ''}")  # fmt: skip
        bench_service_paths(bundle, features, scale)
        metrics = {"primary": "roc_auc", "test": {"roc_auc": 0.0}}  # not evaluated: the benchmark needs no metric
        tag = save_bundle(booster, spec, config, classes, metrics, collect_lineage("bench", "bench", config, {}))
        bench_python_api(tag, features, scale)


if __name__ == "__main__":
    main()
