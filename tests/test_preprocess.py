"""The preprocessing that travels with the model: fitted on training rows only, plain data, one apply path."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mlcycle.schemas.config import DerivedFeature, PreprocessConfig
from mlcycle.tasks.preprocess import (
    PreprocessorSpec,
    apply_preprocessor,
    clock_hour,
    fit_preprocessor,
    unseen_categories,
)

TRAIN = pd.DataFrame(
    {"colour": ["red", "blue", None, "red"], "size": [1.0, 2.0, 3.0, np.nan], "hr": ["12am", "1pm", "6am", "11pm"]}
)


def test_clock_hours_parse() -> None:
    assert clock_hour(pd.Series(["12am", "1am", "12pm", "11pm", "noon"])).tolist()[:4] == [0, 1, 12, 23]
    assert np.isnan(clock_hour(pd.Series(["noon"])).iloc[0])


def test_vocabulary_comes_from_training_and_unseen_becomes_missing() -> None:
    spec = fit_preprocessor(TRAIN, ["colour", "size"], PreprocessConfig())
    new = pd.DataFrame({"colour": ["green", "red"], "size": [5.0, 1.0]})
    prepared = apply_preprocessor(spec, new)
    assert list(prepared["colour"].cat.categories) == ["blue", "red"]
    assert prepared["colour"].isna().tolist() == [True, False]
    assert unseen_categories(spec, new, prepared) == {"colour": 1}


def test_spec_is_plain_json_and_round_trips() -> None:
    config = PreprocessConfig(impute="median", scale="standard",
                              derived=[DerivedFeature(name="hour", source="hr", kind="clock_hour")])  # fmt: skip
    spec = fit_preprocessor(TRAIN, ["colour", "size", "hour"], config)
    again = PreprocessorSpec.model_validate(json.loads(spec.model_dump_json()))
    pd.testing.assert_frame_equal(apply_preprocessor(spec, TRAIN), apply_preprocessor(again, TRAIN))


@pytest.mark.parametrize("scale", ["standard", "minmax", "robust"])
def test_scaling_uses_training_statistics_and_imputes_the_median(scale: str) -> None:
    spec = fit_preprocessor(TRAIN, ["size"], PreprocessConfig(impute="median", scale=scale))
    prepared = apply_preprocessor(spec, TRAIN)["size"]
    assert not prepared.isna().any()  # the missing size got the training median, 2.0
    feature = spec.features[0]
    assert prepared.iloc[3] == pytest.approx((2.0 - feature.center) / feature.scale)


def test_apply_does_not_change_its_input() -> None:
    spec = fit_preprocessor(TRAIN, ["colour", "size"], PreprocessConfig(scale="standard"))
    before = TRAIN.copy()
    apply_preprocessor(spec, TRAIN)
    pd.testing.assert_frame_equal(TRAIN, before)


def test_timestamp_parts_are_derived_the_same_way_for_any_frame() -> None:
    config = PreprocessConfig(
        derived=[DerivedFeature(name=n, source="at", kind=n) for n in ("hour", "month", "dayofweek")]
    )  # type: ignore[arg-type]
    spec = fit_preprocessor(pd.DataFrame({"at": ["2012-03-05 17:30:00"]}), ["hour", "month", "dayofweek"], config)
    prepared = apply_preprocessor(spec, pd.DataFrame({"at": ["2012-03-05 17:30:00", "2011-12-31 00:10:00"]}))
    assert prepared.to_dict("list") == {"hour": [17.0, 0.0], "month": [3.0, 12.0], "dayofweek": [0.0, 5.0]}
