"""The preprocessing that travels with the model: fitted on training rows, stored as plain data, applied by
one function that training, evaluation and the service all call, so serving cannot skew from training."""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel

from mlcycle.schemas.config import DerivedFeature, PreprocessConfig

_DATE_PARTS = {"hour": "hour", "year": "year", "month": "month", "dayofweek": "day_of_week", "dayofyear": "day_of_year"}
_CLOCK = re.compile(r"^\s*(\d{1,2})\s*(am|pm)\s*$", re.IGNORECASE)
_EPOCH = pd.Timestamp("1970-01-01")
_DAY = pd.Timedelta(days=1)
OTHER = "__other__"  # the level a capped categorical feature gives every value it did not keep


class FeatureSpec(BaseModel):
    """How one model input is made from a column of the request.

    A categorical feature's `categories` are its levels in code order. With `other`, the last level is `OTHER`
    and every value not among the others (rare in training, or never seen) takes it; without, such a value is
    missing, which XGBoost routes like any missing value.
    """

    name: str
    kind: Literal["numeric", "categorical"]
    categories: list[str] | None = None
    other: bool = False
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


def parse_times(values: pd.Series) -> pd.Series:
    """Dates and times as naive timestamps, the one reading of time that splits, derived features and the service
    share. ISO 8601 text (`2021-03-04`, a `T` or a space before the time, seconds, fractions, `Z` or an offset such
    as `+02:00`) and datetimes are read; a value with a zone becomes the UTC time it names, without the zone (so
    `10:00+02:00` is 08:00), and a value without one is taken as written. Other text is left to pandas' guess;
    what it cannot read is missing."""
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.dt.tz_convert(None)
    if pd.api.types.is_datetime64_dtype(values) or (
        pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    ):
        return pd.to_datetime(values, errors="coerce")
    when = pd.to_datetime(values, format="ISO8601", utc=True, errors="coerce")
    rest = when.isna() & values.notna()
    if rest.any():  # not ISO 8601: whatever pandas makes of it, as before ISO was read first
        when = when.where(~rest, pd.to_datetime(values[rest].astype(str), utc=True, errors="coerce"))
    return when.dt.tz_convert(None)


def derive_features(frame: pd.DataFrame, derived: list[DerivedFeature]) -> pd.DataFrame:
    """Add the configured derived columns (a new frame; the input is not changed)."""
    new: dict[str, pd.Series] = {}
    for spec in derived:
        column = frame[spec.source]
        if spec.kind == "clock_hour":
            new[spec.name] = clock_hour(column)
            continue
        when = parse_times(column)
        if spec.kind == "days":
            new[spec.name] = ((when - _EPOCH) / _DAY).astype("float64")
        else:
            new[spec.name] = getattr(when.dt, _DATE_PARTS[spec.kind]).astype("float64")
    return frame.assign(**new)


def fit_preprocessor(train: pd.DataFrame, features: list[str], config: PreprocessConfig) -> PreprocessorSpec:
    """Learn vocabularies, fill values and scales from the training split only."""
    frame = derive_features(train, config.derived)
    specs = []
    for name in features:
        column = frame[name]
        numeric = pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)
        if numeric and name not in config.categorical:
            values = column.astype("float64")
            fill = float(values.median()) if config.impute == "median" else None
            center, scale = _scaling(values, config.scale)
            specs.append(FeatureSpec(name=name, kind="numeric", fill=fill, center=center, scale=scale))
        else:
            specs.append(_categorical_spec(name, column, config))
    return PreprocessorSpec(derived=config.derived, features=specs)


def _categorical_spec(name: str, column: pd.Series, config: PreprocessConfig) -> FeatureSpec:
    """The levels to keep: all of them when there are at most `max_categories`; else the most frequent (each with
    at least `min_category_rows` rows) and one `other` level for the rest, `max_categories` in all (ties broken by
    the value, so the same data gives the same levels)."""
    counts = category_texts(column).value_counts()
    if len(counts) <= config.max_categories:
        return FeatureSpec(name=name, kind="categorical", categories=sorted(counts.index))
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    kept = [value for value, n in ordered[: config.max_categories - 1] if n >= config.min_category_rows]
    return FeatureSpec(name=name, kind="categorical", categories=[*sorted(kept), OTHER], other=True)


def category_texts(column: pd.Series) -> pd.Series:
    """Present values as the category texts training and serving compare (`_category_text`)."""
    present = column.dropna()
    if pd.api.types.is_string_dtype(present) and not pd.api.types.is_object_dtype(present):
        return present.astype(str)
    return present.map(_category_text)


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
            columns[feature.name] = pd.Series(_categories(column, feature), index=frame.index, name=feature.name)
    return pd.DataFrame(columns, index=frame.index)


def _categories(column: pd.Series, feature: FeatureSpec) -> pd.Categorical:
    """A column as the feature's categorical: each distinct value read as a category text once (`_category_text`),
    then every row coded from its value's code."""
    categories = feature.categories or []
    codes, uniques = pd.factorize(column)  # missing values: code -1
    position = {text: code for code, text in enumerate(categories)}
    unseen = position[OTHER] if feature.other else -1
    coded = np.array([position.get(_category_text(v), unseen) for v in uniques] + [-1], dtype=np.int64)
    return pd.Categorical.from_codes(coded[codes], categories=categories)


def _category_text(value: Any) -> str | None:
    """A value as a category: its text, and a whole float as an integer's (`3.0` is `3`, as a request writes it)."""
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


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


def encode_frame(spec: PreprocessorSpec, frame: pd.DataFrame) -> tuple[np.ndarray, dict[str, int]]:
    """Validated rows of a frame → the model's input as `encode_records` makes it from records (a float64 array,
    category codes in training-vocabulary order, missing and unseen as NaN), and the unseen categories per feature:
    the same numbers for many rows at once (the Python API's `predict`). Tests hold the two equal."""
    prepared = apply_preprocessor(spec, frame)
    out = np.empty((len(frame), len(spec.features)), dtype=np.float64)
    for j, feature in enumerate(spec.features):
        column = prepared[feature.name]
        if feature.kind == "numeric":
            out[:, j] = column.to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            codes = column.cat.codes.to_numpy()
            out[:, j] = np.where(codes < 0, np.nan, codes.astype(np.float64))
    return out, unseen_categories(spec, frame, prepared)


# The pandas-free path: the same spec, the same mapping, for a few validated records at a time (the service's hot
# path, where building a DataFrame costs more than the prediction). Tests hold it equal to `apply_preprocessor`.
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# The ISO timestamps both `datetime.fromisoformat` and pandas read alike (microseconds at most: pandas keeps more).
_ISO_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:?\d{2})?$")
_EPOCH_DATE = datetime(1970, 1, 1)
_MICROSECOND = timedelta(microseconds=1)
# `days` as pandas computes it: whole microseconds since 1970 divided by a day's, in float64 (bit-equal).
_PART = {"hour": lambda d: d.hour, "year": lambda d: d.year, "month": lambda d: d.month,
         "dayofweek": lambda d: d.weekday(), "dayofyear": lambda d: d.timetuple().tm_yday,
         "days": lambda d: float((d - _EPOCH_DATE) // _MICROSECOND) / 86_400e6}  # fmt: skip


def _clock_hour_value(value: Any) -> float:
    match = _CLOCK.match(str(value)) if value is not None else None
    if not match:
        return math.nan
    return float(int(match.group(1)) % 12 + (12 if match.group(2).lower() == "pm" else 0))


def _date_part_value(value: Any, kind: str) -> float:
    if value is None:
        return math.nan
    if isinstance(value, str) and _ISO_DATE.match(value):
        try:
            return float(_PART[kind](datetime.strptime(value, "%Y-%m-%d")))
        except ValueError:
            return math.nan
    if isinstance(value, str) and _ISO_TIME.match(value):
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            return math.nan
        if when.tzinfo is not None:  # parse_times' rule: the UTC time it names, without the zone
            when = when.astimezone(UTC).replace(tzinfo=None)
        return float(_PART[kind](when))
    # Anything else: pandas decides, exactly as derive_features does.
    return float(
        derive_features(pd.DataFrame({"v": [value]}), [DerivedFeature(name="p", source="v", kind=kind)])["p"].iloc[0]
    )  # type: ignore[arg-type]


def input_fields(spec: PreprocessorSpec) -> list[str]:
    """The record fields encoding reads: each derived feature's source, and every other feature."""
    derived = {d.name for d in spec.derived}
    return list(
        dict.fromkeys([d.source for d in spec.derived] + [f.name for f in spec.features if f.name not in derived])
    )


def record_columns(rows: list[dict[str, Any]], names: Iterable[str]) -> dict[str, list[Any]]:
    """Records → one list of values per named field: what `encode_columns` reads, and what the request log keeps
    (so a served request is taken apart once, and its records need not outlive it)."""
    return {name: [row[name] for row in rows] for name in names}


def encode_records(spec: PreprocessorSpec, rows: list[dict[str, Any]]) -> tuple[np.ndarray, dict[str, int]]:
    """Validated records → the model's input as a float64 array (category codes in training-vocabulary order,
    missing and unseen as NaN), and the unseen categories per feature: `apply_preprocessor` without pandas."""
    return encode_columns(spec, record_columns(rows, input_fields(spec)), len(rows))


def encode_columns(spec: PreprocessorSpec, fields: Mapping[str, list[Any]],
                   count: int) -> tuple[np.ndarray, dict[str, int]]:  # fmt: skip
    """`encode_records` for records already taken apart by `record_columns` (at least `input_fields`)."""
    columns: dict[str, list[Any]] = {}
    for derived in spec.derived:
        source = fields[derived.source]
        if derived.kind == "clock_hour":
            columns[derived.name] = [_clock_hour_value(v) for v in source]
        else:
            columns[derived.name] = [_date_part_value(v, derived.kind) for v in source]
    out = np.empty((count, len(spec.features)), dtype=np.float64)
    unseen: dict[str, int] = {}
    for j, feature in enumerate(spec.features):
        values = columns[feature.name] if feature.name in columns else fields[feature.name]
        if feature.kind == "numeric":
            array = np.array(values, dtype=np.float64)
            if feature.fill is not None:
                array[np.isnan(array)] = feature.fill
            out[:, j] = (array - feature.center) / feature.scale
        else:
            categories = feature.categories or []
            code = _codes(tuple(categories)).get
            # A value outside the levels: the `other` level of a capped feature, else missing (and counted unseen).
            absent = float(len(categories) - 1) if feature.other else math.nan
            # Validated category fields hold texts already; anything else is compared as its text, like pandas does.
            # Missing: None, or NaN (a derived category such as the hour of a date, where the date is missing).
            column = np.array([code(v, absent) if v.__class__ is str else math.nan if _missing(v)
                               else code(_category_text(v), absent) for v in values], dtype=np.float64)  # fmt: skip
            out[:, j] = column
            nans = 0 if feature.other else int(np.count_nonzero(np.isnan(column)))
            lost = nans - sum(1 for v in values if _missing(v)) if nans else 0  # counted only when something is NaN
            if lost:
                unseen[feature.name] = lost
    return out, unseen


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


@functools.lru_cache(maxsize=256)
def _codes(categories: tuple[str, ...]) -> dict[str, float]:
    return {c: float(i) for i, c in enumerate(categories)}
