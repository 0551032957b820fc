"""Prepare: choose the features and split the rows without leaking the target or the future."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from schemas.config import PipelineConfig, SplitConfig
from tasks.preprocess import clock_hour

log = logging.getLogger("mlcycle.prepare")


class LeakageError(ValueError):
    """A split or a feature list would let training see what it must not."""


@dataclass(frozen=True)
class Splits:
    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "valid": len(self.valid), "test": len(self.test)}


def feature_columns(columns: list[str], config: PipelineConfig) -> list[str]:
    """The model's inputs: every column and derived feature except the target and the `drop` list."""
    derived = [d.name for d in config.preprocess.derived]
    excluded = {config.target, *config.drop}
    features = [c for c in [*columns, *derived] if c not in excluded]
    if config.target in features:
        raise LeakageError(f"the target {config.target!r} cannot be a feature")
    return features


def encode_target(values: pd.Series, config: PipelineConfig) -> np.ndarray:
    """The label as the model sees it: 1/0 for the positive class of a binary task, the number otherwise."""
    if config.task == "binary":
        return (values.astype("string") == config.positive_label).to_numpy(dtype="float64")
    return values.to_numpy(dtype="float64")


def split_frame(frame: pd.DataFrame, part: pd.Series, config: PipelineConfig) -> Splits:
    """Split into train / valid / test.

    Rows the source pins to `test` (an official test file) form the test set; otherwise the test set is cut by
    the configured strategy. A time split orders rows by `time_columns` and keeps every later moment out of
    training; rows of the same moment never straddle two splits.
    """
    split = config.split
    pinned = part.reindex(frame.index).fillna("") == "test"
    if split.strategy == "time":
        return _time_split(frame, split, has_test=bool(pinned.any()), pinned=pinned)
    rest, test = (frame[~pinned], frame[pinned]) if pinned.any() else _cut(frame, split.test_size, config)
    valid_share = split.valid_size if pinned.any() else split.valid_size / (1 - split.test_size)
    train, valid = _cut(rest, valid_share, config)
    return Splits(train=train, valid=valid, test=test)


def _cut(frame: pd.DataFrame, share: float, config: PipelineConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    stratify = frame[config.target] if config.split.strategy == "stratified" else None
    first, second = train_test_split(frame, test_size=share, random_state=config.seed, stratify=stratify)
    return first.sort_index(), second.sort_index()


def time_key(frame: pd.DataFrame, columns: list[str]) -> pd.Series:
    """A timestamp per row: the first column is a date or datetime, later ones add hours (numbers or '6am')."""
    key = pd.to_datetime(frame[columns[0]], errors="coerce")
    for column in columns[1:]:
        values = frame[column]
        hours = values.astype("float64") if pd.api.types.is_numeric_dtype(values) else clock_hour(values)
        key = key + pd.to_timedelta(hours, unit="h")
    if key.isna().any():
        bad = frame.index[key.isna()][:5].tolist()
        raise LeakageError(f"time columns {columns} give no time for rows {bad}; a time split needs one per row")
    return key


def _time_split(frame: pd.DataFrame, split: SplitConfig, has_test: bool, pinned: pd.Series) -> Splits:
    key = time_key(frame, split.time_columns)
    if has_test:
        rest, test = frame[~pinned], frame[pinned]
        if key[~pinned].max() > key[pinned].min():
            raise LeakageError("the pinned test rows are not all later than the training rows")
        valid_cut = key[~pinned].quantile(1 - split.valid_size / (1 - split.test_size))
        return Splits(train=rest[key[~pinned] < valid_cut], valid=rest[key[~pinned] >= valid_cut], test=test)
    test_cut = key.quantile(1 - split.test_size)
    valid_cut = key.quantile(1 - split.test_size - split.valid_size)
    order = key.sort_values(kind="stable").index
    ordered = frame.loc[order]
    ordered_key = key.loc[order]
    splits = Splits(
        train=ordered[ordered_key < valid_cut],
        valid=ordered[(ordered_key >= valid_cut) & (ordered_key < test_cut)],
        test=ordered[ordered_key >= test_cut],
    )
    log.info("time split at %s (valid) and %s (test)", valid_cut, test_cut)
    return splits
