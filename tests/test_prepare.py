"""Splitting and feature choice: no target or dropped column as a feature, no future row in training."""

from __future__ import annotations

import pandas as pd
import pytest

from schemas import load_config
from tasks.prepare import LeakageError, encode_target, feature_columns, split_frame, time_key
from tests.conftest import BIKE_RECORD, ROOT, adult_rows


def test_features_exclude_target_and_dropped_columns() -> None:
    bike = load_config(ROOT / "configs/bike.yaml")
    features = feature_columns([*BIKE_RECORD, "casual", "registered", "cnt"], bike)
    assert not {"cnt", "casual", "registered", "dteday", "hr"} & set(features)
    assert {"hour", "month", "temp", "season"} <= set(features)


def test_stratified_split_keeps_the_class_balance_and_pins_the_official_test_part() -> None:
    config = load_config(ROOT / "configs/adult.yaml", {"split.valid_size": 0.25})
    frame = adult_rows(80)
    part = pd.Series(["test" if i >= 60 else "" for i in range(80)])
    splits = split_frame(frame, part, config)
    assert list(splits.test.index) == list(range(60, 80))
    assert splits.sizes() == {"train": 45, "valid": 15, "test": 20}
    assert set(splits.train.index).isdisjoint(splits.valid.index)
    assert (splits.valid["income"] == ">50K").mean() == pytest.approx(0.25, abs=0.07)


def test_time_split_never_trains_on_a_later_moment() -> None:
    config = load_config(ROOT / "configs/bike.yaml")
    days = pd.date_range("2011-01-01", periods=50, freq="D").strftime("%Y-%m-%d")
    frame = pd.DataFrame([{**BIKE_RECORD, "dteday": d, "hr": h, "cnt": 1} for d in days for h in ("6am", "5pm")])
    frame = frame.sample(frac=1.0, random_state=0)  # the real file is shuffled too
    splits = split_frame(frame, pd.Series("", index=frame.index), config)
    key = time_key(frame, ["dteday", "hr"])
    assert key[splits.train.index].max() < key[splits.valid.index].min()
    assert key[splits.valid.index].max() < key[splits.test.index].min()
    assert sum(splits.sizes().values()) == len(frame)


def test_time_key_combines_date_and_clock_hour() -> None:
    frame = pd.DataFrame({"d": ["2012-01-01", "2012-01-01"], "h": ["12am", "11pm"]})
    assert time_key(frame, ["d", "h"]).dt.hour.tolist() == [0, 23]


def test_time_split_without_a_time_per_row_is_refused() -> None:
    frame = pd.DataFrame({"d": ["2012-01-01", "not a date"]})
    with pytest.raises(LeakageError, match="give no time for rows"):
        time_key(frame, ["d"])


def test_binary_target_is_one_for_the_positive_label() -> None:
    config = load_config(ROOT / "configs/adult.yaml")
    assert encode_target(pd.Series([">50K", "<=50K"]), config).tolist() == [1.0, 0.0]
