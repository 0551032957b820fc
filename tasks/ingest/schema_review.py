"""Schema review: what a batch changes against the schema (`schema diff`). The first draft of a schema for a
dataset mlcycle has never seen is `tasks.ingest.draft`'s (`mlcycle init`, `mlcycle schema infer`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pandera.pandas as pa

_MAX_CATEGORIES = 30
_EXAMPLES = 3


@dataclass(frozen=True)
class ColumnChange:
    """One way a column of the data departs from the schema, with how many rows show it and a few examples."""

    column: str
    change: str
    rows: int
    examples: list[str]


@dataclass(frozen=True)
class SchemaDiff:
    """Everything a batch changes against a schema; empty when the data fits."""

    schema: str
    rows: int
    changes: list[ColumnChange]

    def to_markdown(self, title: str) -> str:
        if not self.changes:
            return f"# {title}\n\nThe {self.rows} rows fit schema {self.schema}."
        lines = [f"# {title}", "", f"{self.rows} rows against schema {self.schema}:", "",
                 "| column | change | rows | examples |", "|---|---|---|---|"]  # fmt: skip
        for c in self.changes:
            examples = ", ".join(f"`{e}`" for e in c.examples).replace("|", "\\|")
            lines.append(f"| {c.column} | {c.change} | {c.rows} | {examples} |")
        return "\n".join(lines)


def diff_frame(
    frame: pd.DataFrame, schema: type[pa.DataFrameModel], unreadable: pd.DataFrame | None = None
) -> SchemaDiff:
    """New and missing columns, values of another type, new categories, values out of range or off pattern, and
    missing values where the schema allows none; `unreadable` are the reader's ledger lines (wrong field count)."""
    columns = schema.to_schema().columns
    changes = []
    if unreadable is not None and not unreadable.empty:
        examples = [f"row {r.row}: {r.value}"[:80] for r in unreadable.head(_EXAMPLES).itertuples()]
        changes.append(ColumnChange("<row>", "wrong number of fields", len(unreadable), examples))
    changes += [ColumnChange(str(c), "new column", int(frame[c].notna().sum()), _examples(frame[c]))
               for c in frame.columns if c not in columns]  # fmt: skip
    changes += [ColumnChange(c, "missing column", len(frame), []) for c in columns if c not in frame.columns]
    for name, column in columns.items():
        if name not in frame.columns:
            continue
        values = frame[name]
        if isinstance(values, pd.DataFrame):  # duplicated column names
            changes.append(ColumnChange(name, "duplicated column", len(frame), []))
            continue
        changes += _column_changes(name, values, column)
    rows = len(frame) + (0 if unreadable is None else len(unreadable))
    return SchemaDiff(schema=schema.__name__, rows=rows, changes=changes)


def _column_changes(name: str, values: pd.Series, column: pa.Column) -> list[ColumnChange]:
    changes = []
    present = values.notna()
    target = str(column.dtype)
    numeric = any(k in target.lower() for k in ("int", "float"))
    if numeric:
        numbers = pd.to_numeric(values, errors="coerce")
        unreadable = present & numbers.isna()
        if unreadable.any():
            whole = bool(unreadable[present].all())
            change = f"type change: text where {target} expected" if whole else f"values not {target}"
            changes.append(ColumnChange(name, change, int(unreadable.sum()), _examples(values[unreadable])))
        if "int" in target.lower():
            fractions = numbers.notna() & np.isfinite(numbers) & (numbers % 1 != 0)
            if fractions.any():
                changes.append(ColumnChange(name, "fractions in an integer column", int(fractions.sum()),
                                            _examples(values[fractions])))  # fmt: skip
    else:
        numbers = None
    if not column.nullable and (~present).any():
        changes.append(ColumnChange(name, "missing values", int((~present).sum()), []))
    for check in column.checks:
        stats = check.statistics
        if "allowed_values" in stats:
            new = present & ~values.isin(stats["allowed_values"])
            if new.any():
                counts = values[new].astype(str).value_counts()
                changes.append(ColumnChange(name, "new categories", int(new.sum()),
                                            [f"{v} ×{n}" for v, n in counts.head(_EXAMPLES).items()]))  # fmt: skip
        elif ("min_value" in stats or "max_value" in stats) and numbers is not None:
            low, high = stats.get("min_value"), stats.get("max_value")
            out = pd.Series(False, index=values.index)
            if low is not None:
                out |= numbers < low
            if high is not None:
                out |= numbers > high
            if out.any():
                bounds = f"[{'' if low is None else low}, {'' if high is None else high}]"
                shown = numbers[out]
                changes.append(ColumnChange(name, f"out of range {bounds}", int(out.sum()),
                                            [_text(shown.min()), _text(shown.max())]))  # fmt: skip
        elif "pattern" in stats:
            off = present & ~values.astype(str).str.match(str(stats["pattern"]))
            if off.any():
                changes.append(ColumnChange(name, f"not matching {stats['pattern']}", int(off.sum()),
                                            _examples(values[off])))  # fmt: skip
    return changes


def _examples(values: pd.Series) -> list[str]:
    return [_text(v) for v in values.dropna().drop_duplicates().head(_EXAMPLES)]


def _text(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
