"""Markdown tables for the terminal and the Prefect UI (no imports beyond the standard library: the quick
`mlcycle` commands print them)."""

from __future__ import annotations

import math
from typing import Any


def format_cell(value: Any) -> str:
    """A value as a table shows it: floats to 4 decimals, missing as empty."""
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4f}"
    return "" if value is None else str(value)


def markdown_table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    if not rows:
        return "(none)"
    columns = columns or list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(format_cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)
