"""Validate: split rows into those the schema accepts and a quarantine with one reason per failed check."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pandera.errors
import pandera.pandas as pa

from mlcycle.tasks.errors import UserError

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
    """Split the rows the schema accepts (coerced to its types) from a quarantine ledger with one line per failed
    check of every other row.

    The common case runs in bulk: each column is coerced and each of its checks evaluated once over the whole
    column (pandera's own check functions, a built-in one on the column's distinct values), and the ledger's
    values are formatted for the failing cells only. A schema that needs more than that (frame-wide checks,
    unique columns, parsers, a check that does not answer per row) goes through pandera's lazy validation
    (`validate_with_pandera`), and so does a frame whose coercion fails in a way the type screen did not
    foresee. Both give the same ledger, in the frame's order (tests/test_validate_bulk.py), except where pandera's
    coercion of an integer column fails as a whole on one missing value: pandera then checks the other rows'
    values uncoerced and misses some of their failures; the bulk path coerces and reports them all.

    With `whole_frame_errors=False` (a service request) a column that is wrong in every row quarantines every
    row instead of raising, so that each record gets its own reason.

    Raises:
        SchemaContractError: a column is missing, unexpected, duplicated or unusable as a whole.
    """
    _check_columns(frame, schema, what)
    typed = _type_cases(frame, schema)
    if whole_frame_errors:
        _raise_if_column_unusable(typed, frame, what)
    plan = _bulk_plan(schema)
    screened = _screen(frame, plan, typed) if plan is not None else None
    if screened is None:
        return _validate_lazily(frame, schema, what, whole_frame_errors, typed)
    return screened.accounted(frame, what)


def validate_with_pandera(
    frame: pd.DataFrame, schema: type[pa.DataFrameModel], what: str = "frame", whole_frame_errors: bool = True
) -> Validated:
    """`validate_frame` through pandera's lazy validation alone: the reference the bulk path is held to."""
    _check_columns(frame, schema, what)
    typed = _type_cases(frame, schema)
    if whole_frame_errors:
        _raise_if_column_unusable(typed, frame, what)
    return _validate_lazily(frame, schema, what, whole_frame_errors, typed)


def _validate_lazily(
    frame: pd.DataFrame, schema: type[pa.DataFrameModel], what: str, whole_frame_errors: bool, typed: pd.DataFrame
) -> Validated:
    """Validate lazily and quarantine failing rows, re-validating the rest until it passes.

    Row failures are split out by index from pandera's failure cases (pandera's own `drop_invalid_rows` is not
    used: it has let rows through). A failure that names no row is a whole-frame problem and raises.
    """
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
        return _accounted(frame, valid, failures, what)
    raise SchemaContractError(f"{what}: still failing after {_MAX_PASSES} passes of row quarantine")


def _accounted(frame: pd.DataFrame, valid: pd.DataFrame, failures: list[pd.DataFrame], what: str) -> Validated:
    return _counted(frame, valid, _in_frame_order(_ledger(failures), frame), what)


def _counted(frame: pd.DataFrame, valid: pd.DataFrame, quarantine: pd.DataFrame, what: str) -> Validated:
    quarantined = quarantine["row"].nunique()
    if len(valid) + quarantined != len(frame):
        raise AssertionError(f"{what}: row accounting broke: {len(frame)} in, {len(valid)} valid, "
                             f"{quarantined} quarantined")  # fmt: skip
    if quarantined:
        log.warning("%s: quarantined %d of %d rows", what, quarantined, len(frame))
    return Validated(valid=valid, quarantine=quarantine, rows_in=len(frame))


# Built-in pandera checks that match a regular expression, whose answer for a value depends on that value alone:
# on a text column they run once per distinct value (a date or an amount repeats thousands of times in a large
# batch; finding the distinct values costs a third of matching them all). Cheaper checks run on every value.
_PER_VALUE_CHECKS = frozenset({"str_matches", "str_contains"})


@dataclass(frozen=True)
class _ColumnPlan:
    name: str
    column: Any  # pandera's Column
    is_int: bool
    checks: tuple[_CheckPlan, ...]


@dataclass(frozen=True)
class _CheckPlan:
    check: Any  # pandera's Check
    backend: Any  # its pandas backend
    label: str  # its name in the ledger
    per_value: bool  # evaluated once per distinct value
    builtin: bool  # one of pandera's own checks: it answers for a missing value without raising


@functools.cache
def _bulk_plan(schema: type[pa.DataFrameModel]) -> tuple[_ColumnPlan, ...] | None:
    """How to validate the schema's columns in bulk, or None if the schema needs pandera's own validation."""
    from pandera.backends.pandas.checks import PandasCheckBackend
    from pandera.config import CONFIG

    full = schema.to_schema()
    full.register_default_backends(pd.DataFrame)  # pandera's check functions for pandas, as `validate` would
    if (
        CONFIG.use_narwhals_backend
        or full.checks
        or full.parsers
        or full.unique
        or full.index is not None
        or not full.coerce
    ):
        return None
    plans = []
    for name, column in full.columns.items():
        if column.regex or column.unique or column.parsers or column.default is not None or column.dtype is None:
            return None
        target = str(column.dtype)
        if target not in ("int64", "Int64", "float64") and not target.startswith(("str", "string")):
            return None
        checks = []
        for check in column.checks:
            if check.groupby is not None or check.n_failure_cases is not None:
                return None
            label = check.error if check.error is not None else (check.name if check.name is not None else str(check))
            backend = PandasCheckBackend(check)
            builtin = getattr(check._check_fn, "__name__", None)
            is_builtin = builtin is not None and check.is_builtin_check(builtin)
            if is_builtin:
                # as `Check.__call__` does: the dispatcher with pandas' implementations registered since the schema
                backend.check_fn = functools.partial(check.get_builtin_check_fn(builtin), **check._check_kwargs)
            checks.append(_CheckPlan(check, backend, label, builtin in _PER_VALUE_CHECKS, is_builtin))
        plans.append(_ColumnPlan(str(name), column, target == "int64", tuple(checks)))
    return tuple(plans)


@dataclass
class _Screened:
    """What the bulk path found: the accepted rows, and the ledger's lines with each line's place in the frame
    (its row's position and its column's), so that they are put in the frame's order without looking rows up."""

    valid: pd.DataFrame
    failures: list[pd.DataFrame]
    positions: list[np.ndarray]
    columns: list[np.ndarray]

    def add(self, lines: pd.DataFrame, positions: np.ndarray, column: int | np.ndarray) -> None:
        self.failures.append(lines)
        self.positions.append(positions)
        self.columns.append(np.broadcast_to(np.asarray(column, dtype=np.intp), positions.shape))

    def accounted(self, frame: pd.DataFrame, what: str) -> Validated:
        if not self.failures or not frame.index.is_unique:
            return _accounted(frame, self.valid, self.failures, what)
        # A cell fails a check once, and unreadable cells are checked no further: no line repeats (the type
        # screen's own lines were deduplicated), so the lines need only sorting, as `_in_frame_order` sorts them.
        order = np.lexsort((np.concatenate(self.columns), np.concatenate(self.positions)))
        ledger = pd.concat(self.failures, ignore_index=True)
        return _counted(frame, self.valid, ledger.take(order).reset_index(drop=True), what)


def _screen(frame: pd.DataFrame, plan: tuple[_ColumnPlan, ...], typed: pd.DataFrame) -> _Screened | None:
    """The accepted rows coerced and the ledger lines, column by column; None where pandera must decide."""
    failed = np.zeros(len(frame), dtype=bool)
    screened = _Screened(frame, [], [], [])
    if not typed.empty:
        typed = typed.drop_duplicates(ignore_index=True)
        rows = frame.index.get_indexer(pd.Index(typed["row"].to_numpy())) if frame.index.is_unique else typed.index
        screened.add(typed, np.asarray(rows), frame.columns.get_indexer(pd.Index(typed["column"].to_numpy())))
    typed_cells = {str(c): frame.index.isin(cells["row"].unique()) for c, cells in typed.groupby("column")}
    coerced: dict[str, pd.Series] = {}
    for column in plan:
        values = frame[column.name]
        at = frame.columns.get_loc(column.name)
        skip = typed_cells.get(column.name)  # cells already in the ledger as unreadable
        if skip is not None:
            failed |= skip
        missing = values.isna().to_numpy()
        if missing.any() and (column.is_int or not column.column.nullable):
            # An integer column holds no missing value: pandera reports it as a failed coercion, named
            # not_nullable here whether or not the column is nullable (as `_row_cases` names it).
            screened.add(_cells(frame.index, missing, column.name, "not_nullable", None), np.flatnonzero(missing), at)
            failed |= missing
        try:
            series = _coerced(values, column, skip, missing)
        except Exception:  # a value the type screen let through and pandera cannot coerce: pandera reports it
            return None
        coerced[column.name] = series
        present = ~missing if skip is None else ~missing & ~skip
        for check in column.checks:
            bad = _failing(series, present, check)
            if bad is None:
                return None
            if bad.any():
                rows = np.flatnonzero(bad)
                screened.add(_cells(frame.index, bad, column.name, check.label, series.iloc[rows]), rows, at)
                failed |= bad
    # Columns the coercion left as they were stay in the frame's own blocks (rebuilding the frame would copy them).
    changed = {name: series for name, series in coerced.items() if series.dtype != frame[name].dtype}
    valid = frame.assign(**changed) if changed else frame
    screened.valid = valid[~failed] if failed.any() else valid
    return screened


def _coerced(values: pd.Series, column: _ColumnPlan, unreadable: np.ndarray | None, missing: np.ndarray) -> pd.Series:
    """The column coerced to its type as pandera coerces it. Unreadable cells (already in the ledger) and, in an
    integer column, missing values are read as 0, a value every numeric column can be coerced from.

    Integer text is cast by Arrow where it can (pandera converts text one value at a time); text Arrow does not
    read as an integer (`+5`, ` 5`) goes to pandera.
    """
    if column.is_int and pd.api.types.is_string_dtype(values) and not pd.api.types.is_object_dtype(values):
        import pyarrow as pa
        import pyarrow.compute as pc

        text = pa.array(values.array, type=pa.large_string(), from_pandas=True)
        placeholders = missing if unreadable is None else missing | unreadable
        if placeholders.any():
            text = pc.if_else(pa.array(placeholders), pa.scalar("0", pa.large_string()), text)
        try:
            return pd.Series(pc.cast(text, pa.int64()).to_numpy(), index=values.index, name=values.name)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
    if unreadable is not None:
        values = values.astype(object).mask(unreadable, 0)
    if column.is_int and missing.any():
        values = values.fillna(0)
    return column.column.dtype.try_coerce(values)


def _failing(series: pd.Series, present: np.ndarray, plan: _CheckPlan) -> np.ndarray | None:
    """Which cells fail one check (a boolean per row), as pandera judges them; None if the check does not answer
    per row (a frame-wide check), which pandera then reports."""
    check, backend = plan.check, plan.backend
    considered = present if check.ignore_na else np.ones(len(series), dtype=bool)
    try:
        if plan.per_value and (pd.api.types.is_string_dtype(series) or series.dtype == object):
            codes, uniques = pd.factorize(series, use_na_sentinel=check.ignore_na)
            answer = backend.apply(pd.Series(uniques, dtype=series.dtype))
            if not isinstance(answer, pd.Series) or len(answer) != len(uniques):
                return None
            passed = np.append(answer.to_numpy(dtype=bool, na_value=False), True)[codes]  # code -1: missing
            return considered & ~passed
        # pandera's own checks answer for every value (False for a missing one): they run on the whole column and
        # the cells not considered are masked after, which is cheaper than selecting the considered cells first.
        subject = series if considered.all() or plan.builtin else series[considered]
        answer = backend.apply(subject)
        if not isinstance(answer, pd.Series) or not answer.index.equals(subject.index):
            return None
        ok = answer.to_numpy(dtype=bool, na_value=False)
    except Exception:  # pandera reports a check that raises as a whole-frame failure
        return None
    if len(ok) == len(series):
        return considered & ~ok
    bad = np.zeros(len(series), dtype=bool)
    bad[np.flatnonzero(considered)[~ok]] = True
    return bad


def _cells(index: pd.Index, bad: np.ndarray, column: str, check: str, values: pd.Series | None) -> pd.DataFrame:
    """Ledger lines for the failing cells of one column and check, in row order, the values as `_as_text` writes
    them (pandas' text of a number is Python's)."""
    if values is None:
        texts: Any = _as_text(None)
    else:
        texts = np.where(values.isna().to_numpy(), _as_text(None), values.astype(str).to_numpy(dtype=object))
    return pd.DataFrame({"row": index[bad].to_numpy(), "column": column, "check": check, "value": texts},
                        columns=QUARANTINE_COLUMNS)  # fmt: skip


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
        elif values.dtype == object and pd.api.types.infer_dtype(values, skipna=True) not in _NO_BOOLEANS:
            booleans = values.map(lambda v: isinstance(v, bool | np.bool_)).astype(bool)
        else:
            booleans = pd.Series(False, index=values.index)
        numbers = as_numbers(values.mask(booleans) if booleans.any() else values)
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


# What `infer_dtype` calls a column that holds no boolean (it looks at every value, in C).
_NO_BOOLEANS = frozenset({"string", "empty", "integer", "floating", "mixed-integer-float", "decimal", "bytes"})
# Text that is plainly a decimal number, which Arrow's cast reads as `to_numeric` does.
_PLAIN_NUMBER = r"^\s*-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\s*$"


def as_numbers(values: pd.Series) -> pd.Series:
    """`pd.to_numeric(values, errors="coerce")` as float64. Text that plainly is a number is cast in bulk by Arrow
    (to_numeric reads text one value at a time: a second for a million values); the rest goes to to_numeric."""
    import pyarrow as pa
    import pyarrow.compute as pc

    text_dtype = pd.api.types.is_string_dtype(values) and not pd.api.types.is_object_dtype(values)
    if not text_dtype and not (values.dtype == object and pd.api.types.infer_dtype(values, skipna=True) == "string"):
        return pd.to_numeric(values, errors="coerce").astype("float64")
    text = pa.array(values.array if text_dtype else values.to_numpy(), type=pa.large_string(), from_pandas=True)
    plain = pc.fill_null(pc.match_substring_regex(text, _PLAIN_NUMBER), False)
    cast = pc.cast(pc.utf8_trim_whitespace(pc.if_else(plain, text, None)), pa.float64())
    numbers = cast.to_numpy(zero_copy_only=False)
    rest = np.flatnonzero(~plain.to_numpy(zero_copy_only=False) & values.notna().to_numpy())
    if len(rest):
        numbers[rest] = pd.to_numeric(values.iloc[rest], errors="coerce").astype("float64").to_numpy()
    return pd.Series(numbers, index=values.index)


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


def _in_frame_order(ledger: pd.DataFrame, frame: pd.DataFrame) -> pd.DataFrame:
    """The ledger ordered by row, then column, as they stand in the frame (a row's lines keep their order within
    a column): both validation paths give the same lines in the same order, and a reason's example is its first row.
    """
    if ledger.empty or not frame.index.is_unique:
        return ledger
    row = frame.index.get_indexer(pd.Index(ledger["row"].to_numpy()))
    column = frame.columns.get_indexer(pd.Index(ledger["column"].to_numpy()))
    order = np.lexsort((column, row))
    return ledger.iloc[order].reset_index(drop=True)


def _as_text(value: object) -> str:
    return "<missing>" if value is None or (isinstance(value, float) and value != value) else str(value)


def reasons_by_row(quarantine: pd.DataFrame) -> pd.DataFrame:
    """One line per quarantined row: its reasons as `column: check (value)` joined with '; '."""
    described = quarantine.assign(
        reason=quarantine["column"] + ": " + quarantine["check"] + " (" + quarantine["value"] + ")"
    )
    return described.groupby("row", sort=True)["reason"].agg("; ".join).reset_index()
