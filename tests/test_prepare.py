"""Splitting and feature choice: no target or dropped column as a feature, no future row in training."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlcycle.schemas import load_config
from mlcycle.tasks.train.prepare import (
    LeakageError,
    Splits,
    check_time_order,
    encode_target,
    feature_columns,
    find_leaks,
    split_frame,
    time_key,
)
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


def test_ids_are_never_features() -> None:
    config = load_config(ROOT / "configs/adult.yaml", {"ids": ["person_id"]})
    assert "person_id" not in feature_columns(["person_id", "age", "income"], config)


def test_a_split_that_trains_on_the_future_is_refused() -> None:
    frame = pd.DataFrame({"d": ["2012-01-01", "2012-01-02", "2012-01-03"]})
    bad = Splits(train=frame.iloc[[2]], valid=frame.iloc[[1]], test=frame.iloc[[0]])
    with pytest.raises(LeakageError, match="leaks the future"):
        check_time_order(bad, ["d"])
    check_time_order(Splits(train=frame.iloc[[0]], valid=frame.iloc[[1]], test=frame.iloc[[2]]), ["d"])


def _bike_frame(n: int = 200) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    casual = rng.integers(0, 50, n)
    registered = rng.integers(0, 300, n)
    return pd.DataFrame({"temp": rng.normal(15, 8, n), "casual": casual, "registered": registered,
                         "cnt": casual + registered, "season": rng.choice(["spring", "fall"], n)})  # fmt: skip


def test_near_copies_of_the_target_are_flagged_alone_and_as_a_sum() -> None:
    config = load_config(ROOT / "configs/bike.yaml", {"drop": ["dteday", "hr"]})
    frame = _bike_frame()
    splits = Splits(train=frame.iloc[:150], valid=frame.iloc[150:175], test=frame.iloc[175:])
    report = find_leaks(splits, ["temp", "casual", "registered", "season"], config)
    flagged = [s["columns"] for s in report.suspects]
    assert ["registered"] in flagged
    assert ["casual", "registered"] in flagged
    assert ["temp"] not in flagged


def test_a_likely_leak_fails_the_run_when_configured() -> None:
    config = load_config(ROOT / "configs/bike.yaml", {"split.on_leak": "fail"})
    frame = _bike_frame()
    splits = Splits(train=frame.iloc[:150], valid=frame.iloc[150:175], test=frame.iloc[175:])
    with pytest.raises(LeakageError, match="likely leak"):
        find_leaks(splits, ["temp", "casual", "registered"], config)


def test_a_categorical_that_gives_away_the_label_is_flagged() -> None:
    config = load_config(ROOT / "configs/adult.yaml")
    frame = adult_rows(80).assign(code=lambda f: np.where(f["income"] == ">50K", "A", "B"))
    splits = Splits(train=frame.iloc[:60], valid=frame.iloc[60:70], test=frame.iloc[70:])
    assert ["code"] in [s["columns"] for s in find_leaks(splits, ["code", "age", "sex"], config).suspects]


def test_rows_repeated_across_splits_are_counted() -> None:
    config = load_config(ROOT / "configs/adult.yaml")
    frame = adult_rows(40)
    splits = Splits(train=frame.iloc[:30], valid=frame.iloc[[0, 1, 30]], test=frame.iloc[[2, 31, 32]])
    assert find_leaks(splits, ["age"], config).duplicated_in_train == {"valid": 2, "test": 1}
