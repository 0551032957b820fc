"""The service's request model, generated from the dataset's pandera features schema.

One contract: the pandera `DataFrameModel` that validates training rows also defines what a request record may
hold. `record_model` turns its columns into a pydantic model (types, nullability, ranges and allowed categories, so
they show in the OpenAPI document) that pydantic-core validates in microseconds per record, without pandas. Checks
pydantic cannot express (a schema's own `@pa.check` functions) run afterwards, once per request, on the column of
values, through pandera itself; `RecordValidator.validate` returns the same verdict the pandera schema gives.

Validation has two tiers. Most fields of that model need a Python `BeforeValidator` (pandera's coercions: "39" is an
integer, 5 is the text "5"), so pydantic-core calls back into Python per field per record. Beside it, `record_model`
builds a strict model that pydantic-core checks without leaving Rust (strict int, str, float and bool, the same
ranges, categories and nullability; only a `str_matches` pattern stays a Python check): it accepts a subset of what
the full model accepts, with identical values (tests/test_requests_model.py holds it to that).

The strict model is also the contract of a JSON request: JSON has types, the OpenAPI document states them, and a
client generated from it sends them, so the service gives the strict tier's verdict and errors on JSON records
(`validate_python(strict=True)`, after `validate_json_fast` on the raw bytes, which accepts the well-formed ones
without reaching Python per field). The full model, with pandera's coercions, gives the verdict on rows that have no
types of their own: CSV and Parquet uploads read by pandas.
"""

from __future__ import annotations

import functools
import math
import re
import reprlib
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import pandera.pandas as pa
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    TypeAdapter,
    ValidationError,
    create_model,
)
from typing_extensions import TypedDict

# Checks expressed as pydantic constraints: pandera check name → (pydantic keyword, statistic).
_BOUNDS = {
    "greater_than_or_equal_to": [("ge", "min_value")],
    "greater_than": [("gt", "min_value")],
    "less_than_or_equal_to": [("le", "max_value")],
    "less_than": [("lt", "max_value")],
}
_INTEGER_TEXT = re.compile(r"^[+-]?\d+$")
# An invalid value as an error message quotes it: short, and safe for values nested a thousand levels deep.
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlist, _REPR.maxdict = 3, 60, 60, 5, 5


def _integer(value: Any) -> Any:
    # pandera coerces "39" and 39.0 to 39 but refuses True, "39.0" and 39.5; pydantic's lax int would take them.
    if isinstance(value, bool):
        raise ValueError("a boolean is not an integer")
    if isinstance(value, str) and not _INTEGER_TEXT.match(value.strip()):
        raise ValueError(f"{value!r} is not an integer")
    return value


def _nullable_float(value: Any) -> Any:
    # A NaN in a nullable float column is a missing value to pandera.
    return None if isinstance(value, float) and math.isnan(value) else value


def _text(value: Any) -> Any:
    # pandera coerces numbers to text (5 → "5") before its checks; booleans likewise ("True").
    return str(value) if isinstance(value, int | float) else value


def _field_type(column: pa.Column, strict: bool = False) -> tuple[Any, dict[str, Any], list[pa.Check]]:
    """The pydantic type and constraints of one pandera column, and the checks left for pandera to run.

    `strict`: the fast tier's type, checked by pydantic-core alone: exact JSON types (no pandera coercions), the
    same constraints; it accepts a subset of what the full type accepts, with identical values."""
    dtype = str(column.dtype).lower()
    constraints: dict[str, Any] = {}
    leftover: list[pa.Check] = []
    allowed: list[Any] | None = None
    pattern: str | None = None
    for check in column.checks:
        stats = check.statistics or {}
        if check.name in _BOUNDS:
            for keyword, stat in _BOUNDS[check.name]:
                constraints[keyword] = stats[stat]
        elif check.name == "in_range":
            constraints["ge" if stats.get("include_min", True) else "gt"] = stats["min_value"]
            constraints["le" if stats.get("include_max", True) else "lt"] = stats["max_value"]
        elif check.name == "isin":
            allowed = list(stats["allowed_values"])
        elif check.name == "str_matches":
            pattern = str(stats["pattern"])
        else:
            leftover.append(check)
    validators: list[Any] = []
    if allowed is not None:
        base: Any = Literal[tuple(allowed)]  # type: ignore[valid-type]
        if all(isinstance(v, str) for v in allowed) and not strict:  # a literal of texts takes texts only
            validators.append(BeforeValidator(_text))
    elif dtype.startswith(("int", "uint")):
        base = int
        validators.append(Strict() if strict else BeforeValidator(_integer))
    elif dtype.startswith("float"):
        base = float
        constraints["allow_inf_nan"] = False
        if strict:
            validators.append(Strict())  # an int is still a float, as 2 → 2.0 in the full type
        elif column.nullable:
            validators.append(BeforeValidator(_nullable_float))
    elif dtype.startswith("bool"):
        base = bool
        if strict:
            validators.append(Strict())
    else:
        base = str
        validators.append(Strict() if strict else BeforeValidator(_text))
    if pattern is not None:
        # pandera's str_matches is re.match (anchored at the start); Python's re keeps the dialect identical.
        validators.append(AfterValidator(_matcher(pattern)) if strict else BeforeValidator(_matcher(pattern)))
        constraints.setdefault("json_schema_extra", {"pattern": pattern})
    kind = Annotated[base, *validators] if validators else base  # type: ignore[valid-type]
    if column.nullable:
        kind = kind | None
    return kind, constraints, leftover


def _matcher(pattern: str) -> Any:
    compiled = re.compile(pattern)

    def check(value: Any) -> Any:
        text = str(value) if isinstance(value, int | float) else value
        if isinstance(text, str) and not compiled.match(text):
            raise ValueError(f"{text!r} does not match {pattern!r}")
        return text

    return check


@dataclass(frozen=True)
class FieldError:
    """One reason a record was refused: which record, which field, which rule, in words."""

    record: int | None
    field: str | None
    rule: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"record": self.record, "field": self.field, "rule": self.rule, "message": self.message}


@dataclass
class RecordValidator:
    """Validates JSON records against a features schema without pandas, with pandera's verdict."""

    schema: type[pa.DataFrameModel]
    model: type[BaseModel]
    fields: list[str]
    leftover: dict[str, list[pa.Check]] = field(default_factory=dict)
    fast: type | None = None  # the strict tier's record type (a TypedDict); None: the full model only
    _requests: dict[int, TypeAdapter[Any]] = field(default_factory=dict, repr=False)  # fast request type per limit

    def validate_python(self, records: list[Any], fast: bool = True,
                        strict: bool = False) -> tuple[list[dict[str, Any]], list[FieldError]]:  # fmt: skip
        """Validated records as dicts, or the errors of every broken record (index and field named).

        `fast=False` skips the strict tier (for records it has already refused). `strict=True` gives the strict
        tier's verdict alone: JSON's own types, as the OpenAPI document states them (no pandera coercions)."""
        rows: list[dict[str, Any]] | None = None
        if strict and self.fast is not None:
            try:
                rows = self.fast_adapter.validate_python(records)
            except ValidationError as exc:
                return [], pydantic_errors(exc)
            return rows, self.check_leftover(rows)
        if fast and self.fast is not None:
            try:
                rows = self.fast_adapter.validate_python(records)
            except ValidationError:  # not necessarily wrong: the full model decides
                rows = None
        if rows is None:
            try:
                rows = [m.__dict__ for m in self.adapter.validate_python(records)]
            except ValidationError as exc:  # one pass over all records: every broken record is reported
                return [], pydantic_errors(exc)
        return rows, self.check_leftover(rows)

    def validate_json_fast(self, body: bytes, max_records: int) -> list[dict[str, Any]] | None:
        """The records of a raw JSON body `{"records": [...]}` (1 to `max_records`) that the strict tier accepts
        in full, parsed and validated in one pass without Python objects in between; None for anything else
        (malformed JSON, wrong shape, too many records, a record the strict tier refuses), which the caller
        hands to the full path for the verdict and the errors. The schema's own checks are not run here."""
        if self.fast is None:
            return None
        try:
            return self._request_adapter(max_records).validate_json(body)["records"]  # type: ignore[no-any-return]
        except ValidationError:
            return None

    @functools.cached_property
    def adapter(self) -> TypeAdapter[list[Any]]:
        return TypeAdapter(list[self.model])  # type: ignore[name-defined]

    @functools.cached_property
    def fast_adapter(self) -> TypeAdapter[list[Any]]:
        return TypeAdapter(list[self.fast])  # type: ignore[name-defined]

    def _request_adapter(self, max_records: int) -> TypeAdapter[Any]:
        adapter = self._requests.get(max_records)
        if adapter is None:
            records = Annotated[list[self.fast], Field(min_length=1, max_length=max_records)]  # type: ignore[name-defined]
            request = TypedDict(f"{self.model.__name__}FastRequest", {"records": records})  # type: ignore[misc]  # noqa: UP013
            request.__pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[attr-defined]
            adapter = self._requests[max_records] = TypeAdapter(request)
        return adapter

    def check_leftover(self, rows: list[dict[str, Any]]) -> list[FieldError]:
        """Run the schema's own checks (those pydantic cannot express) through pandera, one column at a time."""
        if not self.leftover or not rows:
            return []
        import pandas as pd

        errors = []
        for name, checks in self.leftover.items():
            present = [(i, r[name]) for i, r in enumerate(rows) if r[name] is not None]
            if not present:
                continue
            values = pd.Series([v for _, v in present])
            for check in checks:
                passed = check(values).check_output
                errors += [FieldError(present[j][0], name, check.name, f"{present[j][1]!r} fails {check.name}")
                           for j in range(len(present)) if not bool(passed.iloc[j])]  # fmt: skip
        return sorted(errors, key=lambda e: (e.record or 0, e.field or ""))


def pydantic_errors(exc: ValidationError, offset: tuple[Any, ...] = ()) -> list[FieldError]:
    """Pydantic's errors as record index + field + rule + message."""
    found = []
    for error in exc.errors(include_url=False, include_context=False):
        loc = (*offset, *error["loc"])
        record = next((p for p in loc if isinstance(p, int)), None)
        names = [p for p in loc if isinstance(p, str) and p != "records"]
        name = names[0] if names else None
        kind = error["type"]
        rule = {"missing": "missing field", "extra_forbidden": "unexpected field"}.get(kind, kind)
        message = error["msg"].removeprefix("Value error, ")
        if kind == "missing":
            message = f"field {name!r} is missing"
        elif kind == "extra_forbidden":
            message = f"field {name!r} is not in the schema"
        elif kind == "literal_error":
            message = f"{_REPR.repr(error.get('input'))} is not an allowed value"
        elif kind == "value_error":
            rule = "type"
        elif kind not in ("missing", "extra_forbidden"):
            message = f"{message} (got {_REPR.repr(error.get('input'))})"
        found.append(FieldError(record, name, rule, message))
    return found


def record_model(schema: type[pa.DataFrameModel], example: dict[str, Any] | None = None) -> RecordValidator:
    """Generate the request record model of a pandera features schema (strict: no missing, no extra fields)."""
    frame_schema = schema.to_schema()
    definitions: dict[str, Any] = {}
    strict: dict[str, Any] = {}
    leftover: dict[str, list[pa.Check]] = {}
    for name, column in frame_schema.columns.items():
        kind, constraints, rest = _field_type(column)
        description = column.description or None
        definitions[name] = (kind, Field(..., description=description, **constraints))
        fast_kind, fast_constraints, _ = _field_type(column, strict=True)
        fast_constraints.pop("json_schema_extra", None)
        strict[name] = Annotated[fast_kind, Field(**fast_constraints)] if fast_constraints else fast_kind
        if rest:
            leftover[name] = rest
    config = ConfigDict(extra="forbid", json_schema_extra={"example": example} if example else None)
    model = create_model(f"{schema.__name__}Record", __config__=config, **definitions)
    model.__doc__ = (schema.__doc__ or "").strip() or None
    fast = TypedDict(f"{schema.__name__}FastRecord", strict)  # type: ignore[misc]  # validates to plain dicts
    fast.__pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[attr-defined]
    return RecordValidator(schema=schema, model=model, fields=list(frame_schema.columns), leftover=leftover,
                           fast=fast)  # fmt: skip
