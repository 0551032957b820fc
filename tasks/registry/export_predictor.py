"""Reference predictor for a model exported by `mlcycle export` (copied into the export folder as predict.py).

Needs only Python 3.10+, NumPy, and onnxruntime (model.onnx) or xgboost (model.json); nothing from mlcycle.
It applies the preprocessing recorded in preprocessor.json exactly as training did, then runs the model:

    python predict.py records.json          # a JSON list of records (objects with the schema's fields)

    from predict import Predictor
    Predictor(".").predict([{"age": 39, ...}])  # positive-class probabilities, class probabilities, or values
"""

from __future__ import annotations

import json
import math
import re
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

_CLOCK = re.compile(r"^\s*(\d{1,2})\s*(am|pm)\s*$", re.IGNORECASE)


def _clock_hour(value: Any) -> float:
    """'12am' -> 0, '6am' -> 6, '12pm' -> 12, '11pm' -> 23; anything else -> missing."""
    match = _CLOCK.match(str(value)) if value is not None else None
    if not match:
        return math.nan
    return float(int(match.group(1)) % 12 + (12 if match.group(2).lower() == "pm" else 0))


def _date_part(value: Any, kind: str) -> float:
    try:
        when = datetime.fromisoformat(str(value))
    except (TypeError, ValueError):
        return math.nan
    if kind == "days":
        return (when - datetime(1970, 1, 1, tzinfo=when.tzinfo)).total_seconds() / 86400
    parts = {"hour": when.hour, "year": when.year, "month": when.month, "dayofweek": when.weekday(),
             "dayofyear": when.timetuple().tm_yday}  # fmt: skip
    return float(parts[kind])


def _number(value: Any) -> float:
    if value is None or isinstance(value, bool):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def prepare(spec: dict[str, Any], records: list[dict[str, Any]]) -> np.ndarray:
    """The model's input matrix (float32, NaN = missing): derived features, fills, scaling, category codes."""
    rows = []
    for record in records:
        values = dict(record)
        for derived in spec["derived"]:
            source = values.get(derived["source"])
            if derived["kind"] == "clock_hour":
                values[derived["name"]] = _clock_hour(source)
            else:
                values[derived["name"]] = _date_part(source, derived["kind"])
        row = []
        for feature in spec["features"]:
            value = values.get(feature["name"])
            if feature["kind"] == "numeric":
                number = _number(value)
                if math.isnan(number) and feature.get("fill") is not None:
                    number = feature["fill"]
                row.append((number - feature["center"]) / feature["scale"])
            else:
                categories = feature["categories"] or []
                if value is None:
                    row.append(math.nan)
                    continue
                text = str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
                if text in categories:
                    row.append(float(categories.index(text)))
                else:
                    # a capped feature's `other` level (its last), else missing, as in training
                    row.append(float(len(categories) - 1) if feature.get("other") else math.nan)
        rows.append(row)
    # float64 arithmetic first, then float32: what XGBoost does with the pandas frame in training and serving
    return np.asarray(rows, dtype=np.float64).astype(np.float32)


class Predictor:
    """The exported model with its preprocessing."""

    def __init__(self, folder: str | Path = ".") -> None:
        folder = Path(folder)
        self.meta = json.loads((folder / "meta.json").read_text())
        self.spec = json.loads((folder / "preprocessor.json").read_text())
        if self.meta["format"] == "onnx":
            import onnxruntime

            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = 1
            self.session = onnxruntime.InferenceSession(str(folder / self.meta["model_file"]), options,
                                                        providers=["CPUExecutionProvider"])  # fmt: skip
        else:
            import xgboost

            self.booster = xgboost.Booster()
            self.booster.load_model(str(folder / self.meta["model_file"]))
            self.booster.set_param({"nthread": 1})

    def predict_matrix(self, x: np.ndarray) -> np.ndarray:
        if self.meta["format"] == "onnx":
            out = np.asarray(self.session.run(None, {"X": x})[0], dtype=np.float64)
            return out if self.meta["task"] == "multiclass" else out.reshape(-1)
        import xgboost

        types = ["c" if f["kind"] == "categorical" else "q" for f in self.spec["features"]]
        names = [f["name"] for f in self.spec["features"]]
        matrix = xgboost.DMatrix(x, feature_names=names, feature_types=types, enable_categorical=True, nthread=1)
        return np.asarray(self.booster.predict(matrix), dtype=np.float64)

    def predict(self, records: list[dict[str, Any]]) -> np.ndarray:
        """Positive-class probability (binary), predicted value (regression), one per record; multiclass: a row of
        class probabilities per record, in meta.json's `classes` order."""
        return self.predict_matrix(prepare(self.spec, records))

    def answer(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Predictions shaped like the service's answers."""
        values = self.predict(records)
        if self.meta["task"] == "binary":
            negative, positive = self.meta["classes"]
            return [{"probability": float(p), "label": positive if p >= 0.5 else negative} for p in values]
        if self.meta["task"] == "multiclass":
            classes = self.meta["classes"]
            return [{"label": classes[int(np.argmax(row))], "probabilities": dict(zip(classes, map(float, row), strict=True))}
                    for row in values]  # fmt: skip
        return [{"value": float(v)} for v in values]


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python predict.py records.json")
    here = Path(__file__).resolve().parent
    print(json.dumps(Predictor(here).answer(json.loads(Path(sys.argv[1]).read_text())), indent=1))
