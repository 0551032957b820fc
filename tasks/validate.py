"""Validate: split rows into those the schema accepts and a quarantine with one reason per failed check."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pandera.errors
import pandera.pandas as pa

log = logging.getLogger("mlcycle.validate")

QUARANTINE_COLUMNS = ["row", "column", "check", "value"]
_MAX_PASSES = 5


class SchemaContractError(ValueError):
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
    lossy = _lossy_integer_cases(frame, schema)
    failures: list[pd.DataFrame] = [lossy] if not lossy.empty else []
    remaining = frame.drop(index=pd.Index(lossy["row"].unique()))
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
            failures.append(cases)
            remaining = remaining.drop(index=pd.Index(cases["row"].unique()))
            continue
        quarantine = _ledger(failures)
        if len(valid) + quarantine["row"].nunique() != len(frame):
            raise AssertionError(f"{what}: row accounting broke: {len(frame)} in, {len(valid)} valid, "
                                 f"{quarantine['row'].nunique()} quarantined")  # fmt: skip
        if not quarantine.empty:
            log.warning("%s: quarantined %d of %d rows", what, quarantine["row"].nunique(), len(frame))
        return Validated(valid=valid, quarantine=quarantine, rows_in=len(frame))
    raise SchemaContractError(f"{what}: still failing after {_MAX_PASSES} passes of row quarantine")


def _lossy_integer_cases(frame: pd.DataFrame, schema: type[pa.DataFrameModel]) -> pd.DataFrame:
    """Rows whose value for an integer column is a fraction or a boolean: pandera's coercion would silently
    turn 39.5 into 39 and true into 1."""
    found = []
    for name, column in schema.to_schema().columns.items():
        if "int" not in str(column.dtype).lower() or pd.api.types.is_integer_dtype(frame[name]):
            continue
        values = frame[name]
        numbers = pd.to_numeric(values.where(~values.map(lambda v: isinstance(v, bool)), None), errors="coerce")
        finite = numbers.notna() & np.isfinite(numbers)
        bad = (finite & (numbers % 1 != 0)) | values.map(lambda v: isinstance(v, bool))
        for row in values.index[bad.to_numpy()]:
            found.append({"row": row, "column": name, "check": "is_integer", "value": _as_text(values[row])})
    return pd.DataFrame(found, columns=QUARANTINE_COLUMNS)


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
    coerced = set(zip(ledger["row"][ledger["check"].str.startswith("coerce_dtype")], ledger["column"]))
    pairs = pd.Series([(r, c) in coerced for r, c in zip(ledger["row"], ledger["column"])], dtype=bool)
    repeated = ledger["check"].str.startswith("dtype(") & pairs
    return ledger[~repeated].reset_index(drop=True)


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
    described = quarantine.assign(reason=quarantine["column"] + ": " + quarantine["check"] + " (" + quarantine["value"] + ")")
    return described.groupby("row", sort=True)["reason"].agg("; ".join).reset_index()
