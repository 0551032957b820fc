"""The preprocessing that travels with the model: fitted on training rows, stored as plain data, applied by
one function that training, evaluation and the service all call, so serving cannot skew from training."""

from __future__ import annotations

import re
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel

from schemas.config import DerivedFeature, PreprocessConfig

_DATE_PARTS = {"hour": "hour", "year": "year", "month": "month", "dayofweek": "day_of_week", "dayofyear": "day_of_year"}
_CLOCK = re.compile(r"^\s*(\d{1,2})\s*(am|pm)\s*$", re.IGNORECASE)


class FeatureSpec(BaseModel):
    """How one model input is made from a column of the request."""

    name: str
    kind: Literal["numeric", "categorical"]
    categories: list[str] | None = None
    fill: float | None = None
    center: float = 0.0
    scale: float = 1.0


class PreprocessorSpec(BaseModel):
    """A fitted preprocessor as plain, JSON-serialisable data."""

    derived: list[DerivedFeature]
    features: list[FeatureSpec]

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]


def clock_hour(values: pd.Series) -> pd.Series:
    """'12am' → 0, '6am' → 6, '12pm' → 12, '11pm' → 23; anything else → missing."""
    parts = values.astype("string").str.extract(_CLOCK)
    hour = pd.to_numeric(parts[0], errors="coerce") % 12
    afternoon = (parts[1].str.lower() == "pm").fillna(False).to_numpy(dtype=bool)
    return (hour + np.where(afternoon, 12, 0)).astype("float64")


def derive_features(frame: pd.DataFrame, derived: list[DerivedFeature]) -> pd.DataFrame:
    """Add the configured derived columns (a new frame; the input is not changed)."""
    new: dict[str, pd.Series] = {}
    for spec in derived:
        column = frame[spec.source]
        if spec.kind == "clock_hour":
            new[spec.name] = clock_hour(column)
            continue
        when = pd.to_datetime(column, errors="coerce")
        new[spec.name] = getattr(when.dt, _DATE_PARTS[spec.kind]).astype("float64")
    return frame.assign(**new)


def fit_preprocessor(train: pd.DataFrame, features: list[str], config: PreprocessConfig) -> PreprocessorSpec:
    """Learn vocabularies, fill values and scales from the training split only."""
    frame = derive_features(train, config.derived)
    specs = []
    for name in features:
        column = frame[name]
        if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
            values = column.astype("float64")
            fill = float(values.median()) if config.impute == "median" else None
            center, scale = _scaling(values, config.scale)
            specs.append(FeatureSpec(name=name, kind="numeric", fill=fill, center=center, scale=scale))
        else:
            vocabulary = sorted(str(v) for v in column.dropna().unique())
            specs.append(FeatureSpec(name=name, kind="categorical", categories=vocabulary))
    return PreprocessorSpec(derived=config.derived, features=specs)


def _scaling(values: pd.Series, how: str) -> tuple[float, float]:
    if how == "standard":
        center, scale = values.mean(), values.std()
    elif how == "minmax":
        center, scale = values.min(), values.max() - values.min()
    elif how == "robust":
        center, scale = values.median(), values.quantile(0.75) - values.quantile(0.25)
    else:
        return 0.0, 1.0
    return float(center), float(scale) if scale and np.isfinite(scale) else 1.0


def apply_preprocessor(spec: PreprocessorSpec, frame: pd.DataFrame) -> pd.DataFrame:
    """Turn validated rows into the model's input frame: numeric float64, categoricals with the training
    vocabulary (a category never seen in training becomes missing, which XGBoost routes like any missing value)."""
    derived = derive_features(frame, spec.derived)
    columns: dict[str, pd.Series] = {}
    for feature in spec.features:
        column = derived[feature.name]
        if feature.kind == "numeric":
            values = pd.to_numeric(column, errors="coerce").astype("float64")
            if feature.fill is not None:
                values = values.fillna(feature.fill)
            columns[feature.name] = (values - feature.center) / feature.scale
        else:
            text = column.astype("object").where(column.notna(), None).map(lambda v: v if v is None else str(v))
            text = text.where(text.isin(feature.categories or []), None)
            columns[feature.name] = pd.Series(
                pd.Categorical(text, categories=feature.categories), index=frame.index, name=feature.name
            )
    return pd.DataFrame(columns, index=frame.index)


def unseen_categories(spec: PreprocessorSpec, frame: pd.DataFrame, prepared: pd.DataFrame) -> dict[str, int]:
    """Per categorical feature, how many present values fell outside the training vocabulary."""
    derived = derive_features(frame, spec.derived)
    counts = {}
    for feature in spec.features:
        if feature.kind == "categorical":
            lost = int((derived[feature.name].notna() & prepared[feature.name].isna()).sum())
            if lost:
                counts[feature.name] = lost
    return counts
