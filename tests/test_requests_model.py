"""The request model generated from the pandera features schema gives pandera's verdict, record by record."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from mlcycle.schemas.adult import AdultFeatures
from mlcycle.schemas.api import record_model
from mlcycle.schemas.bike import BikeFeatures
from mlcycle.tasks.records import check_records
from tests.conftest import ADULT_RECORD, BIKE_RECORD, ROOT

ADULT_CASES: list[dict[str, Any]] = [
    {"age": "39"}, {"age": 39.0}, {"age": 39.5}, {"age": True}, {"age": "39.0"}, {"age": "x"}, {"age": None},
    {"age": 15}, {"age": 16}, {"age": 100}, {"age": 101}, {"age": -3}, {"age": 10**20}, {"age": []},
    {"fnlwgt": 0}, {"fnlwgt": 10_000_000}, {"fnlwgt": 10_000_001}, {"education_num": 0}, {"education_num": 16},
    {"hours_per_week": 99}, {"hours_per_week": 100}, {"capital_gain": 99_999}, {"capital_gain": 100_000},
    {"workclass": None}, {"workclass": "Private"}, {"workclass": "private"}, {"workclass": ""}, {"workclass": 5},
    {"workclass": True}, {"education": None}, {"sex": "X"}, {"sex": "Female"}, {"native_country": None},
    {"native_country": "Atlantis"}, {"occupation": ["Sales"]}, {"race": {"a": 1}},
]  # fmt: skip
BIKE_CASES: list[dict[str, Any]] = [
    {"temp": "6.1"}, {"temp": 6}, {"temp": True}, {"temp": None}, {"temp": 61}, {"temp": -40}, {"temp": "warm"},
    {"hum": 100.0}, {"hum": 100.5}, {"windspeed": -0.1}, {"dteday": "2012-02-30"}, {"dteday": "2012-02-29"},
    {"dteday": "2012-2-3"}, {"dteday": 5}, {"dteday": None}, {"hr": "6am"}, {"hr": 6}, {"hr": "13pm"},
    {"weekday": None}, {"weekday": "Monday"}, {"weathersit": None}, {"weathersit": "Snow"},
]  # fmt: skip


def _pandera_ok(records: list[dict[str, Any]], schema: Any) -> list[bool]:
    """Per record: does the pandera schema accept it (each record checked on its own)."""
    return [check_records([r], schema, 10)[0] is not None for r in records]


def _model_ok(records: list[dict[str, Any]], schema: Any) -> list[bool]:
    validator = record_model(schema)
    return [not validator.validate_python([r])[1] for r in records]


@pytest.mark.parametrize(("schema", "base", "cases", "golden"), [
    (AdultFeatures, ADULT_RECORD, ADULT_CASES, "adult"), (BikeFeatures, BIKE_RECORD, BIKE_CASES, "bike"),
])  # fmt: skip
def test_generated_model_accepts_and_refuses_exactly_what_pandera_does(schema, base, cases, golden) -> None:  # type: ignore[no-untyped-def]
    records = [{**base, **case} for case in cases]
    records += json.loads((ROOT / f"serving/examples/{golden}.json").read_text())
    records += [{k: v for k, v in base.items() if k != next(iter(base))}, {**base, "extra": 1}]  # missing, extra
    expected = _pandera_ok(records, schema)
    assert _model_ok(records, schema) == expected
    assert 0 < sum(expected) < len(expected)  # both verdicts occur among the cases


def test_non_finite_numbers_are_refused() -> None:
    validator = record_model(BikeFeatures)
    for value in (float("nan"), float("inf"), float("-inf")):
        _, errors = validator.validate_python([{**BIKE_RECORD, "hum": value}])
        assert [(e.record, e.field) for e in errors] == [(0, "hum")]


def test_errors_name_record_index_field_and_rule() -> None:
    validator = record_model(AdultFeatures)
    records = [ADULT_RECORD, {**ADULT_RECORD, "age": 200, "sex": "X"}, {**ADULT_RECORD, "colour": "red"}]
    _, errors = validator.validate_python(records)
    assert {(e.record, e.field, e.rule) for e in errors} == {
        (1, "age", "less_than_equal"), (1, "sex", "literal_error"), (2, "colour", "unexpected field")}  # fmt: skip
    assert all(e.message for e in errors)


def test_schema_own_checks_run_through_pandera() -> None:
    validator = record_model(BikeFeatures)
    assert "dteday" in validator.leftover  # is_calendar_date cannot be a pydantic constraint
    _, errors = validator.validate_python([BIKE_RECORD, {**BIKE_RECORD, "dteday": "2011-02-31"}])
    assert [(e.record, e.field, e.rule) for e in errors] == [(1, "dteday", "is_calendar_date")]


def test_openapi_schema_shows_types_ranges_categories_and_an_example() -> None:
    golden = json.loads((ROOT / "serving/examples/adult.json").read_text())
    schema = record_model(AdultFeatures, golden[0]).model.model_json_schema()
    props = schema["properties"]
    assert props["age"]["minimum"] == 16 and props["age"]["maximum"] == 100 and props["age"]["type"] == "integer"
    assert "Private" in props["workclass"]["anyOf"][0]["enum"] and props["workclass"]["anyOf"][1] == {"type": "null"}
    assert schema["additionalProperties"] is False and set(schema["required"]) == set(ADULT_RECORD)
    assert schema["example"] == golden[0]


def _full_python(records: list[dict[str, Any]], validator: Any) -> list[dict[str, Any]] | None:
    try:
        return [m.__dict__ for m in validator.adapter.validate_python(records)]
    except ValidationError:
        return None


def _full_json(body: bytes, validator: Any, limit: int = 10) -> list[dict[str, Any]] | None:
    """What the full path makes of a JSON body (the service's decoding: orjson, then json for NaN/Infinity)."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        try:
            parsed = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return None
    if not isinstance(parsed, dict) or set(parsed) != {"records"} or not isinstance(parsed["records"], list):
        return None
    return _full_python(parsed["records"], validator) if 1 <= len(parsed["records"]) <= limit else None


def _exact(rows: list[dict[str, Any]] | None) -> list[dict[str, str]] | None:
    return None if rows is None else [{k: repr(v) for k, v in r.items()} for r in rows]  # 39 ≠ 39.0, 0.0 ≠ -0.0


# Bodies the full path refuses (not JSON, wrong shape, over the limit): the strict tier must refuse them too.
REFUSED_BODIES = [b"\xef\xbb\xbf{\"records\": [%s]}", b"{\"records\": [%s]} x", b"{\"records\": [%s], \"extra\": 1}",
                  b"{\"records\": %s}", b"[%s]", b"{\"records\": [%s,]}", b"{\"records\": []}",
                  b"{\"records\": [%s, %s, %s]}"]  # fmt: skip


@pytest.mark.parametrize(("schema", "base", "cases", "golden"), [
    (AdultFeatures, ADULT_RECORD, ADULT_CASES, "adult"), (BikeFeatures, BIKE_RECORD, BIKE_CASES, "bike"),
])  # fmt: skip
def test_fast_tier_accepts_a_subset_of_the_full_model_with_identical_values(schema, base, cases, golden) -> None:  # type: ignore[no-untyped-def]
    validator = record_model(schema)
    goldens = json.loads((ROOT / f"serving/examples/{golden}.json").read_text())
    records = [{**base, **case} for case in cases] + goldens
    records += [{k: v for k, v in base.items() if k != next(iter(base))}, {**base, "extra": 1}]
    records += [{**base, name: value} for name in base for value in (-0.0, 2.0, 7, "7", None, False, float("nan"))]
    accepted = 0
    for record in records:
        try:
            fast = validator.fast_adapter.validate_python([record])
        except ValidationError:
            fast = None
        body = json.dumps({"records": [record]}).encode()  # NaN written as NaN, as common encoders do
        for got, full in ((fast, _full_python([record], validator)),
                          (validator.validate_json_fast(body, 10), _full_json(body, validator))):  # fmt: skip
            if got is not None:
                accepted += 1
                assert _exact(got) == _exact(full), record  # never more than the full model, never other values
    assert accepted > 2 * len(goldens)  # the strict tier does take the common case
    body = json.dumps({"records": goldens}).encode()
    assert _exact(validator.validate_json_fast(body, 100)) == _exact(_full_json(body, validator, 100)) is not None
    one = json.dumps(base).encode()
    assert validator.validate_json_fast(b' {"records": [%s, %s]}\n' % (one, one), 2) is not None
    for refused in REFUSED_BODIES:
        assert validator.validate_json_fast(refused.replace(b"%s", one), 2) is None, refused
