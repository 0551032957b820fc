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

Two kinds of field depart from the schema's plain types, in both tiers alike, and the OpenAPI document says so:

- A code (a text field whose values are whole numbers: a year "95", a zip code "02134", a text `isin` of such
  values; a model names them from its training vocabulary and `preprocess.categorical`) takes its text
  or the number the file holds: a whole number means its decimal text (95 and 95.0 are "95"; "02134" keeps its
  zero only as text, 2134 is "2134"). A boolean, a fraction or an infinity is refused (`code_text`).
- A column of the features schema that the model does not read (one the config's `drop:` lists that is the source
  of no derived feature) is optional, may hold anything, and is ignored: a validated record holds None for it.
"""

from __future__ import annotations

import functools
import math
import numbers
import re
import reprlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, NotRequired

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
    WithJsonSchema,
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


CODE_NOTE = (
    'A code: its text, or a whole number meaning its decimal text (95 and 95.0 are the code "95"); a code written '
    'with leading zeros ("02134") is sent as text. Not a boolean, not a fraction.'
)
IGNORED_NOTE = "Not read by this model (the config drops it): optional, any value, ignored."


def code_text(value: Any) -> Any:
    """A code field's value as the model knows it: text as sent, a whole number as its decimal text (95 and 95.0
    are "95"), a missing value (None, NaN) as None. Raises ValueError for anything else: a boolean, a fraction, an
    infinity, a list."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):  # an int to Python; numpy's booleans are no number at all
        raise ValueError(f"{value!r} is not a code: send its text or a whole number")
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        number = float(value)
        if math.isnan(number):
            return None
        if number.is_integer():
            return str(int(number))
    raise ValueError(f"{_REPR.repr(value)} is not a code: send its text or a whole number")


def _json_code_text(value: int | float) -> str:
    # The strict tier's numbers (JSON's own): as `code_text`, but NaN is no more a code than it is JSON.
    text = code_text(value)
    if text is None:
        raise ValueError(f"{value!r} is not a code: send its text or a whole number")
    return text  # type: ignore[no-any-return]


def _member(allowed: tuple[str, ...]) -> Any:
    def check(text: str) -> str:
        if text not in allowed:
            raise ValueError(f"{text!r} is not an allowed value")
        return text

    return check


def _code_type(column: pa.Column, allowed: list[Any] | None, strict: bool) -> Any:
    """The type of a code field (`code_text`): its text, or a whole number as that text; documented as either."""
    text: Any = Literal[tuple(allowed)] if allowed is not None else str  # type: ignore[valid-type]
    options: list[dict[str, Any]] = [{"type": "string", **({"enum": allowed} if allowed is not None else {})}]
    whole = [int(v) for v in allowed if _INTEGER_TEXT.match(v) and str(int(v)) == v] if allowed is not None else None
    if whole is None or whole:
        options.append({"type": "integer", **({"enum": whole} if whole else {})})
    if not strict:  # outside the None of a nullable field: NaN is missing there, as pandera has it
        kind = text | None if column.nullable else text
        options += [{"type": "null"}] if column.nullable else []
        return Annotated[kind, BeforeValidator(code_text), WithJsonSchema({"anyOf": options})]
    number: Any = Annotated[Annotated[int, Strict()] | Annotated[float, Strict()], AfterValidator(_json_code_text)]
    if allowed is not None:
        number = Annotated[number, AfterValidator(_member(tuple(allowed)))]
    else:
        text = Annotated[str, Strict()]
    kind = text | number
    return kind | None if column.nullable else kind


def _is_text(column: pa.Column) -> bool:
    return not str(column.dtype).lower().startswith(("int", "uint", "float", "bool"))


def _allowed_texts(column: pa.Column) -> list[Any] | None:
    return next((list(c.statistics["allowed_values"]) for c in column.checks if c.name == "isin"), None)


def schema_codes(schema: type[pa.DataFrameModel], declared: Iterable[str] = ()) -> frozenset[str]:
    """The code fields of a features schema: its text columns among `declared` (a model's: `request_fields` in
    tasks/records.py), and every text
    column whose `isin` values are all whole numbers. A column with a `str_matches` pattern is never one."""
    declared = set(declared)
    found = set()
    for name, column in schema.to_schema().columns.items():
        if not _is_text(column) or any(c.name == "str_matches" for c in column.checks):
            continue
        allowed = _allowed_texts(column)
        if allowed is not None and not all(isinstance(v, str) for v in allowed):
            continue
        if name in declared or (allowed and all(_INTEGER_TEXT.match(v) for v in allowed)):
            found.add(name)
    return frozenset(found)


@dataclass(frozen=True)
class RequestFields:
    """What a model makes of its features schema's fields beyond their types: which are codes (`code_text`), and
    which it does not read at all (optional in a request, and ignored)."""

    codes: frozenset[str] = frozenset()
    ignored: frozenset[str] = frozenset()


def _field_type(column: pa.Column, strict: bool = False,
                code: bool = False) -> tuple[Any, dict[str, Any], list[pa.Check]]:  # fmt: skip
    """The pydantic type and constraints of one pandera column, and the checks left for pandera to run.

    `strict`: the fast tier's type, checked by pydantic-core alone: exact JSON types (no pandera coercions), the
    same constraints; it accepts a subset of what the full type accepts, with identical values. `code`: a text
    column that takes whole numbers as their text (`code_text`, `schema_codes`)."""
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
    if code and pattern is None and _is_text(column) and all(isinstance(v, str) for v in allowed or []):
        return _code_type(column, allowed, strict), constraints, leftover
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
    codes: frozenset[str] = frozenset()  # fields that take a whole number as their text (`code_text`)
    ignored: frozenset[str] = frozenset()  # fields the model does not read: optional, validated to None
    _requests: dict[int, TypeAdapter[Any]] = field(default_factory=dict, repr=False)  # fast request type per limit

    def validate_python(self, records: list[Any], fast: bool = True,
                        strict: bool = False) -> tuple[list[dict[str, Any]], list[FieldError]]:  # fmt: skip
        """Validated records as dicts, or the errors of every broken record (index and field named).

        `fast=False` skips the strict tier (for records it has already refused). `strict=True` gives the strict
        tier's verdict alone: JSON's own types, as the OpenAPI document states them (no pandera coercions)."""
        rows: list[dict[str, Any]] | None = None
        if strict and self.fast is not None:
            try:
                rows = self._blank(self.fast_adapter.validate_python(records))
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
        return self._blank(rows), self.check_leftover(rows)

    def _blank(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Every ignored field as None, sent or not: rows keep every field of the schema, and nothing unread."""
        for name in self.ignored:
            for row in rows:
                row[name] = None
        return rows

    def validate_json_fast(self, body: bytes, max_records: int) -> list[dict[str, Any]] | None:
        """The records of a raw JSON body `{"records": [...]}` (1 to `max_records`) that the strict tier accepts
        in full, parsed and validated in one pass without Python objects in between; None for anything else
        (malformed JSON, wrong shape, too many records, a record the strict tier refuses), which the caller
        hands to the full path for the verdict and the errors. The schema's own checks are not run here."""
        if self.fast is None:
            return None
        try:
            return self._blank(self._request_adapter(max_records).validate_json(body)["records"])
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
    """Pydantic's errors as record index + field + rule + message. A value a code field refuses, which pydantic
    reports once per kind the field takes (text, a whole number), is one error."""
    found: dict[tuple[int | None, str | None], list[tuple[FieldError, Any]]] = {}
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
        key = (record, name) if name is not None else (record, f"#{len(found)}")  # a whole-record error stays
        found.setdefault(key, []).append((FieldError(record, name, rule, message), error.get("input")))
    return [_one_error(errors) for errors in found.values()]


def _one_error(errors: list[tuple[FieldError, Any]]) -> FieldError:
    if len(errors) == 1:
        return errors[0][0]
    for rule in ("type", "literal_error"):  # code_text's reason, else the allowed values
        chosen = next((e for e, _ in errors if e.rule == rule), None)
        if chosen is not None:
            return chosen
    first, value = errors[0]
    return FieldError(first.record, first.field, "type",
                      f"{_REPR.repr(value)} is not a code: send its text or a whole number")  # fmt: skip


def record_model(schema: type[pa.DataFrameModel], example: dict[str, Any] | None = None,
                 fields: RequestFields | None = None) -> RecordValidator:  # fmt: skip
    """Generate the request record model of a pandera features schema (strict: no missing, no extra fields).

    `fields`: the served model's codes and ignored fields (tasks/records.py `request_fields`); by default the
    schema's own codes
    (`schema_codes`) and no ignored field."""
    frame_schema = schema.to_schema()
    fields = fields or RequestFields(codes=schema_codes(schema))
    definitions: dict[str, Any] = {}
    strict: dict[str, Any] = {}
    leftover: dict[str, list[pa.Check]] = {}
    for name, column in frame_schema.columns.items():
        if name in fields.ignored:
            definitions[name] = (Any, Field(default=None, description=IGNORED_NOTE))
            strict[name] = NotRequired[Any]  # type: ignore[valid-type]
            continue
        code = name in fields.codes
        kind, constraints, rest = _field_type(column, code=code)
        description = " ".join(filter(None, [column.description, CODE_NOTE if code else None])) or None
        definitions[name] = (kind, Field(..., description=description, **constraints))
        fast_kind, fast_constraints, _ = _field_type(column, strict=True, code=code)
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
                           fast=fast, codes=fields.codes, ignored=fields.ignored)  # fmt: skip
