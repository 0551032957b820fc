"""Validate: split rows into those the schema accepts and a quarantine with one reason per failed check."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pandera.errors
import pandera.pandas as pa

from tasks.errors import UserError

log = logging.getLogger("mlcycle.validate")

QUARANTINE_COLUMNS = ["row", "column", "check", "value"]
_MAX_PASSES = 5


class SchemaContractError(UserError, ValueError):
    """The frame as a whole breaks the schema (a missing column, a column of the wrong type throughout)."""


@dataclass(frozen=True)
class Validated:
    """Accepted rows (coerced to the schema's types) and the quarantine ledger for the rest.

    `quarantine` has one line per failed check: `row` is the input frame's index label, so a caller can map it
    back to the file and line it came from. Every input row is either in `valid` or named in `quarantine`.
    """

    valid: pd.DataFrame
    quarantine: pd.DataFrame
    rows_in: int

    @property
    def rows_quarantined(self) -> int:
        return int(self.quarantine["row"].nunique())


def validate_frame(
    frame: pd.DataFrame, schema: type[pa.DataFrameModel], what: str = "frame", whole_frame_errors: bool = True
) -> Validated:
    """Validate lazily and quarantine failing rows, re-validating the rest until it passes.

    Row failures are split out by index from pandera's failure cases (pandera's own `drop_invalid_rows` is not
    used: it has let rows through). A failure that names no row is a whole-frame problem and raises.

    With `whole_frame_errors=False` (a service request) a column that is wrong in every row quarantines every
    row instead of raising, so that each record gets its own reason.

    Raises:
        SchemaContractError: a column is missing, unexpected, duplicated or unusable as a whole.
    """
    _check_columns(frame, schema, what)
    typed = _type_cases(frame, schema)
    if whole_frame_errors:
        _raise_if_column_unusable(typed, frame, what)
    failures: list[pd.DataFrame] = [typed] if not typed.empty else []
    # The first pass sees placeholders where values are of the wrong type, so that it reports every other
    # failure of those rows and the whole frame is validated once, not once per kind of failure.
    remaining = _with_placeholders(frame, typed) if not typed.empty else frame
    placeholders = typed
    for _ in range(_MAX_PASSES):
        try:
            valid = schema.validate(remaining, lazy=True)
        except pandera.errors.SchemaErrors as exc:
            cases = _row_cases(exc.failure_cases)
            if cases.empty:
                raise SchemaContractError(_describe_frame_failure(exc.failure_cases, what)) from None
            if whole_frame_errors:
                _raise_if_column_unusable(cases, remaining, what)
            type_cases = cases[cases["check"].str.startswith("coerce_dtype")]
            if not type_cases.empty and exc.failure_cases["index"].isna().any():
                # Values of the wrong type hide every other check on their column: set those rows aside
                # first, so that the next pass reports the remaining rows' failures in full.
                cases = type_cases
            failures.append(_without_cells(cases, placeholders))
            set_aside = pd.concat([placeholders["row"], cases["row"]]).unique()
            # After the first pass the real values come back: the rows kept are taken from `frame` itself.
            base = frame if not placeholders.empty else remaining
            remaining = base[~base.index.isin(set_aside)]
            placeholders = placeholders.iloc[0:0]
            continue
        if not placeholders.empty:
            valid = valid[~valid.index.isin(placeholders["row"].unique())]
        quarantine = _ledger(failures)
        if len(valid) + quarantine["row"].nunique() != len(frame):
            raise AssertionError(f"{what}: row accounting broke: {len(frame)} in, {len(valid)} valid, "
                                 f"{quarantine['row'].nunique()} quarantined")  # fmt: skip
        if not quarantine.empty:
            log.warning("%s: quarantined %d of %d rows", what, quarantine["row"].nunique(), len(frame))
        return Validated(valid=valid, quarantine=quarantine, rows_in=len(frame))
    raise SchemaContractError(f"{what}: still failing after {_MAX_PASSES} passes of row quarantine")


def text_columns(schema: type[pa.DataFrameModel]) -> frozenset[str]:
    """The columns the schema holds as text: a reader keeps them as written (`02134` stays `02134`, not 2134)."""
    return frozenset(
        name for name, column in schema.to_schema().columns.items() if str(column.dtype).startswith(("str", "string"))
    )


def _type_cases(frame: pd.DataFrame, schema: type[pa.DataFrameModel]) -> pd.DataFrame:
    """Rows whose value for a numeric column cannot be read as the column's type, or, for an integer column, is a
    fraction or a boolean (pandera's coercion would silently turn 39.5 into 39 and true into 1).

    Found vectorised before pandera runs: pandera tests such values one at a time in Python, and a value of the
    wrong type hides every other check on its column until it is set aside.
    """
    found: list[dict[str, object]] = []
    for name, column in schema.to_schema().columns.items():
        target = str(column.dtype)
        is_int, is_float = "int" in target.lower(), "float" in target.lower()
        values = frame[name]
        already_integer = pd.api.types.is_integer_dtype(values) and not pd.api.types.is_bool_dtype(values)
        if not (is_int or is_float) or already_integer:
            continue
        if is_float and pd.api.types.is_float_dtype(values):
            continue
        if pd.api.types.is_bool_dtype(values):
            booleans = values.notna()
        elif values.dtype == object:
            booleans = values.map(lambda v: isinstance(v, bool | np.bool_)).astype(bool)
        else:
            booleans = pd.Series(False, index=values.index)
        numbers = pd.to_numeric(values.mask(booleans), errors="coerce")
        unreadable = (numbers.isna() & values.notna() & ~booleans).to_numpy()
        if unreadable.any():
            # to_numeric is stricter than the coercion pandera uses (Python's int/float): confirm each candidate.
            convert = int if is_int else float
            candidates = values[unreadable]
            check = f"coerce_dtype('{target}')"
            found.extend({"row": row, "column": name, "check": check, "value": _as_text(value)}
                         for row, value in candidates.items() if not _converts(value, convert))  # fmt: skip
        if is_int:
            finite = numbers.notna() & np.isfinite(numbers)
            lossy = ((finite & (numbers % 1 != 0)) | booleans).to_numpy()
            found.extend({"row": row, "column": name, "check": "is_integer", "value": _as_text(values[row])}
                         for row in values.index[lossy])  # fmt: skip
    return pd.DataFrame(found, columns=QUARANTINE_COLUMNS)


def _with_placeholders(frame: pd.DataFrame, typed: pd.DataFrame) -> pd.DataFrame:
    """The frame with `0` in every cell of `typed`: a value every numeric column can be coerced from."""
    columns = {}
    for column, cells in typed.groupby("column"):
        hit = frame.index.isin(cells["row"].unique())
        columns[str(column)] = frame[column].astype(object).mask(hit, 0)
    return frame.assign(**columns)


def _without_cells(cases: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    """`cases` minus the failures of placeholder cells (their real reason is already in the ledger)."""
    if cells.empty:
        return cases
    placed = pd.MultiIndex.from_frame(cells[["row", "column"]].astype({"row": object}))
    mine = pd.MultiIndex.from_frame(cases[["row", "column"]].astype({"row": object}))
    return cases[~mine.isin(placed)]


def _converts(value: object, convert: type) -> bool:
    try:
        convert(value)
    except (TypeError, ValueError, OverflowError):
        return False
    return True


def _row_cases(failure_cases: pd.DataFrame) -> pd.DataFrame:
    cases = failure_cases[failure_cases["index"].notna()]
    ledger = pd.DataFrame(
        {
            "row": cases["index"].to_numpy(),
            "column": cases["column"].astype(str).to_numpy(),
            "check": cases["check"].astype(str).to_numpy(),
            "value": cases["failure_case"].map(_as_text).to_numpy(),
        }
    )
    # pandera reports a value that cannot be coerced twice, as coerce_dtype and as dtype: keep the first.
    is_coerce = ledger["check"].str.startswith("coerce_dtype")
    coerced = pd.MultiIndex.from_frame(ledger.loc[is_coerce, ["row", "column"]].astype({"row": object}))
    pairs = pd.MultiIndex.from_frame(ledger[["row", "column"]].astype({"row": object})).isin(coerced)
    repeated = ledger["check"].str.startswith("dtype(") & pairs
    ledger = ledger[~repeated]
    # A missing value in a column that cannot hold one (integers) fails coercion too; its reason is not_nullable.
    missing_coerce = ledger["check"].str.startswith("coerce_dtype") & (ledger["value"] == _as_text(None))
    ledger = ledger.assign(check=ledger["check"].mask(missing_coerce, "not_nullable"))
    return ledger.drop_duplicates().reset_index(drop=True)


def _raise_if_column_unusable(cases: pd.DataFrame, frame: pd.DataFrame, what: str) -> None:
    type_cases = cases[cases["check"].str.startswith("coerce_dtype")]
    for column, group in type_cases.groupby("column"):
        present = int(frame[column].notna().sum())
        if present > 1 and group["row"].nunique() >= present:
            examples = ", ".join(group["value"].head(3))
            raise SchemaContractError(
                f"{what}: column {column!r} cannot be read as {group['check'].iloc[0]} in any row (e.g. {examples})"
            )


def _check_columns(frame: pd.DataFrame, schema: type[pa.DataFrameModel], what: str) -> None:
    expected = list(schema.to_schema().columns)
    duplicated = sorted(set(frame.columns[frame.columns.duplicated()]))
    missing = [c for c in expected if c not in frame.columns]
    extra = [c for c in frame.columns if c not in expected]
    problems = []
    if duplicated:
        problems.append(f"duplicated column(s) {duplicated}")
    if missing:
        problems.append(f"missing required column(s) {missing}")
    if extra:
        problems.append(f"unexpected column(s) {extra}")
    if problems:
        raise SchemaContractError(f"{what}: {'; '.join(problems)} (schema {schema.__name__})")


def _describe_frame_failure(cases: pd.DataFrame, what: str) -> str:
    parts = [f"column {row.column!r} fails {row.check} ({_as_text(row.failure_case)})" for row in cases.itertuples()]
    return f"{what}: " + "; ".join(parts[:5])


def _ledger(failures: list[pd.DataFrame]) -> pd.DataFrame:
    if not failures:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in QUARANTINE_COLUMNS})
    return pd.concat(failures, ignore_index=True).drop_duplicates().reset_index(drop=True)


def _as_text(value: object) -> str:
    return "<missing>" if value is None or (isinstance(value, float) and value != value) else str(value)


def reasons_by_row(quarantine: pd.DataFrame) -> pd.DataFrame:
    """One line per quarantined row: its reasons as `column: check (value)` joined with '; '."""
    described = quarantine.assign(
        reason=quarantine["column"] + ": " + quarantine["check"] + " (" + quarantine["value"] + ")"
    )
    return described.groupby("row", sort=True)["reason"].agg("; ".join).reset_index()
