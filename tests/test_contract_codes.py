"""The request contract matches the file: a code is taken as its number or its text, a column the model does not
read is optional and ignored, and a Parquet category stays a category. Each held alike by the strict JSON tier, the
full tier (uploads) and the pandera reference path. And the train summary counts the rows quarantined for a
missing target."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pytest
from pandera.typing import Series

from mlcycle.schemas.api import CODE_NOTE, RequestFields, record_model
from mlcycle.schemas.config import DerivedFeature
from mlcycle.serving.openapi import _nullable, upload_pattern
from mlcycle.tasks.ingest.draft import draft_dataset, schema_module
from mlcycle.tasks.preprocess import OTHER, FeatureSpec, PreprocessorSpec
from mlcycle.tasks.records import check_records, request_fields


class SurveyFeatures(pa.DataFrameModel):
    year: Series[str] = pa.Field()
    zip: Series[str] = pa.Field(nullable=True)
    grade: Series[str] = pa.Field(isin=["1", "2", "3"])
    region: Series[str] = pa.Field(nullable=True)
    age: Series[int] = pa.Field(ge=0)
    outcome_date: Series[str] = pa.Field(nullable=True)

    class Config:
        strict = True
        coerce = True


FIELDS = RequestFields(codes=frozenset({"year", "zip", "grade"}), ignored=frozenset({"outcome_date"}))
RECORD: dict[str, Any] = {"year": "95", "zip": "02134", "grade": "2", "region": "north", "age": 40}


def _tiers(record: dict[str, Any]) -> tuple[Any, Any, Any]:
    """What the strict JSON tier, the full tier and the pandera reference path make of one record (None: refused)."""
    validator = record_model(SurveyFeatures, fields=FIELDS)
    strict, errors = validator.validate_python([record], strict=True)
    full, full_errors = validator.validate_python([record], fast=False)
    frame, reference_errors = check_records([record], SurveyFeatures, 10, FIELDS)
    reference = None
    if frame is not None:
        reference = {k: (None if v is None or (isinstance(v, float) and np.isnan(v)) else v)
                     for k, v in frame.astype(object).iloc[0].items()}  # fmt: skip
    return (strict[0] if not errors else None, full[0] if not full_errors else None, reference)


@pytest.mark.parametrize("sent", [95, "95", 95.0])
def test_a_code_sent_as_a_number_or_as_text_is_the_same_code(sent: Any) -> None:
    strict, full, reference = _tiers({**RECORD, "year": sent, "grade": 3 if sent != "95" else "3"})
    assert strict is not None and strict == full
    assert strict["year"] == reference["year"] == "95" and strict["grade"] == reference["grade"] == "3"


def test_a_code_keeps_its_leading_zeros_only_as_text() -> None:
    assert _tiers({**RECORD, "zip": "02134"})[0]["zip"] == "02134"
    assert all(row["zip"] == "2134" for row in _tiers({**RECORD, "zip": 2134}))


@pytest.mark.parametrize("sent", [True, False, 95.5, float("inf"), [95]])
def test_a_code_refuses_booleans_and_fractions_in_every_tier(sent: Any) -> None:
    assert _tiers({**RECORD, "year": sent}) == (None, None, None)
    validator = record_model(SurveyFeatures, fields=FIELDS)
    _, errors = validator.validate_python([{**RECORD, "year": sent}], strict=True)
    assert [(e.record, e.field, e.rule) for e in errors] == [(0, "year", "type")]  # one error, not one per form
    assert "is not a code: send its text or a whole number" in errors[0].message


def test_a_code_of_allowed_values_checks_them_after_reading_the_number() -> None:
    assert _tiers({**RECORD, "grade": 4}) == (None, None, None)
    assert _tiers({**RECORD, "grade": 2})[0]["grade"] == "2"


def test_missing_codes_are_missing_and_not_a_number_only_outside_json() -> None:
    strict, full, reference = _tiers({**RECORD, "zip": None})
    assert strict["zip"] is full["zip"] is reference["zip"] is None
    strict, full, reference = _tiers({**RECORD, "zip": float("nan")})  # a pandas upload's missing value
    assert strict is None and full["zip"] is None and reference["zip"] is None


@pytest.mark.parametrize("value", [None, "2021-04-01", 17, {"any": ["thing"]}])
def test_a_field_the_model_does_not_read_is_optional_and_ignored(value: Any) -> None:
    record = {**RECORD, "outcome_date": value}
    assert all(row is not None and row["outcome_date"] is None for row in _tiers(record))
    assert all(row is not None and row["outcome_date"] is None for row in _tiers(RECORD))  # absent
    validator = record_model(SurveyFeatures, fields=FIELDS)
    body = json.dumps({"records": [RECORD, record]}).encode()
    rows = validator.validate_json_fast(body, 10)
    assert rows is not None and [r["outcome_date"] for r in rows] == [None, None]
    _, errors = validator.validate_python([{**RECORD, "colour": "red"}], strict=True)
    assert [(e.field, e.rule) for e in errors] == [("colour", "unexpected field")]  # others stay refused


def test_the_document_shows_a_code_as_text_or_a_whole_number() -> None:
    schema = record_model(SurveyFeatures, fields=FIELDS).model.model_json_schema()
    props = schema["properties"]
    assert props["year"]["anyOf"] == [{"type": "string"}, {"type": "integer"}]
    assert CODE_NOTE in props["year"]["description"]
    assert props["grade"]["anyOf"] == [
        {"type": "string", "enum": ["1", "2", "3"]},
        {"type": "integer", "enum": [1, 2, 3]},
    ]
    assert (
        "outcome_date" not in schema["required"]
        and "not read by this model" in props["outcome_date"]["description"].lower()
    )
    document = _nullable(schema)  # OpenAPI 3.0: each form of a nullable code may be null
    assert document["properties"]["zip"]["anyOf"] == [{"type": "string", "nullable": True},
                                                      {"type": "integer", "nullable": True}]  # fmt: skip
    pattern = upload_pattern(document, set())
    assert pattern is not None and "outcome_date" not in pattern
    assert re.fullmatch(pattern, "year,zip,grade,region,age\n95,,2,xnorth,40\nxab,2134,3,,0")
    assert not re.fullmatch(pattern, "year,zip,grade,region,age\n95,,7,xnorth,40")


def test_request_fields_name_codes_from_the_vocabulary_and_ignore_what_the_model_does_not_read() -> None:
    spec = PreprocessorSpec(
        derived=[DerivedFeature(name="visit_month", source="visit", kind="month")],
        features=[FeatureSpec(name="year", kind="categorical", categories=["91", "95", OTHER], other=True),
                  FeatureSpec(name="zip", kind="categorical", categories=["02134", "10001"]),
                  FeatureSpec(name="region", kind="categorical", categories=["north", "south"]),
                  FeatureSpec(name="age", kind="numeric"), FeatureSpec(name="visit_month", kind="numeric")],
    )  # fmt: skip

    class Visits(SurveyFeatures):
        visit: Series[str] = pa.Field()
        leak: Series[float] = pa.Field()

    fields = request_fields(Visits, spec)
    assert fields.codes == {"year", "zip"}  # grade (isin of whole numbers) is a code, but not read
    assert fields.ignored == {"grade", "outcome_date", "leak"}  # the derived feature's source stays required
    assert request_fields(Visits, spec, categorical=["region"]).codes == {"year", "zip", "region"}


def test_a_parquet_category_of_small_integers_stays_a_category(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 400
    frame = pd.DataFrame({
        "puma": pd.Categorical(rng.integers(100, 140, n)),  # 40 small integers: a quantity if it were not a category
        "grade": pd.Categorical(rng.choice(["1", "2", "NA"], n)), "income": rng.normal(size=n).round(3),
        "visits": rng.integers(0, 400, n), "y": rng.choice(["no", "yes"], n),
    })  # fmt: skip
    frame.to_parquet(tmp_path / "survey.parquet")
    draft = draft_dataset(tmp_path / "survey.parquet", "y")
    kinds = {c.name: c.kind for c in draft.columns}
    assert kinds["puma"] == kinds["grade"] == "category" and kinds["visits"] == "integer"
    grade = next(c for c in draft.columns if c.name == "grade")
    assert "NA" not in grade.missing_tokens and not grade.nullable  # `NA` is a level of a category
    module = schema_module(draft)
    assert re.search(r"puma: Series\[str\]", module) and re.search(r"visits: Series\[int\]", module)


def test_the_train_summary_counts_rows_quarantined_at_ingest_for_a_missing_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from types import SimpleNamespace

    from mlcycle.flows.training import quarantine_line, quarantined_task
    from mlcycle.schemas.config import PipelineConfig
    from mlcycle.tasks.ingest.admit import admit_batch
    from mlcycle.tasks.ingest.read import FileInput
    from mlcycle.tasks.ingest.store import DatasetStore
    from mlcycle.tasks.ingest.validate import Validated

    monkeypatch.setenv("MLCYCLE_HOME", str(tmp_path))
    config = PipelineConfig.model_validate({
        "name": "trips", "schema_ref": "tests.test_contract_codes:TripsSchema",
        "features_schema_ref": "tests.test_contract_codes:TripsSchema", "target": "delay", "task": "regression",
        "source": {"files": [{"path": "unused.csv"}]}, "ingest": {"max_quarantine_rate": 0.9},
        "split": {"strategy": "random"},
    })  # fmt: skip
    path = tmp_path / "trips.csv"
    path.write_text("distance,delay\n3.5,12\n4.0,\n-1,3\n8.2,\n6.1,0\n")  # two cancelled trips, one bad distance
    result = admit_batch(FileInput(str(path)), config, DatasetStore.for_dataset("trips"), TripsSchema)
    assert result.record is not None
    snapshot = SimpleNamespace(batch_ids=(result.record.batch_id,))
    counted = quarantined_task.fn(snapshot, config)
    assert (counted.rows, counted.no_target) == (3, 2)
    curated = Validated(valid=pd.DataFrame(), quarantine=pd.DataFrame({"row": []}), rows_in=2)
    assert quarantine_line(curated, counted).startswith("quarantined at ingest 3 (2 without a target)")


class TripsSchema(pa.DataFrameModel):
    distance: Series[float] = pa.Field(ge=0)
    delay: Series[float] = pa.Field()

    class Config:
        strict = True
        coerce = True
