"""Validation: good rows pass with the schema's types, bad rows are quarantined with a reason each, and
whole-frame problems raise with the column named. Every input row is accounted for."""

from __future__ import annotations

import pandas as pd
import pytest

from mlcycle.schemas.adult import AdultFeatures, AdultSchema
from mlcycle.schemas.bike import BikeFeatures
from mlcycle.tasks.ingest.validate import SchemaContractError, reasons_by_row, validate_frame
from tests.conftest import ADULT_RECORD, BIKE_RECORD, adult_rows


def test_clean_frame_passes_with_schema_types() -> None:
    result = validate_frame(adult_rows(20), AdultSchema)
    assert len(result.valid) == 20
    assert result.quarantine.empty
    assert result.valid["age"].dtype == "int64"


def test_bad_rows_are_quarantined_with_column_check_and_value() -> None:
    frame = pd.DataFrame([
        ADULT_RECORD,
        {**ADULT_RECORD, "age": "abc"},
        {**ADULT_RECORD, "age": 200, "sex": "X"},
        {**ADULT_RECORD, "hours_per_week": float("inf")},
        {**ADULT_RECORD, "age": 39.5},
        {**ADULT_RECORD, "education": None},
    ])  # fmt: skip
    result = validate_frame(frame, AdultFeatures)
    assert list(result.valid.index) == [0]
    assert len(result.valid) + result.rows_quarantined == len(frame)
    reasons = dict(zip(*reasons_by_row(result.quarantine).to_dict("list").values(), strict=True))
    assert "age: coerce_dtype('int64') (abc)" in reasons[1]
    # Both failures of row 2 are reported, not only the first.
    assert "age: less_than_or_equal_to(100) (200)" in reasons[2]
    assert "sex: isin(['Female', 'Male']) (X)" in reasons[2]
    assert "hours_per_week" in reasons[3]
    assert reasons[4] == "age: is_integer (39.5)"
    assert "education: not_nullable" in reasons[5]


def test_missing_column_raises_naming_it() -> None:
    with pytest.raises(SchemaContractError, match=r"missing required column\(s\) \['age'\]"):
        validate_frame(adult_rows(5).drop(columns="age"), AdultSchema, what="adult.data")


def test_unexpected_and_duplicated_columns_raise() -> None:
    with pytest.raises(SchemaContractError, match=r"unexpected column\(s\) \['extra'\]"):
        validate_frame(adult_rows(5).assign(extra=1), AdultSchema)
    frame = adult_rows(5)
    doubled = pd.concat([frame, frame[["age"]]], axis=1)
    with pytest.raises(SchemaContractError, match="duplicated column"):
        validate_frame(doubled, AdultSchema)


def test_column_of_the_wrong_type_throughout_is_a_frame_error() -> None:
    with pytest.raises(SchemaContractError, match="column 'age' cannot be read"):
        validate_frame(adult_rows(5).assign(age="old"), AdultSchema, what="adult.data")


def test_wrong_type_throughout_in_a_request_names_every_record() -> None:
    result = validate_frame(adult_rows(3).assign(age="old"), AdultSchema, whole_frame_errors=False)
    assert result.valid.empty
    assert sorted(result.quarantine["row"].unique()) == [0, 1, 2]


def test_bike_dates_must_be_calendar_dates() -> None:
    frame = pd.DataFrame([BIKE_RECORD, {**BIKE_RECORD, "dteday": "2012-13-45"}, {**BIKE_RECORD, "weathersit": "Snow"}])
    result = validate_frame(frame, BikeFeatures)
    assert list(result.valid.index) == [0]
    checks = set(result.quarantine["check"])
    assert "is_calendar_date" in checks
    assert any(c.startswith("isin") for c in checks)


def test_missing_values_the_data_really_has_are_accepted() -> None:
    frame = pd.DataFrame([{**BIKE_RECORD, "weekday": None, "weathersit": None}])
    assert len(validate_frame(frame, BikeFeatures).valid) == 1
