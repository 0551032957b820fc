"""Request checking, called directly: field-level reasons per record, never an exception."""

from __future__ import annotations

from mlcycle.schemas.adult import AdultFeatures
from mlcycle.tasks.records import check_records
from tests.conftest import ADULT_RECORD


def test_good_records_become_a_typed_frame() -> None:
    frame, errors = check_records([ADULT_RECORD, ADULT_RECORD], AdultFeatures, max_records=10)
    assert errors == []
    assert frame is not None and len(frame) == 2


def test_each_broken_record_is_named_with_its_field() -> None:
    records = [ADULT_RECORD, {**ADULT_RECORD, "age": -3}, {k: v for k, v in ADULT_RECORD.items() if k != "sex"},
               {**ADULT_RECORD, "colour": "red"}]  # fmt: skip
    frame, errors = check_records(records, AdultFeatures, max_records=10)
    assert frame is None
    found = {(e.record, e.field, e.rule) for e in errors}
    assert (2, "sex", "missing field") in found
    assert (3, "colour", "unexpected field") in found


def test_range_errors_name_record_and_field() -> None:
    _, errors = check_records([ADULT_RECORD, {**ADULT_RECORD, "age": -3}], AdultFeatures, max_records=10)
    assert [(e.record, e.field, e.rule) for e in errors] == [(1, "age", "greater_than_or_equal_to(16)")]


def test_too_many_and_non_object_records_are_refused() -> None:
    assert "at most 2 records" in check_records([ADULT_RECORD] * 3, AdultFeatures, max_records=2)[1][0].rule
    assert check_records([ADULT_RECORD, 7], AdultFeatures, max_records=5)[1][0].record == 1
    assert check_records([], AdultFeatures, max_records=5)[1][0].rule == "records is empty"
