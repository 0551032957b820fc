"""Records → a validated DataFrame through the pandera schema itself: the reference path.

The service validates with the request model generated from the same schema (schemas/api.py), which is faster;
this module is what it is held equal to (tests/test_requests_model.py) and what offline checks use. Both read a
model's request fields alike (`RequestFields`): a code field takes a whole number as its text, an ignored field is
optional and validated to None.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

import pandas as pd
import pandera.pandas as pa

from mlcycle.schemas.api import RequestFields, code_text, schema_codes
from mlcycle.tasks.ingest.validate import Validated, validate_frame
from mlcycle.tasks.preprocess import OTHER, PreprocessorSpec

_WHOLE = re.compile(r"^[+-]?\d+$")


def request_fields(schema: type[pa.DataFrameModel], preprocessor: PreprocessorSpec,
                   categorical: Iterable[str] = ()) -> RequestFields:  # fmt: skip
    """The request fields of a trained model (its fitted `preprocessor`; `categorical`: its config's
    `preprocess.categorical`): a text feature is a code when the config lists it as categorical or every level of
    its training vocabulary is a whole number ("95", "02134"); a field that is neither a model input nor the source
    of a derived one (a column the config drops) is ignored."""
    inputs = set(preprocessor.feature_names)
    read = inputs | {d.source for d in preprocessor.derived if d.name in inputs}
    declared = set(categorical) & read
    for feature in preprocessor.features:
        levels = [c for c in feature.categories or [] if c != OTHER]
        if feature.kind == "categorical" and levels and all(_WHOLE.match(c) for c in levels):
            declared.add(feature.name)
    return RequestFields(codes=schema_codes(schema, declared) & read,
                         ignored=frozenset(n for n in schema.to_schema().columns if n not in read))  # fmt: skip


@dataclass(frozen=True)
class RecordError:
    record: int
    field: str | None
    rule: str
    value: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"record": self.record, "field": self.field, "rule": self.rule, "value": self.value}


def check_records(
    records: Any, schema: type[pa.DataFrameModel], max_records: int, fields: RequestFields | None = None
) -> tuple[pd.DataFrame | None, list[RecordError]]:
    """Validate a JSON list of records against the features schema (`fields`: the model's codes and ignored
    fields; by default the schema's own codes, `record_model`'s default).

    Returns the validated frame, or None with one error per broken field of each broken record.
    """
    if not isinstance(records, list):
        return None, [RecordError(-1, None, "records must be a JSON list of objects")]
    if not records:
        return None, [RecordError(-1, None, "records is empty")]
    if len(records) > max_records:
        return None, [RecordError(-1, None, f"at most {max_records} records per request, got {len(records)}")]
    fields = fields or RequestFields(codes=schema_codes(schema))
    columns = list(schema.to_schema().columns)
    expected = [c for c in columns if c not in fields.ignored]
    errors: list[RecordError] = []
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            errors.append(RecordError(index, None, "record must be a JSON object"))
            continue
        errors += [RecordError(index, name, "missing field") for name in expected if name not in record]
        errors += [RecordError(index, str(name), "unexpected field") for name in record if name not in columns]
    if errors:
        return None, errors
    frame = pd.DataFrame.from_records([{c: r[c] for c in expected} for r in records], columns=expected)
    validated = validate_request_frame(frame, schema, fields, what="request")
    if not validated.quarantine.empty:
        ledger = validated.quarantine.sort_values(["row", "column"], kind="stable")
        return None, [RecordError(int(r.row), r.column, r.check, r.value) for r in ledger.itertuples()]
    return validated.valid.assign(**dict.fromkeys(sorted(fields.ignored))), []


def validate_request_frame(frame: pd.DataFrame, schema: type[pa.DataFrameModel], fields: RequestFields,
                           what: str = "request") -> Validated:  # fmt: skip
    """Validate request rows (a column per field the model reads) with the features schema, as the service does:
    code fields as `code_text` reads them (a boolean or a fraction there is quarantined under `type`), the ignored
    fields left out. `row` in the ledger is the frame's index label."""
    codes = [c for c in frame.columns if c in fields.codes]
    refused: list[dict[str, Any]] = []
    texts: dict[str, list[Any]] = {}
    for name in codes:
        values = []
        for label, value in frame[name].items():
            try:
                values.append(code_text(value))
            except ValueError:
                refused.append({"row": label, "column": name, "check": "type", "value": repr(value)})
                values.append(str(value))  # a placeholder, quarantined below whatever the schema says of it
        texts[name] = values
    frame = frame.assign(**{name: pd.Series(v, index=frame.index, dtype=object) for name, v in texts.items()})
    validated = validate_frame(frame, _reading(schema, fields.ignored), what=what, whole_frame_errors=False)
    if not refused:
        return validated
    cells = pd.DataFrame(refused)
    ledger = validated.quarantine
    placeholder = pd.MultiIndex.from_frame(ledger[["row", "column"]]).isin(
        pd.MultiIndex.from_frame(cells[["row", "column"]]))  # fmt: skip
    quarantine = pd.concat([ledger[~placeholder], cells], ignore_index=True)
    valid = validated.valid[~validated.valid.index.isin(cells["row"])]
    return Validated(valid=valid, quarantine=quarantine, rows_in=validated.rows_in)


@functools.cache
def _reading(schema: type[pa.DataFrameModel], ignored: frozenset[str]) -> type[pa.DataFrameModel]:
    """The schema without the fields the model ignores (the schema itself when there are none)."""
    if not ignored:
        return schema
    return cast("type[pa.DataFrameModel]", _Reading(schema, ignored))


class _Reading:
    """A features schema less some columns, as `validate_frame` reads a schema: `to_schema`, `validate`, a name.
    (A pandera `DataFrameModel` cannot drop a column of its own.)"""

    def __init__(self, schema: type[pa.DataFrameModel], ignored: frozenset[str]) -> None:
        self.__name__ = schema.__name__
        self._schema = schema.to_schema().remove_columns(sorted(ignored))

    def to_schema(self) -> pa.DataFrameSchema:
        return self._schema

    def validate(self, frame: pd.DataFrame, lazy: bool = False) -> pd.DataFrame:
        return self._schema.validate(frame, lazy=lazy)
