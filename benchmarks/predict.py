"""What validation and the shared preprocessing cost on the prediction path, against bare XGBoost.

Trains a small model on the real Adult data (no Ray, no Prefect), then times, for 1 and 1,000 records per call:
  bare      booster.predict on a DMatrix built from an already-prepared frame (the floor)
  pandera   the reference path: check_records (pandera) + apply_preprocessor (pandas) + predict
  mlcycle   what the service does per request: the record model generated from the schema (pydantic-core) +
            encode_records (NumPy, same spec) + inplace_predict
Prints median milliseconds per call and the ratios to bare, all measured in this run.
Run: `make bench` (or `.venv/bin/python benchmarks/predict.py`).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from schemas import load_config, resolve_schema
from schemas.api import record_model
from tasks.ingest.read import read_source
from tasks.ingest.validate import validate_frame
from tasks.paths import configure_environment
from tasks.preprocess import apply_preprocessor, encode_records, fit_preprocessor
from tasks.records import check_records
from tasks.registry.bundle import ModelBundle
from tasks.train.boost import TrainingData, dmatrix, fit_booster, xgb_params
from tasks.train.prepare import encode_target, feature_columns, split_frame

ROOT = Path(__file__).resolve().parent.parent


def median_ms(call: Callable[[], object], repeats: int) -> float:
    call()  # warm up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    home = configure_environment()
    config = load_config(ROOT / "configs/adult.yaml")
    raw = read_source(config.source, home / "cache" / "wheels", config.seed)
    valid = validate_frame(raw.frame, resolve_schema(config.schema_ref)).valid
    splits = split_frame(valid, raw.origin["part"], config)
    spec = fit_preprocessor(splits.train, feature_columns(list(splits.train.columns), config), config.preprocess)
    data = TrainingData(apply_preprocessor(spec, splits.train), encode_target(splits.train[config.target], config),
                        apply_preprocessor(spec, splits.valid), encode_target(splits.valid[config.target], config))  # fmt: skip
    booster = fit_booster(data, xgb_params("binary", {"eta": 0.1, "max_depth": 6}, nthread=1, seed=0), 300, 20)
    bundle = ModelBundle("bench:local", booster, spec, config, ["<=50K", ">50K"], {}, {})
    schema = resolve_schema(config.features_schema_ref)
    features = splits.test.drop(columns=[config.target])

    validator = record_model(schema)
    booster.set_param({"nthread": 1})
    print(f"model: {booster.num_boosted_rounds()} rounds; median of repeated calls, single thread")
    print(f"{'records':>8} {'bare ms':>9} {'pandera ms':>11} {'mlcycle ms':>11} {'vs bare':>8} {'rows/s':>11}")
    for n, repeats in ((1, 300), (1000, 30)):
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


if __name__ == "__main__":
    main()
