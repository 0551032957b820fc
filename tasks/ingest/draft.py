"""Draft a new dataset from one raw file: what each column is, the pandera schemas and the pipeline config.

`mlcycle init` calls `draft_dataset`, prints its decisions column by column, and writes `schemas/<name>.py` and
`configs/<name>.yaml` for a person to review. Every guess is written down where it was made: the decisions in the
printed summary, the rules in the config (parse rules, missing tokens, dropped columns with their reasons), the
doubts as comments in the schema.
"""

from __future__ import annotations

import io
import keyword
import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from mlcycle.schemas.config import CsvOptions, ParseRule, PipelineConfig
from mlcycle.tasks.errors import UserError
from mlcycle.tasks.ingest.read import SourceError, parse_column, single_character_separator
from mlcycle.tasks.preprocess import parse_times

Role = Literal["target", "feature", "id", "weight", "dropped"]

# Texts that stand for "no value" in exports. Strong ones are missing wherever they appear; weak ones (real words,
# or `NA`, a census category) only where the rest of the column is numbers or dates, so they cannot be a level.
STRONG_MISSING = ("?", "N/A", "n/a", "#N/A", "NULL", "null", "NaN", "nan", "None", "none", "-", "--", "(null)")
WEAK_MISSING = ("NA", "na", "unknown", "Unknown", "UNKNOWN", "missing", "Missing", ".")
# Column names that say "a code, not a quantity": their numbers are read as text and used as categories.
CODE_NAME = re.compile(r"(zip|postal|postcode|naics|sic|fips|isbn|phone|code|_cd$|^cd_)", re.IGNORECASE)
ID_NAME = re.compile(r"(^id$|_id$|^id_|\bid\b|uuid|guid|^key$|nr_|_nr$|number$|^loannr)", re.IGNORECASE)
DATE_FORMATS = ("%Y-%m-%d", "%Y/%m/%d", "%d-%b-%y", "%d-%b-%Y", "%d %b %Y", "%b %d, %Y", "%m/%d/%Y", "%d/%m/%Y",
                "%m/%d/%y", "%d/%m/%y", "%d.%m.%Y", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%m/%d/%Y %H:%M")  # fmt: skip
MONEY = re.compile(r"^\(?\s*-?\s*[$€£¥]?\s*-?\d{1,3}(,\d{3})*(\.\d+)?\s*\)?$|^\(?\s*-?\s*[$€£¥]\s*-?\d+(\.\d+)?\s*\)?$")
PERCENT = re.compile(r"^-?\d+(\.\d+)?\s*%$")
ISO_DATE = r"^\d{4}-\d{2}-\d{2}$"
ISO_DATETIME = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}$"
# ISO 8601 as exports write it: a date, or a timestamp with `T` or a space, seconds, fractions, `Z` or an offset
ISO_TIMESTAMP = r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}(:?\d{2})?)?)?$"
CLOCK = r"\d[T ]\d{2}:\d{2}"  # a time of day after a date

RULE_SHARE = 0.95  # a parse rule or a type is adopted when it reads this share of the present values
MAX_CODE_LEVELS = 12  # whole numbers with at most this many values are codes (1/2/3), not quantities
FREE_TEXT_DISTINCT = 0.5  # text with more distinct values than this share of its rows names things, not groups


class DraftError(UserError, ValueError):
    """The file or the options cannot make a dataset; the message names the file or option and the fix."""


@dataclass
class Column:
    """What `init` decided about one column of the file, and why."""

    name: str
    role: Role = "feature"
    kind: str = "text"  # integer, number, category, code, date, boolean-like text, text
    why: list[str] = field(default_factory=list)
    nullable: bool = False
    rule: ParseRule | None = None
    missing_tokens: list[str] = field(default_factory=list)
    kept_tokens: list[str] = field(default_factory=list)  # look like "missing" but are values here (a category NA)
    nonnegative: bool = False
    unreadable: int = 0
    unreadable_example: str | None = None
    levels: list[str] = field(default_factory=list)
    distinct: int = 0
    drop_reason: str | None = None
    has_time: bool = False  # a date column whose values carry a time of day

    @property
    def is_date(self) -> bool:
        return self.kind == "date"


@dataclass
class Draft:
    """Everything `init` decided: the columns, the task, and the config and schema module it will write."""

    name: str
    path: str
    rows: int
    sampled: int
    columns: list[Column]
    task: str
    positive: str | None
    classes: list[str]
    csv: CsvOptions
    split: dict[str, Any]
    tune: dict[str, Any]
    slices: list[str]
    derived: list[dict[str, str]]
    notes: list[str]
    checks: list[Check] = field(default_factory=list)  # features to ask about before training
    slice_reasons: dict[str, str] = field(default_factory=dict)  # why each slice was chosen
    test_path: str | None = None  # an official test file: every row of it is the test part
    test_rows: int | None = None
    missing_target: int = 0  # sampled rows without a target: ingest quarantines them

    def by_role(self, role: Role) -> list[Column]:
        return [c for c in self.columns if c.role == role]


@dataclass(frozen=True)
class Check:
    """A column `init` kept as a feature but asks about before training: what stands out, with its figure, the
    question to answer, and the options that answer it."""

    column: str
    why: str
    question: str
    answers: list[str]

    @property
    def advice(self) -> str:
        """The question and its answers in a line: `known when you predict? If not: --drop x`."""
        if len(self.answers) == 1:
            return f"{self.question} If not: {self.answers[0]}"
        return f"{self.question} {', or '.join(self.answers)}"


def read_sample(path: Path, csv: CsvOptions, max_rows: int, seed: int) -> tuple[pd.DataFrame, int]:
    """The rows of the file (its first `READ_BYTES` when larger) as text, nothing typed and nothing missing but
    empty fields, then a seeded random sample of at most `max_rows` of them; and the number of data rows."""
    if not path.is_file():
        raise DraftError(f"{path}: no such file")
    with path.open("rb") as fh:
        data = fh.read(READ_BYTES)
        more = fh.read(1) != b""
    if not data.strip():
        raise DraftError(f"{path}: the file is empty")
    is_parquet = path.suffix.lower() in (".parquet", ".pq") or data[:4] == b"PAR1"
    nul = data.find(b"\x00")
    if not is_parquet and nul >= 0:
        raise DraftError(f"{path}: binary data, not delimited text (NUL byte at offset {nul})")
    if is_parquet:
        frame = pd.read_parquet(io.BytesIO(data))
        frame = frame.astype({c: "string" for c in frame.columns if not pd.api.types.is_string_dtype(frame[c])})
        frame = frame.astype(object).where(frame.notna(), None)
    else:
        if more:  # a large file: the first READ_BYTES of it, cut at a line's end
            data = data[: data.rfind(b"\n") + 1]
        try:
            opts, data = single_character_separator(csv, data, str(path))
            frame = pd.read_csv(io.BytesIO(data), sep=opts.sep, header=0 if csv.header else None, names=csv.names,
                                dtype=str, keep_default_na=False, na_values=[""], skipinitialspace=csv.skipinitialspace,
                                encoding=csv.encoding, skiprows=csv.skiprows, index_col=False)  # fmt: skip
        except SourceError as exc:
            raise DraftError(str(exc)) from None
        except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
            hint = (
                " (a file without a header line needs --no-header or --names)"
                if "duplicate" in str(exc).lower()
                else ""
            )
            raise DraftError(f"{path}: cannot be read as CSV with separator {csv.sep!r}: {exc}{hint}") from None
    if frame.empty:
        raise DraftError(f"{path}: no data rows")
    if len(frame.columns) < 2:
        raise DraftError(f"{path}: only one column {list(frame.columns)}: is the separator {csv.sep!r} right? (--sep)")
    duplicated = sorted({str(c) for c in frame.columns if str(c).rsplit(".", 1)[0] in map(str, frame.columns) and
                         re.search(r"\.\d+$", str(c))})  # fmt: skip
    if duplicated and csv.header:
        raise DraftError(f"{path}: the header names some columns twice ({', '.join(duplicated)}): if the file has no "
                         "header line, pass --no-header or --names a,b,c")  # fmt: skip
    rows = len(frame) if not more else count_rows(path, csv)
    if len(frame) > max_rows:
        frame = frame.sample(n=max_rows, random_state=seed).sort_index()
    return frame.reset_index(drop=True), rows


READ_BYTES = 512 * 1024 * 1024  # init reads at most this much of a file (then samples it); rows are counted in full


def count_rows(path: Path, csv: CsvOptions) -> int:
    """Data rows of a large file, counted by line ends without keeping it in memory (a quoted line break counts)."""
    lines = 0
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 24), b""):
            lines += block.count(b"\n")
    return lines - (1 if csv.header else 0) - csv.skiprows


def parquet_categories(path: Path) -> set[str]:
    """The columns a Parquet file stores as categories: pandas `category` (its metadata) or an Arrow dictionary
    type (its schema); none for any other file."""
    import pyarrow as arrow
    import pyarrow.parquet as pq

    with path.open("rb") as fh:
        if fh.read(4) != b"PAR1":
            return set()
    try:
        schema = pq.read_schema(path)
    except (OSError, arrow.ArrowException):
        return set()
    pandas = {str(c.get("name")) for c in (schema.pandas_metadata or {}).get("columns", [])
              if c.get("pandas_type") == "categorical"}  # fmt: skip
    return pandas | {f.name for f in schema if arrow.types.is_dictionary(f.type)}


def _keep_categories(columns: list[Column], names: set[str], frame: pd.DataFrame) -> None:
    """A column the file itself types as a category stays one, whatever its values look like (small integers,
    dates): its values are read as text, and a word such as `NA` among them is a level, not a missing value."""
    for column in columns:
        if column.name not in names:
            continue
        column.kept_tokens += [t for t in column.missing_tokens if t not in STRONG_MISSING]
        column.missing_tokens = [t for t in column.missing_tokens if t in STRONG_MISSING]
        values = frame[column.name].dropna().astype(str).str.strip()
        missing = values.isin(column.missing_tokens)
        counts, present = values[missing].value_counts(), values[~missing]
        column.nullable = len(present) < len(frame)
        column.kind, column.rule, column.nonnegative = "text", None, False
        column.unreadable, column.unreadable_example = 0, None
        column.distinct, column.levels = int(present.nunique()), [str(v) for v in present.value_counts().index[:8]]
        column.why = ["its Parquet type is category"] + (
            ["missing written as " + ", ".join(f"{t!r} ×{n}" for t, n in counts.items())] if len(counts) else [])  # fmt: skip


def draft_dataset(
    path: Path,
    target: str | None,
    *,
    name: str | None = None,
    task: str | None = None,
    positive: str | None = None,
    csv: CsvOptions | None = None,
    weight: str | None = None,
    time_column: str | None = None,
    test_from: str | None = None,
    valid_from: str | None = None,
    drop: dict[str, str] | None = None,
    test: Path | None = None,
    max_rows: int = 200_000,
    seed: int = 42,
    today: datetime | None = None,
) -> Draft:
    """Read a sample of the file and decide, column by column, what it is and how it enters the model. With no
    target (`mlcycle schema infer`) the columns are typed and excluded alike, and no task is chosen."""
    csv = csv or CsvOptions()
    name = name or dataset_name(path)
    frame, rows = read_sample(path, csv, max_rows, seed)
    frame.columns = [str(c) for c in frame.columns]
    for option, column in (("--target", target), ("--weight", weight), ("--time-column", time_column)):
        if column is not None and column not in frame.columns:
            hint = " (if the first line is data, not names: --no-header or --names)" if csv.header else ""
            raise DraftError(f"{option} {column!r} is not a column of {path}; its columns: "
                             f"{', '.join(frame.columns)}{hint}")  # fmt: skip
    today = today or datetime.now(UTC)
    columns = [_profile(frame[c], today) for c in frame.columns]
    _keep_categories(columns, parquet_categories(path), frame)
    by_name = {c.name: c for c in columns}
    notes: list[str] = []
    typed = _typed_frame(frame, columns)

    classes: list[str] = []
    if target is not None:
        target_column = by_name[target]
        target_column.role = "target"
        task, positive, classes = _choose_task(typed[target], target_column, task, positive)
        target_column.why.insert(0, f"the target: {task}" + (f", positive class {positive!r}" if positive else ""))
    if weight is not None:
        weights = by_name[weight]
        if weights.kind not in ("integer", "number"):
            raise DraftError(f"--weight {weight!r} holds text, not numbers (e.g. {frame[weight].dropna().iloc[0]!r})")
        weights.role, weights.why = "weight", ["the sample weight: used in training and every metric, never a feature"]
    _drop_on_request(by_name, drop or {}, path)

    rest = [c for c in columns if c.role == "feature"]
    for column in rest:
        _decide_role(column, typed[column.name], rows_in_sample=len(frame))
    if target is not None:
        _scan_leaks(typed, [c for c in rest if c.role == "feature"], target, str(task), positive, name, notes)
    checks = [] if target is None else find_checks(typed, columns, target, str(task), positive, seed)

    split = _choose_split(task or "", time_column, columns, typed, notes, test_from, valid_from, test is not None)
    by_time = split["strategy"] == "time"
    derived = [
        {"name": f"{c.name}_{part}", "source": c.name, "kind": part}
        for c in columns if c.role == "feature" and c.is_date for part in _date_parts(c, typed[c.name], by_time)
    ]  # fmt: skip
    clocks = [c for c in columns if c.role == "feature" and _is_clock(c, typed[c.name])]
    derived += [{"name": f"{c.name}_hour", "source": c.name, "kind": "clock_hour"} for c in clocks]
    for column in clocks:
        column.why = ["hours of the day written as text (6am, 12pm): they enter as the hour 0-23, a category"]
    for column in columns:
        if column.role == "feature" and any(d["source"] == column.name for d in derived):
            column.drop_reason = "enters as the derived features " + ", ".join(
                d["name"] for d in derived if d["source"] == column.name
            )
    slices = _choose_slices(columns, typed, {c.column for c in checks})
    test_rows = None if test is None else _test_file_rows(test, csv, list(frame.columns), path)
    tune = tuning_defaults(rows)
    return Draft(name=name, path=str(path), rows=rows, sampled=len(frame), columns=columns, task=task or "",
                 positive=positive, classes=classes, csv=csv, split=split, tune=tune, slices=list(slices), derived=derived,
                 notes=notes, checks=checks, slice_reasons=slices, test_path=None if test is None else str(test),
                 test_rows=test_rows, missing_target=0 if target is None else int(typed[target].isna().sum()))  # fmt: skip


def dataset_name(path: Path) -> str:
    """A config name from a file name: lower case, letters, digits, `_` and `-`, starting with a letter."""
    stem = re.sub(r"[^a-z0-9_-]+", "_", path.stem.lower()).strip("_-") or "dataset"
    return stem if stem[0].isalpha() else f"d_{stem}"


def _profile(values: pd.Series, today: datetime) -> Column:
    """The column's type and reading rules, from its texts alone."""
    column = Column(name=str(values.name))
    text = values.dropna().astype(str)
    stripped = text.str.strip()
    stripped = stripped[stripped != ""]
    column.nullable = len(stripped) < len(values)
    tokens = _missing_tokens(stripped)
    if tokens:
        found = stripped.isin(tokens)
        kind_of_rest = _kind_of(stripped[~found], today)
        strong = [t for t in tokens if t in STRONG_MISSING]
        weak = [t for t in tokens if t in WEAK_MISSING and kind_of_rest[0] != "text"]
        column.missing_tokens = strong + weak
        column.kept_tokens = [t for t in tokens if t not in column.missing_tokens]
        if column.kept_tokens:
            column.why.append(f"{', '.join(map(repr, column.kept_tokens))} kept as a value: the column holds text, "
                              "so it is a category here, not a missing value")  # fmt: skip
        if column.missing_tokens:
            counts = stripped[stripped.isin(column.missing_tokens)].value_counts()
            column.why.append("missing written as " + ", ".join(f"{t!r} ×{n}" for t, n in counts.items()))
            stripped = stripped[~stripped.isin(column.missing_tokens)]
            column.nullable = True
    kind, rule, share, example = _kind_of(stripped, today)
    column.kind, column.rule = kind, rule
    if kind == "date":
        _describe_time(column, stripped)
    column.distinct = int(stripped.nunique())
    if share < 1.0:
        column.unreadable = round((1 - share) * len(stripped))
        column.unreadable_example = example
    if kind in ("integer", "number") or (rule is not None and rule.kind != "date"):
        numbers = parse_column(stripped, rule)[0] if rule is not None else pd.to_numeric(stripped, errors="coerce")
        column.nonnegative = bool(len(numbers.dropna())) and bool((numbers.dropna() >= 0).all())
    if rule is not None:
        what = {"number": "money or a number written with symbols", "percent": "percentages", "date": "dates"}
        column.why.append(f"{what[rule.kind]}: read by the rule {_describe_rule(rule)}")
    if column.unreadable:
        column.why.append(f"{column.unreadable} value(s) of the sample fit no {kind} reading (e.g. "
                          f"{example!r}): they will be quarantined")  # fmt: skip
    counts = stripped.value_counts()
    column.levels = [str(v) for v in counts.index[:8]]
    return column


def _missing_tokens(stripped: pd.Series) -> list[str]:
    present = set(stripped.unique()) if stripped.nunique() < 1_000_000 else set()
    return [t for t in (*STRONG_MISSING, *WEAK_MISSING) if t in present]


def _kind_of(stripped: pd.Series, today: datetime) -> tuple[str, ParseRule | None, float, str | None]:
    """(kind, parse rule, share of values it reads, an example it does not read)."""
    if stripped.empty:
        return "text", None, 1.0, None
    sample = stripped if len(stripped) <= 50_000 else stripped.sample(50_000, random_state=0)
    numbers = pd.to_numeric(sample, errors="coerce")
    share = float(numbers.notna().mean())
    if share >= RULE_SHARE:
        whole = numbers.dropna()
        integral = bool((whole % 1 == 0).all()) and not sample.str.contains(r"[.eE]", regex=True).any()
        return ("integer" if integral else "number"), None, _share(stripped, None), _example(stripped, None)
    iso = _iso_readable(sample)
    if iso.mean() >= RULE_SHARE:
        return "date", None, float(iso.mean()), None if iso.all() else str(sample[~iso].iloc[0])
    if sample.str.match(PERCENT).mean() >= RULE_SHARE:
        rule = ParseRule(kind="percent", thousands="")
        return "number", rule, _share(stripped, rule), _example(stripped, rule)
    if sample.str.match(MONEY).mean() >= RULE_SHARE and sample.str.contains(r"[$€£¥,]", regex=True).any():
        symbols = "".join(s for s in "$€£¥" if sample.str.contains(re.escape(s), regex=True).any())
        rule = ParseRule(kind="number", currency=symbols, thousands=",")
        return "number", rule, _share(stripped, rule), _example(stripped, rule)
    date_rule = _date_rule(sample, today)
    if date_rule is not None:
        return "date", date_rule, _share(stripped, date_rule), _example(stripped, date_rule)
    return "text", None, 1.0, None


def _date_parts(column: Column, values: pd.Series, by_time: bool = False) -> tuple[str, ...]:
    """The derived features of a date: days since 1970, month and day of the week, and the hour (a category: see
    `HOUR_PARTS`) when the values' times of day differ (in UTC, as every reader takes them). Under a time split the
    year stands for the days: every test day is later than any training day, so trees would give all of them the
    level of the last training weeks, while the test's year (or the one before it) was seen in training
    (benchmarks/own_data.py, bike rentals: RMSE 71.8 with the year, 78.7 with the days)."""
    parts: tuple[str, ...] = ("year" if by_time else "days", "month", "dayofweek")
    if column.has_time and parse_times(values).dropna().dt.hour.nunique() > 1:
        parts += ("hour",)
    return parts


# Derived features that enter as categories: the hour of the day. A day's profile has peaks apart from each other
# (the morning and evening commutes, meals), which one categorical split groups and a number needs a split at each
# edge of; every hour is seen in training, whatever the split. (The day of the week stays a number: Saturday and
# Sunday are its last two values, one split from the weekdays.) benchmarks/own_data.py, bike rentals split by time:
# best validation RMSE 58.2 with the hour as a category against 62.7 as a number, test RMSE 68.9 against 75.4.
HOUR_PARTS = ("clock_hour", "hour")


def _is_clock(column: Column, values: pd.Series) -> bool:
    """Hours of the day written as people write them (`6am`, `12 PM`): they enter as the hour 0-23 (`clock_hour`),
    so `6am` and `6 AM` are one value, and as a category (`HOUR_PARTS`)."""
    present = values.dropna().astype(str)
    return (column.kind in ("category", "text") and len(present) >= 20
            and bool(present.str.match(r"^\s*\d{1,2}\s*(?:am|pm)\s*$", case=False).mean() >= RULE_SHARE))  # fmt: skip


def _describe_time(column: Column, stripped: pd.Series) -> None:
    """Whether a date column's values carry a time of day, and (ISO text) how they are read."""
    if column.rule is not None:
        column.has_time = column.rule.format == "ISO8601" or any(code in str(column.rule.format)
                                                                  for code in ("%H", "%I", "%M", "%S", "%p"))  # fmt: skip
        return
    column.has_time = bool(stripped.str.contains(CLOCK, regex=True).any())
    zoned = bool(stripped.str.contains(r"(?:Z|[+-]\d{2}(?::?\d{2})?)$", regex=True).any())
    what = "ISO 8601 timestamps" if column.has_time else "ISO 8601 dates"
    column.why.append(what + (" with a zone, read as the UTC time they name" if zoned and column.has_time else ""))


def _iso_readable(values: pd.Series) -> pd.Series:
    """Which texts are ISO 8601 dates or timestamps (`Z` and offsets too) that name a real moment."""
    when = pd.to_datetime(values, errors="coerce", format="ISO8601", utc=True)
    return values.str.match(ISO_TIMESTAMP).fillna(False).astype(bool) & when.notna()


def _share(stripped: pd.Series, rule: ParseRule | None) -> float:
    if rule is None:
        return float(pd.to_numeric(stripped, errors="coerce").notna().mean())
    return float(parse_column(stripped, rule)[0].notna().mean())


def _example(stripped: pd.Series, rule: ParseRule | None) -> str | None:
    parsed = parse_column(stripped, rule)[0] if rule is not None else pd.to_numeric(stripped, errors="coerce")
    bad = stripped[parsed.isna().to_numpy()]
    return None if bad.empty else str(bad.iloc[0])


def _date_rule(sample: pd.Series, today: datetime) -> ParseRule | None:
    """The date format that reads the most values, if it reads nearly all; two-digit years pivot on this year."""
    head = sample.head(5000)
    best, best_share = None, 0.0
    for fmt in DATE_FORMATS:
        share = float(pd.to_datetime(head, format=fmt, errors="coerce").notna().mean())
        if share > best_share:
            best, best_share = fmt, share
    if best is None or best_share < RULE_SHARE:
        return None
    return ParseRule(kind="date", format=best, century_pivot=today.year % 100 if "%y" in best else None)


def _describe_rule(rule: ParseRule) -> str:
    if rule.kind == "date":
        pivot = f", two-digit years after {rule.century_pivot:02d} are 19xx" if rule.century_pivot is not None else ""
        return f"date {rule.format!r}{pivot}"
    parts = [f"currency {rule.currency!r}"] if rule.currency else []
    parts += [f"thousands {rule.thousands!r}"] if rule.thousands else []
    return f"{rule.kind}({', '.join(parts)})" if parts else rule.kind


def _typed_frame(frame: pd.DataFrame, columns: list[Column]) -> pd.DataFrame:
    """The sample as training would see it: missing tokens gone, rules applied, numbers as numbers."""
    typed: dict[str, pd.Series] = {}
    for column in columns:
        values = frame[column.name]
        values = values.where(~values.astype(str).str.strip().isin(column.missing_tokens) & values.notna(), None)
        if column.rule is not None:
            values = parse_column(values.astype(object).where(values.notna(), None), column.rule)[0]
        elif column.kind in ("integer", "number"):
            values = pd.to_numeric(values, errors="coerce")
        elif column.is_date:
            values = values.astype(str).str.strip().where(values.notna(), None)
        else:
            values = values.astype(str).str.strip().where(values.notna(), None)
        typed[column.name] = values
    return pd.DataFrame(typed)


def _choose_task(
    target: pd.Series, column: Column, task: str | None, positive: str | None
) -> tuple[str, str | None, list[str]]:
    present = target.dropna()
    if present.empty:
        raise DraftError(f"--target {column.name!r} has no values")
    labels = sorted(present.astype(str).map(_label_text).unique())
    numeric = column.kind in ("integer", "number")
    if task is None:
        if len(labels) == 2:
            task = "binary"
        elif numeric and (column.kind == "number" or len(labels) > 20):
            task = "regression"
        elif len(labels) <= 50:
            task = "multiclass"
        else:
            raise DraftError(f"--target {column.name!r} holds {len(labels)} distinct texts: too many classes; "
                             "pass --task regression if they are numbers")  # fmt: skip
        column.why.append(f"task guessed from its {len(labels)} distinct values (--task to choose)")
    if task == "regression":
        if not numeric:
            raise DraftError(f"--task regression needs a numeric target; {column.name!r} holds text such as "
                             f"{labels[0]!r}")  # fmt: skip
        return task, None, []
    if task == "binary":
        if len(labels) != 2:
            raise DraftError(f"--task binary needs a target with two values; {column.name!r} has {len(labels)}: "
                             f"{', '.join(labels[:10])}")  # fmt: skip
        if positive is None:
            counts = present.astype(str).map(_label_text).value_counts()
            positive = str(counts.index[-1])
            column.why.append(f"positive class: the rarer value {positive!r} ({counts.iloc[-1]} of {counts.sum()}; "
                              "--positive to choose)")  # fmt: skip
        elif positive not in labels:
            raise DraftError(f"--positive {positive!r} is not a value of {column.name!r}: {', '.join(labels)}")
        return task, positive, labels
    if task == "multiclass":
        return task, None, labels
    raise DraftError(f"--task must be binary, multiclass or regression, got {task!r}")


def _label_text(value: str) -> str:
    return value[:-2] if re.fullmatch(r"-?\d+\.0", value) else value


def _decide_role(column: Column, values: pd.Series, rows_in_sample: int) -> None:
    """Id, dropped (constant, free text) or feature, and for a feature: number or category."""
    present = values.dropna()
    n = len(present)
    distinct = int(present.nunique()) if n else 0
    if n == 0:
        column.role, column.drop_reason = "dropped", "empty: no values in the sample"
        return
    top_share = float(present.value_counts().iloc[0] / rows_in_sample) if n else 1.0
    others = rows_in_sample - int(present.value_counts().iloc[0])
    if distinct == 1 or (top_share >= 0.999 and others < max(20, 0.0005 * rows_in_sample)):
        top = _plain(present.value_counts().index[0])
        column.role = "dropped"
        column.drop_reason = (f"constant: every value is {top!r}" if distinct == 1 and n == rows_in_sample else
                              f"near-constant: {rows_in_sample - others:,} of {rows_in_sample:,} rows are {top!r}")  # fmt: skip
        return
    unique_share = distinct / n
    whole = column.kind == "integer"
    one_word = column.kind == "text" and not present.astype(str).str.contains(" ", regex=False).any()
    if unique_share >= 0.999 and n >= 20 and (whole or ID_NAME.search(column.name) or one_word):
        column.role = "id"
        column.why.append(
            f"an identifier: {distinct:,} distinct values in {n:,} rows; kept for tracing, never a feature"
        )
        return
    if column.kind == "text":
        if unique_share > FREE_TEXT_DISTINCT and distinct > 100:
            column.role = "dropped"
            column.drop_reason = (f"free text or names: {distinct:,} distinct values in {n:,} rows, too many to "
                                  "learn from as categories")  # fmt: skip
            return
        column.kind = "category"
        column.why.append(f"a category with {distinct:,} values" + (" (the most frequent kept, the rest 'other')"
                                                                    if distinct > 200 else ""))  # fmt: skip
        return
    few = distinct <= MAX_CODE_LEVELS and n >= 20 * distinct  # few values, each seen often: labels, not counts
    if whole and (CODE_NAME.search(column.name) or few):
        column.kind = "code"
        reason = (
            f"its name says so; {distinct:,} values" if CODE_NAME.search(column.name) else f"only {distinct} values"
        )
        column.why.append(f"a code, used as a category ({reason}): its numbers are labels, not amounts")
        return
    if column.is_date:
        return


def _plain(value: Any) -> Any:
    """A value as a person writes it: 0 rather than np.float64(0.0)."""
    if isinstance(value, np.generic):
        value = value.item()
    return int(value) if isinstance(value, float) and value.is_integer() else value


USER_DROP = "dropped by the user (init --drop)"


def parse_drop(values: list[str] | dict[str, str] | None) -> dict[str, str]:
    """`--drop` as column → reason: `A,B` (each with the default reason) or `A:why` (the reason ends at the next
    comma: write a longer one in the config's `drop:`); a mapping is taken as it is."""
    if isinstance(values, dict):
        return {str(column): str(reason).strip() or USER_DROP for column, reason in values.items()}
    drop: dict[str, str] = {}
    for value in values or []:
        for item in value.split(","):
            column, _, reason = item.partition(":")
            if not column.strip():
                if item.strip():
                    raise DraftError(f"--drop {value!r}: a column name is missing before {item.strip()!r}")
                continue
            drop[column.strip()] = reason.strip() or USER_DROP
    return drop


def _drop_on_request(by_name: dict[str, Column], drop: dict[str, str], path: Path) -> None:
    """The columns the user leaves out: in the training schema only, never a feature nor a request field."""
    for column_name, reason in drop.items():
        column = by_name.get(column_name)
        if column is None:
            raise DraftError(f"--drop {column_name!r} is not a column of {path}; its columns: {', '.join(by_name)}")
        if column.role in ("target", "weight"):
            raise DraftError(f"--drop {column_name!r} is the {column.role}; drop another column or choose another "
                             f"--{column.role}")  # fmt: skip
        column.role, column.drop_reason = "dropped", reason or USER_DROP


CHECK_ROWS = 50_000  # each column's strength alone is measured on at most this many sampled rows
# A column stands out when alone it explains far more than every other: ROC AUC (binary; multiclass: the mean over
# classes, one against the rest) of at least 0.85 and 0.15 above the next strongest column, or R² (regression) of at
# least 0.5 and 0.3 above the next. Up to three columns may stand out together (a start time and a start delay).
STANDOUT_AUC = (0.85, 0.15)
STANDOUT_R2 = (0.5, 0.3)
# Names that say a column was written by a model or after the moment of prediction, matched on the name's words
# (lower case, camelCase split): a model's output (`prediction`, `predicted_probability`, `*_pred*`, `y_hat`,
# `score` alone or a model's or risk score), and an outcome's time, amount or state (`*_after*`, `arrival_*`,
# `actual_*`, `*_result`, `closed_*`, `chg_off_*`, `paid_off`, `cancelled`, ...). A column that shares a word of
# four letters or more with the target (`start_delay` beside the target `arrival_delay`) is asked about too.
MODEL_OUTPUT = re.compile(r"(^|_)(preds?|predict\w*|forecast\w*|yhat|fitted|propensity|probs?|proba|probability|"
                          r"probabilities|logit)(_|$|\d)|_hat$|^scores?$|^scores?_|(^|_)(model|risk)_?score")  # fmt: skip
AFTER_OUTCOME = re.compile(r"(^|_)(after|later|actual|outcome|results?|final|arrival|arrived|arrive|closed|closing|"
                           r"completed|completion|resolved|resolution|settled|settlement|recovery|recovered|"
                           r"cancell?ed|cancellation|discharged?|follow_?up|chg_?off|charged?_?off|paid_?off|"
                           r"pay_?off|repaid|end_date|end_time)(_|$|\d)")  # fmt: skip
GENERIC_WORDS = {"date", "time", "code", "type", "flag", "rate", "amount", "total", "count", "number", "value", "year",
                 "month", "status", "class", "label", "target", "level", "name"}  # fmt: skip
# Weights: a survey's or a sample's (`*weight*`, `*wgt*` as in `fnlwgt`, `PWGTP`, and IPUMS's `PERWT`, `HHWT`).
WEIGHT_NAME = re.compile(r"weight|wgt|(^|_)(wt|perwt|hhwt|asecwt|wtfinl)(_|$|\d)")


def _words(name: str) -> list[str]:
    spaced = re.sub(r"(?<=[a-z])(?=[A-Z])", "_", name).lower()  # camelCase, not RAC1P
    return [w for w in re.split(r"[^a-z0-9]+", spaced) if w]


def find_checks(typed: pd.DataFrame, columns: list[Column], target: str, task: str, positive: str | None,
                seed: int) -> list[Check]:  # fmt: skip
    """The features to ask about before training: a column that alone explains far more than the rest, a name
    that says it was written later or by a model, a weight. Each stays a feature until the user answers."""
    features = [c for c in columns if c.role == "feature"]
    strength = measure_strength(typed, features, target, task, positive, seed)
    metric = "R²" if task == "regression" else "ROC AUC"
    standout, runner_up = _standouts(strength, *(STANDOUT_R2 if task == "regression" else STANDOUT_AUC))
    target_words = {w for w in _words(target) if len(w) >= 4} - GENERIC_WORDS
    checks: list[Check] = []
    for column in features:
        joined = "_".join(_words(column.name))
        reasons: list[str] = []
        if column.name in standout and runner_up is not None:
            reasons.append(f"alone it gives {metric} {strength[column.name]:.2f}, far above the rest (next: "
                           f"{runner_up} {strength[runner_up]:.2f})")  # fmt: skip
        weight = column.kind in ("integer", "number", "code") and WEIGHT_NAME.search(joined) is not None
        later = AFTER_OUTCOME.search(joined)
        shared = sorted(target_words & set(_words(column.name)))
        if weight:
            reasons.append("named like a weight")
        elif MODEL_OUTPUT.search(joined):
            reasons.append("named like a model's output")
        elif later:
            reasons.append(f"named like something recorded after the outcome ({later.group(2)!r})")
        elif shared:
            reasons.append(f"shares {shared[0]!r} with the target's name")
        if not reasons:
            continue
        if column.name not in standout and column.name in strength:
            reasons.append(f"alone {metric} {strength[column.name]:.2f}")
        name = column.name
        if weight:
            checks.append(Check(name, ", ".join(reasons), "a survey weight?", [f"--weight {name}", f"--drop {name}"]))
        else:
            checks.append(Check(name, ", ".join(reasons), "known when you predict?", [f"--drop {name}"]))
    return checks


def measure_strength(typed: pd.DataFrame, features: list[Column], target: str, task: str, positive: str | None,
                     seed: int) -> dict[str, float]:  # fmt: skip
    """Each feature's strength alone, on at most `CHECK_ROWS` sampled rows that have a target: ROC AUC (binary;
    multiclass: the mean over its ten largest classes, each against the rest) or adjusted R² of the target's mean
    per bin or value (regression)."""
    from mlcycle.tasks.train.prepare import single_feature_auc

    frame = typed.dropna(subset=[target])
    if len(frame) > CHECK_ROWS:
        frame = frame.sample(n=CHECK_ROWS, random_state=seed)
    labels = frame[target].astype(str).map(_label_text)
    classes = [positive] if task == "binary" else list(labels.value_counts().index[:10])
    strength: dict[str, float] = {}
    for column in features:
        values = _date_number(frame[column.name]) if column.is_date else frame[column.name]
        if task == "regression":
            value = single_feature_r2(values, pd.to_numeric(frame[target], errors="coerce"))
        else:
            aucs = [single_feature_auc(values, (labels == k).to_numpy(dtype=int)) for k in classes]
            found = [a for a in aucs if a is not None]
            value = float(np.mean(found)) if found else None
        if value is not None:
            strength[column.name] = value
    return strength


def single_feature_r2(values: pd.Series, target: pd.Series, bins: int = 20, min_rows: int = 10) -> float | None:
    """How much of a numeric target one column alone explains: the adjusted R² of the target's mean per quantile
    bin (numbers) or per value (anything else; values of fewer than `min_rows` rows pooled), missing values a group
    of their own."""
    keep = target.notna().to_numpy()
    values, y = values[keep], target[keep].astype("float64")
    if len(y) < 2 * min_rows or float(y.std()) == 0:
        return None
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        numbers = values.astype("float64")
        codes = pd.qcut(numbers, q=bins, duplicates="drop", labels=False) if numbers.nunique() > bins else numbers
        groups = pd.Series(codes, index=values.index).astype(str).where(numbers.notna(), "<missing>")
    else:
        text = values.astype("object").where(values.notna(), "<missing>").astype(str)
        counts = text.value_counts()
        groups = text.where(text.isin(counts.index[counts >= min_rows]), "<rare>")
    count = int(groups.nunique())
    if count < 2 or count >= len(y) - 1:
        return None
    means = y.groupby(groups).transform("mean")
    r2 = 1 - float(((y - means) ** 2).sum() / ((y - y.mean()) ** 2).sum())
    return max(0.0, 1 - (1 - r2) * (len(y) - 1) / (len(y) - count))


def _standouts(strength: dict[str, float], floor: float, gap: float) -> tuple[list[str], str | None]:
    """The strongest columns (one to three) that reach `floor` and stand `gap` above every other, and the next."""
    ranked = sorted(strength, key=lambda c: -strength[c])
    for k in range(1, min(3, len(ranked) - 1) + 1):
        if strength[ranked[k - 1]] >= floor and strength[ranked[k - 1]] - strength[ranked[k]] >= gap:
            return ranked[:k], ranked[k]
    return [], None


def _test_file_rows(test: Path, csv: CsvOptions, columns: list[str], path: Path) -> int:
    """The data rows of the official test file, once its columns are checked against the training file's (read
    with the same CSV options, as ingest will)."""
    if not test.is_file():
        raise DraftError(f"--test {test}: no such file")
    if test.suffix.lower() in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(test)
        names, rows = [str(n) for n in parquet.schema_arrow.names], int(parquet.metadata.num_rows)
    else:
        with test.open("rb") as fh:
            head = fh.read(1 << 20)
        head = head[: head.rfind(b"\n") + 1] or head
        try:
            opts, head = single_character_separator(csv, head, str(test))
            frame = pd.read_csv(io.BytesIO(head), sep=opts.sep, header=0 if csv.header else None, names=csv.names,
                                dtype=str, keep_default_na=False, nrows=100, skipinitialspace=csv.skipinitialspace,
                                encoding=csv.encoding, skiprows=csv.skiprows, index_col=False)  # fmt: skip
        except (SourceError, pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
            raise DraftError(f"--test {test}: cannot be read as {path} is ({exc})") from None
        names, rows = [str(c) for c in frame.columns], count_rows(test, csv)
    missing, extra = [c for c in columns if c not in names], [c for c in names if c not in columns]
    if missing or extra:
        said = "; ".join(part for part in (f"lacks {', '.join(missing)}" if missing else "",
                                           f"has {', '.join(extra)} besides" if extra else "") if part)  # fmt: skip
        raise DraftError(f"--test {test} does not have the columns of {path}: it {said} (both files are read with "
                         "the same --sep and header options)")  # fmt: skip
    return rows


def _scan_leaks(typed: pd.DataFrame, features: list[Column], target: str, task: str, positive: str | None, name: str,
                notes: list[str]) -> None:  # fmt: skip
    """The training flow's leakage check on the sample, so the config starts with leaking columns dropped."""
    from mlcycle.tasks.train.prepare import Splits, find_leaks

    if task not in ("binary", "regression"):
        return
    frame = typed[[c.name for c in features] + [target]].dropna(subset=[target])
    if frame.empty:
        return
    config = _probe_config(name, target, task, positive)
    splits = Splits(train=frame, valid=frame.iloc[:0], test=frame.iloc[:0])
    numeric_dates = {c.name: _date_number(frame[c.name]) for c in features if c.is_date}
    scan = splits if not numeric_dates else Splits(frame.assign(**numeric_dates), frame.iloc[:0], frame.iloc[:0])
    quiet = logging.getLogger("mlcycle.prepare")
    level, quiet.level = quiet.level, logging.ERROR  # the summary names what it found; no second report
    try:
        report = find_leaks(scan, [c.name for c in features], config)
    finally:
        quiet.setLevel(level)
    by_name = {c.name: c for c in features}
    for suspect in report.suspects:
        names = list(suspect["columns"])  # type: ignore[call-overload]
        for column_name in names:
            column = by_name[column_name]
            if column.role == "feature":
                column.role = "dropped"
                together = f" (with {', '.join(n for n in names if n != column_name)})" if len(names) > 1 else ""
                column.drop_reason = f"likely target leak{together}: {suspect['reason']}"
    if report.suspects:
        notes.append(
            "leakage scan on the sample: " + "; ".join(f"{s['columns']} {s['reason']}" for s in report.suspects)
        )


def _date_number(values: pd.Series) -> pd.Series:
    return (parse_times(values) - pd.Timestamp("1970-01-01")).dt.days


def _probe_config(name: str, target: str, task: str, positive: str | None) -> PipelineConfig:
    return PipelineConfig.model_validate({
        "name": name, "schema_ref": "mlcycle.schemas.adult:AdultSchema", "features_schema_ref": "mlcycle.schemas.adult:AdultFeatures",
        "target": target, "task": task, "positive_label": positive, "split": {"strategy": "random"},
        "source": {"files": [{"path": "unused"}]},
    })  # fmt: skip


def _choose_split(task: str, time_column: str | None, columns: list[Column], typed: pd.DataFrame, notes: list[str],
                  test_from: str | None = None, valid_from: str | None = None,
                  has_test_file: bool = False) -> dict[str, Any]:  # fmt: skip
    """A time split when a time column is named (or cuts are given and one date column orders the rows), else a
    random or stratified one. Under a time split, periodic codes and the time columns become ordered numbers."""
    cuts = {k: _cut_value(v) for k, v in (("valid_from", valid_from), ("test_from", test_from)) if v is not None}
    if "test_from" in cuts and has_test_file:
        raise DraftError("--test-from and --test both choose the test rows: pass one of them")
    if time_column is None and cuts:
        time_column = _only_date_column(columns, "--test-from" if "test_from" in cuts else "--valid-from")
        notes.append(f"the split is by time on {time_column}, the only date column (--time-column to choose)")
    if time_column is None:
        ordered = [c.name for c in columns if c.is_date and c.role == "feature" and _ordered(typed[c.name])]
        if ordered:
            notes.append(f"{ordered[0]} orders the rows in time: `--time-column {ordered[0]}` splits by time instead "
                         "(train on the past, test on the latest)")  # fmt: skip
        strategy = "stratified" if task in ("binary", "multiclass") else "random"
        return {"strategy": strategy, "valid_size": 0.15, "test_size": 0.15}
    by_name = {c.name: c for c in columns}
    time_columns = _time_columns(by_name[time_column], columns, typed, notes)
    split: dict[str, Any] = {"strategy": "time", "time_columns": time_columns, "valid_size": 0.15, "test_size": 0.15,
                             **cuts}  # fmt: skip
    sizes = _try_time_split(split, typed, has_test_file)
    if cuts:
        notes.append("the time split on the rows read: " + ", ".join(f"{n:,} {part}" for part, n in sizes.items()
                                                                      if n or part != "test"))  # fmt: skip
    for name in time_columns:
        column = by_name[name]
        if column.nullable:
            column.nullable = False
            column.why.append("rows without a value are quarantined: a time split needs a time per row")
    by_name[time_column].why.append("orders the rows in time: the split is by time (train on the past, test on the "
                                    "latest" + (f", from {cuts['test_from']}" if "test_from" in cuts else "") + ")")  # fmt: skip
    _number_periods(columns, typed, time_columns)
    return split


def _cut_value(value: object) -> int | float | str:
    """A cut as the config writes it: a number for a numeric time column (`2021`), else the text (`2021-11-01`)."""
    if hasattr(value, "isoformat"):  # a date or datetime, from the Python API
        return str(value.isoformat())
    try:
        number = float(str(value))
    except ValueError:
        return str(value).strip()
    return int(number) if number.is_integer() else number


def _only_date_column(columns: list[Column], option: str) -> str:
    dates = [c.name for c in columns if c.is_date and c.role in ("feature", "dropped")]
    if len(dates) != 1:
        found = f" (dates: {', '.join(dates)})" if dates else " (init found no date column)"
        raise DraftError(f"{option} cuts a time split: name the column that orders the rows with --time-column{found}")
    return dates[0]


YEAR_NAME = re.compile(r"year|(^|_)(yr|yyyy)(_|$)", re.IGNORECASE)
MONTH_NAME = re.compile(r"month|mnth|(^|_)(mon|mm)(_|$)", re.IGNORECASE)
# Names of periodic codes, and what each is; a month, day of the week and hour are also known by their values.
PERIOD_NAMES = (
    ("a month", MONTH_NAME),
    ("a day of the week", re.compile(r"weekday|week_day|day_?of_?week|(^|_)(dow|wday)(_|$)", re.IGNORECASE)),
    ("an hour", re.compile(r"(^|_)(hour|hr|hh)(_|$)|hour_?of_?day", re.IGNORECASE)),
    ("a quarter", re.compile(r"quarter|(^|_)qtr(_|$)", re.IGNORECASE)),
)
PERIOD_VALUES = (("a month", (set(range(1, 13)),)), ("a day of the week", (set(range(7)), set(range(1, 8)))),
                 ("an hour", (set(range(24)),)))  # fmt: skip


def _whole(values: pd.Series) -> pd.Series | None:
    """The present values as whole numbers, or None if they are not all whole numbers."""
    present = values.dropna()
    if present.empty or not pd.api.types.is_numeric_dtype(present) or not bool((present % 1 == 0).all()):
        return None
    return present.astype("int64")


def _time_columns(column: Column, columns: list[Column], typed: pd.DataFrame, notes: list[str]) -> list[str]:
    """The split's time columns for `--time-column`: a date or timestamp alone; a number alone (a year, epoch
    seconds, a period index); a month with the year beside it (`[year, month]`: the month of that year)."""
    if column.is_date:
        return [column.name]
    numbers = _whole(typed[column.name])
    if column.kind not in ("integer", "number", "code") or not pd.api.types.is_numeric_dtype(typed[column.name]):
        example = typed[column.name].dropna()
        shown = f" (e.g. {example.iloc[0]!r})" if len(example) else ""
        raise DraftError(f"--time-column {column.name!r} holds neither dates nor numbers{shown}: a time column holds "
                         "ISO 8601 dates or timestamps (2021-03-04, 2021-03-04T10:00:00Z), dates in a format init "
                         "reads, or numbers (a year, a month with its year beside it, epoch seconds)")  # fmt: skip
    month = numbers is not None and numbers.between(1, 12).all() and (
        bool(MONTH_NAME.search(column.name)) or set(numbers) == set(range(1, 13)))  # fmt: skip
    if not month:
        return [column.name]
    year = next((c for c in columns if c is not column and YEAR_NAME.search(c.name)
                 and (years := _whole(typed[c.name])) is not None and years.between(1000, 9999).all()), None)  # fmt: skip
    if year is None:
        notes.append(f"--time-column {column.name}: months alone order the rows, so a file of several years mixes "
                     f"them; with a year column, set split.time_columns: [<year>, {column.name}]")  # fmt: skip
        return [column.name]
    column.why.append(f"a month: with the year {year.name!r} beside it, the rows are ordered by {year.name}, then "
                      f"{column.name}")  # fmt: skip
    return [year.name, column.name]


def _try_time_split(split: dict[str, Any], typed: pd.DataFrame, has_test_file: bool) -> dict[str, int]:
    """The drafted time split made on the sample, so that a cut leaving a part empty is refused now, by option;
    the rows of the sample in each part."""
    from mlcycle.schemas.config import SplitConfig
    from mlcycle.tasks.train.prepare import LeakageError, _time_split

    frame = typed[split["time_columns"]].dropna()
    if frame.empty:
        raise DraftError(f"--time-column: {split['time_columns']} hold no values")
    try:
        # with an official test file, every row read here is training or validation
        parts = _time_split(frame, SplitConfig.model_validate(split), has_test=has_test_file,
                            pinned=pd.Series(False, index=frame.index))  # fmt: skip
    except LeakageError as exc:
        message = str(exc).replace("split.test_from", "--test-from").replace("split.valid_from", "--valid-from")
        raise DraftError(f"{message} (in the {len(frame):,} rows read)") from None
    return parts.sizes()


def _number_periods(columns: list[Column], typed: pd.DataFrame, time_columns: list[str]) -> None:
    """Under a time split, a code that is a period (a month, a weekday, an hour) or a time column is an ordered
    number: as a category, the later periods of validation and test would be values training never saw."""
    for column in columns:
        if column.role != "feature" or column.kind != "code":
            continue
        what = "a time column" if column.name in time_columns else _period(column, typed[column.name])
        if what is None:
            continue
        column.kind = "integer"
        column.why = [w for w in column.why if not w.startswith("a code")]
        column.why.append(f"{what}: an ordered number, not a code, under a time split (as a code, later periods "
                          "would be values training never saw)")  # fmt: skip


def _period(column: Column, values: pd.Series) -> str | None:
    """What periodic code the column is, by its name or its values: a month (1-12), a day of the week, an hour."""
    numbers = _whole(values)
    if numbers is None or numbers.min() < 0 or numbers.max() > 23:
        return None
    for what, name in PERIOD_NAMES:
        if name.search(column.name):
            return what
    levels = set(numbers)
    return next((what for what, sets in PERIOD_VALUES if levels in sets), None)


def _ordered(values: pd.Series) -> bool:
    when = parse_times(values).dropna()
    return len(when) > 10 and bool(when.is_monotonic_increasing)


# Columns a model's fairness is checked on first, by family (one slice per family), as exports and the US census
# files name them (ACS PUMS `SEX`, `RAC1P`, `HISP`): matched on the name's words. A numeric age (`AGEP`) is no
# slice (a group per year); a column of age bands is.
FAIRNESS_NAMES = (
    ("sex", re.compile(r"(^|_)(sex|gender|pesex)(_|$)")),
    ("race", re.compile(r"(^|_)(race|races|rac1p|rac2p|rac3p|raceeth|racethn|ptdtrace)(_|$)")),
    ("ethnicity", re.compile(r"(^|_)(ethnicity|ethnic|hispanic|hisp|latino|pehspnon)(_|$)")),
    ("age band", re.compile(r"(^|_)age_?(group|grp|band|bracket|cat|category|range|bin|class)s?(_|$)|^age$")),
)
POPULOUS = 0.05  # a group of at least this share of the sampled rows is worth a slice of the gate
MAX_SLICES = 3


def _choose_slices(columns: list[Column], typed: pd.DataFrame, flagged: set[str]) -> dict[str, str]:
    """The gate's slices, each with why it was chosen: first the columns people check for fairness (sex, race,
    ethnicity, age bands; one per family, even one the user dropped as a feature), then, up to two, the
    categorical features of 2 to 8 values whose groups are most populous."""
    chosen: dict[str, str] = {}
    for family, pattern in FAIRNESS_NAMES:
        for column in columns:
            if len(chosen) >= MAX_SLICES or column.role not in ("feature", "dropped") or column.name in chosen:
                continue
            if column.kind not in ("category", "code", "integer") or not 2 <= column.distinct <= 30:
                continue
            shares = typed[column.name].value_counts(normalize=True, dropna=False)
            if pattern.search("_".join(_words(column.name))) and int((shares >= POPULOUS).sum()) >= 2:
                chosen[column.name] = (f"checked for fairness first ({family}): {len(shares)} groups, "
                                       f"{int((shares >= POPULOUS).sum())} of them with {POPULOUS:.0%} of the rows or "
                                       "more")  # fmt: skip
                break
    ranked: list[tuple[int, float, str, int, int]] = []
    for column in columns:
        if column.role != "feature" or column.kind not in ("category", "code") or not 2 <= column.distinct <= 8:
            continue
        if column.name in chosen or column.name in flagged:
            continue
        shares = typed[column.name].value_counts(normalize=True, dropna=False)
        populous = shares[shares >= POPULOUS]
        if len(populous) >= 2:
            ranked.append((-min(len(populous), 4), -float(populous.min()), column.name, len(shares), len(populous)))
    fallback = "no sex, race or age column; " if not chosen else ""
    for _, smallest, name, count, populous_count in sorted(ranked)[: max(0, 2 - len(chosen))]:
        chosen[name] = (f"{fallback}{count} groups, {populous_count} with {POPULOUS:.0%} of the rows or more (the "
                        f"smallest of them {-smallest:.0%})")  # fmt: skip
    return chosen


def tuning_defaults(rows: int) -> dict[str, Any]:
    """The search sized to the data, so that its budget holds a few dozen trials to compare on a 2-core machine.

    A small table gets TPE over the whole default space. From 50,000 rows a round costs tens of milliseconds on a
    core, and the space starts where a few hundred rounds suffice: no learning rate below 0.05 (0.01 needs over a
    thousand rounds, 400 of them before ASHA's first cut) and at most 256 bins (512 cost twice as much a round).
    Measured on a synthetic 190,000-row table on a busy 2-core machine: 15 trials finished in 180 s with the whole
    space, 40 with this one (best validation log loss 0.5287 and 0.5291).
    A large table gets random search (few trials: TPE cannot learn from them) and fewer rounds."""
    if rows < 20_000:
        return {"searcher": "optuna", "time_budget_s": 60, "num_samples": 200, "max_rounds": 2000}
    if rows < 50_000:
        return {"searcher": "optuna", "time_budget_s": 180, "num_samples": 500, "max_rounds": 2000}
    if rows < 200_000:
        return {"searcher": "optuna", "time_budget_s": 180, "num_samples": 500, "max_rounds": 1000,
                "space": {"eta": [0.05, 0.3], "max_bin": [32, 256]}}  # fmt: skip
    large = {"eta": [0.05, 0.3], "max_depth": [4, 10], "max_bin": [32, 256]}
    if rows < 2_000_000:
        return {"searcher": "random", "time_budget_s": 300, "num_samples": 200, "max_rounds": 1500, "space": large}
    return {"searcher": "random", "time_budget_s": 600, "num_samples": 100, "max_rounds": 1000, "space": large}


# Writing: the schema module and the config, both meant to be read and edited by a person.


def identifier(column: str) -> str:
    name = re.sub(r"\W+", "_", column).strip("_") or "column"
    if name[0].isdigit():
        name = f"c_{name}"
    return f"{name}_" if keyword.iskeyword(name) else name


def class_name(name: str) -> str:
    return "".join(part.capitalize() for part in re.split(r"[^0-9a-zA-Z]+", name) if part)


def schema_module(draft: Draft) -> str:
    """`schemas/<name>.py`: the features schema (what a request carries) and the training schema (a row of the
    file), each field commented where `init` guessed."""
    title = class_name(draft.name)
    features = [c for c in draft.columns if c.role == "feature"]
    training_only = [c for c in draft.columns if c.role != "feature"]
    dates = [c for c in draft.columns if c.is_date and (c.role == "feature" or c.role == "dropped")]
    lines = [
        f'"""{draft.name}: drafted by `mlcycle init` from {draft.path} ({draft.rows:,} rows, {draft.sampled:,} read '
        'for the draft). Review every field."""',
        "",
        "from __future__ import annotations",
        "",
        *(["import pandas as pd"] if dates else []),
        "import pandera.pandas as pa",
        "from pandera.typing import Series",
        "",
        "",
        f"class {title}Features(pa.DataFrameModel):",
        f'    """One {draft.name} record as the service receives it."""',
        "",
    ]
    asked = {check.column: check for check in draft.checks}
    for column in features:
        if column.name in asked:
            lines.append(f"    # check before training: {asked[column.name].why}. {asked[column.name].advice}")
        lines += _field_lines(column)
    feature_dates = [c for c in features if c.is_date]
    if feature_dates:
        lines += _date_check(feature_dates)
    lines += ["", "    class Config:", "        strict = True", "        coerce = True", "", ""]
    lines += [f"class {title}Schema({title}Features):", f'    """A row of {draft.path}: the features and the rest."""',
              ""]  # fmt: skip
    lines += [line for c in training_only for line in _field_lines(c, draft)]
    other_dates = [c for c in training_only if c.is_date]
    if other_dates:
        lines += _date_check(other_dates, suffix="_training")
    if not training_only:
        lines.append("    pass")
    return "\n".join(lines).rstrip() + "\n"


def _py(value: Any) -> str:
    """A Python literal with double quotes, as the formatter writes them."""
    import json

    return json.dumps(value, ensure_ascii=False)


def _date_check(columns: list[Column], suffix: str = "") -> list[str]:
    names = ", ".join(_py(c.name) for c in columns)
    return ["", f"    @pa.check({names})", "    @classmethod", f"    def is_calendar_date{suffix}(cls, series: Series[str]) -> Series[bool]:",
            '        return pd.to_datetime(series, format="ISO8601", errors="coerce", utc=True).notna()']  # fmt: skip


def _field_lines(column: Column, draft: Draft | None = None) -> list[str]:
    args: list[str] = []
    comments: list[str] = []
    if column.role == "target" and draft is not None and draft.task in ("binary", "multiclass"):
        annotation = "str"
        args.append(f"isin={_py(draft.classes)}")
    elif column.kind in ("integer", "number"):
        annotation = "int" if column.kind == "integer" and not column.nullable and column.rule is None else "float"
        if column.kind == "integer" and annotation == "float":
            comments.append("whole numbers with missing values: float, as int64 holds no missing value")
        if column.nonnegative:
            args.append("ge=0")
            comments.append("never negative in the sample; no upper bound, so larger values to come pass")
    elif column.is_date:
        annotation = "str"
        fmt = (ISO_DATE if not column.has_time else ISO_DATETIME if column.rule is not None  # a rule writes this
               else ISO_TIMESTAMP)  # fmt: skip
        args.append(f'str_matches=r"{fmt}"')
        comments.append("a date as ISO text" + (f" (read from {column.rule.format!r})" if column.rule else ""))
    else:
        annotation = "str"
        if column.kind in ("category", "code") and column.distinct <= 30:
            comments.append(f"seen: {', '.join(column.levels[:8])}{', ...' if column.distinct > 8 else ''} "
                            "(no isin: a new value is served as 'other'/missing, not refused)")  # fmt: skip
    if column.nullable and column.role != "target":
        args.append("nullable=True")
    attribute = identifier(column.name)
    if attribute != column.name:
        args.append(f"alias={_py(column.name)}")
    if column.role == "dropped" and column.drop_reason:
        comments.insert(0, f"not a feature: {column.drop_reason}")
    elif column.role in ("id", "weight"):
        comments.insert(0, column.why[0] if column.why else column.role)
    if column.unreadable:
        comments.append(f"{column.unreadable} sampled value(s) such as {column.unreadable_example!r} do not fit: "
                        "quarantined at ingest")  # fmt: skip
    out = [f"    # {c}" for c in comments]
    out.append(f"    {attribute}: Series[{annotation}] = pa.Field({', '.join(args)})")
    return out


def config_yaml(draft: Draft, schema_file: str) -> str:
    """`configs/<name>.yaml`, with a comment on every decision `init` made; `schema_file` is the drafted schema's
    path relative to the project folder (`schemas/<name>.py`)."""
    title = class_name(draft.name)
    features = [c for c in draft.columns if c.role == "feature"]
    target = next(c for c in draft.columns if c.role == "target")
    ids = [c.name for c in draft.columns if c.role == "id"]
    weights = [c.name for c in draft.columns if c.role == "weight"]
    dropped = [(c.name, c.drop_reason or "") for c in draft.columns if c.drop_reason]
    tokens = sorted({t for c in draft.columns for t in c.missing_tokens})
    per_column = {c.name: c.missing_tokens for c in draft.columns if c.missing_tokens}
    everywhere = not any(set(tokens) & set(c.kept_tokens) for c in draft.columns)
    rules = [(c.name, c.rule) for c in draft.columns if c.rule is not None]
    codes = [c.name for c in features if c.kind == "code"]
    y = _yaml
    lines = [
        f"# {draft.name}: drafted by `mlcycle init` from {draft.path}; review, then `mlcycle train --config` this file.",
        f"name: {draft.name}",
        f"schema_ref: {schema_file}:{title}Schema   # a file of this project, read by path",
        f"features_schema_ref: {schema_file}:{title}Features",
        f"target: {y(target.name)}" + _missing_target_comment(draft),
        f"task: {draft.task}",
    ]
    if draft.positive is not None:
        lines.append(f"positive_label: {y(draft.positive)}")
    if weights:
        lines.append(f"weight: {y(weights[0])}   # the sample weight; never a feature")
    if ids:
        lines.append(f"ids: [{', '.join(y(i) for i in ids)}]   # identifiers: kept for tracing, never features")
    if dropped:
        lines.append("drop:   # never features nor request fields, each with its reason")
        lines += [f"  {y(column)}: {y(reason)}" for column, reason in dropped]
    lines += _checks_comment(draft)
    if draft.slices:
        lines += [f"# slice {s}: {draft.slice_reasons[s]}" for s in draft.slices if s in draft.slice_reasons]
        lines.append(f"slices: [{', '.join(y(s) for s in draft.slices)}]   # the gate checks the model on each group")
    lines += ["seed: 42", "source:", "  kind: files", "  files:", f"    - path: {y(draft.path)}"]
    if draft.test_path is not None:
        lines += [f"    - path: {y(draft.test_path)}", "      part: test   # the official test set: every row of it"]
    lines.append("  csv:")
    lines.append(f"    header: {'true' if draft.csv.header else 'false'}")
    if draft.csv.names:
        lines.append(f"    names: [{', '.join(y(n) for n in draft.csv.names)}]")
    lines.append(f"    sep: {y(draft.csv.sep)}")
    if draft.csv.skipinitialspace:
        lines.append("    skipinitialspace: true")
    if draft.csv.encoding != "utf-8":
        lines.append(f"    encoding: {y(draft.csv.encoding)}")
    if tokens and everywhere:
        lines.append(
            f"    na_values: [{', '.join(y(t) for t in tokens)}]   # missing, besides empty fields; nothing else is"
        )
    elif tokens:
        lines.append("    na_values:   # missing, per column, besides empty fields; nothing else is")
        lines += [f"      {y(col)}: [{', '.join(y(t) for t in ts)}]" for col, ts in per_column.items()]
    if rules:
        lines.append("  parse:   # text read as numbers or dates; a value a rule cannot read is quarantined")
        for column, rule in rules:
            lines.append(f"    {y(column)}: {_rule_yaml(rule)}")
    lines += ["split:", f"  strategy: {draft.split['strategy']}"]
    if draft.split.get("time_columns"):
        lines.append(f"  time_columns: [{', '.join(y(c) for c in draft.split['time_columns'])}]")
    lines += _cut_lines(draft.split)
    lines.append(f"  valid_size: {draft.split['valid_size']}")
    if draft.test_path is None:  # a test file pins the test part: the split cuts none of its own
        lines.append(f"  test_size: {draft.split['test_size']}")
    hours = [d["name"] for d in draft.derived if d["kind"] in HOUR_PARTS]
    if draft.derived or codes:
        lines.append("preprocess:")
    if codes or hours:
        why = "; ".join(w for w, names in (("codes: numbers that are labels", codes),
                                           ("hours of the day: one split groups their peaks", hours)) if names)  # fmt: skip
        lines.append(f"  categorical: [{', '.join(y(c) for c in codes + hours)}]   # {why}")
    if draft.derived:
        lines.append("  derived:   # dates enter the model as numbers, hours of the day as categories")
        lines += [f"    - {{name: {y(d['name'])}, source: {y(d['source'])}, kind: {d['kind']}}}" for d in draft.derived]
    tune = draft.tune
    lines += ["tune:   # sized to " + f"{draft.rows:,} rows", f"  searcher: {tune['searcher']}",
              f"  time_budget_s: {tune['time_budget_s']}   # seconds of search", f"  num_samples: {tune['num_samples']}",
              f"  max_rounds: {tune['max_rounds']}"]  # fmt: skip
    if draft.split["strategy"] == "time":
        lines.append("  final_fit: train_valid   # by time, the rows just before the test matter most: refit with them")
    if "space" in tune:
        lines.append("  space:   # the bounds that narrow the defaults; the rest are the defaults")
        lines += [f"    {key}: {bounds}" for key, bounds in tune["space"].items()]
    return "\n".join(lines) + "\n"


def _missing_target_comment(draft: Draft) -> str:
    if not draft.missing_target:
        return ""
    return f"   # {_rows_without_target(draft)} have no value: ingest quarantines them (not_nullable)"


def _rows_without_target(draft: Draft) -> str:
    """`2,104 rows`, or `about 2,100 rows (1.1% of the sample)` when the file was sampled."""
    if draft.sampled >= draft.rows:
        return f"{draft.missing_target:,} row{'s' if draft.missing_target != 1 else ''}"
    share = draft.missing_target / draft.sampled
    return f"about {round(share * draft.rows):,} rows ({share:.1%} of the sample)"


def _checks_comment(draft: Draft) -> list[str]:
    if not draft.checks:
        return []
    lines = ["# check before training: these stay features until you answer (`mlcycle init ... --drop COLUMN` or",
             "# `--weight COLUMN` with --force, or move the column to drop: here and out of the features schema)"]  # fmt: skip
    lines += [f"#   {c.column}: {c.why}. {c.advice}" for c in draft.checks]
    return lines


def _rule_yaml(rule: ParseRule) -> str:
    parts = [f"kind: {rule.kind}"]
    if rule.currency:
        parts.append(f"currency: {_yaml(rule.currency)}")
    if rule.kind != "date":
        parts.append(f"thousands: {_yaml(rule.thousands)}")
    if rule.format:
        parts.append(f"format: {_yaml(rule.format)}")
    if rule.century_pivot is not None:
        parts.append(f"century_pivot: {rule.century_pivot}")
    return "{" + ", ".join(parts) + "}"


def _yaml(value: str) -> str:
    """A YAML scalar that reads back as the same string."""
    import yaml

    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()


def summary_lines(draft: Draft) -> list[str]:
    """What `init` decided, column by column, and why: the printed summary."""
    width = min(max(len(c.name) for c in draft.columns), 28)
    lines = [f"{draft.path}: {draft.rows:,} rows × {len(draft.columns)} columns"
             + (f" ({draft.sampled:,} sampled)" if draft.sampled < draft.rows else "")]  # fmt: skip
    for column in draft.columns:
        if column.drop_reason and column.role == "dropped":
            verdict = f"dropped: {column.drop_reason}"
        elif column.role == "feature":
            verdict = f"feature ({column.kind})"
            if column.drop_reason:
                verdict = f"feature ({column.kind}) {column.drop_reason}"
        else:
            verdict = column.role
        detail = "; ".join(column.why)
        lines.append(f"  {column.name:<{width}}  {verdict}" + (f" — {detail}" if detail else ""))
    tune = draft.tune
    lines.append(f"split: {draft.split['strategy']}" + (f" by {draft.split['time_columns']}"
                 if draft.split.get("time_columns") else "") + f", {draft.split['valid_size']:.0%} validation, "
                 + _test_part(draft))  # fmt: skip
    if "test_from" in draft.split or "valid_from" in draft.split:
        lines[-1] = _time_split_line(draft)
    lines.append(f"tuning for {draft.rows:,} rows: {tune['searcher']} search, {tune['time_budget_s']} s budget, up to "
                 f"{tune['num_samples']} trials of at most {tune['max_rounds']} rounds"
                 + (f", learning rate {tune['space']['eta'][0]}-{tune['space']['eta'][1]}" if "space" in tune else ""))  # fmt: skip
    if draft.slices:
        lines.append("slices the gate checks:")
        lines += [f"  {s}: {draft.slice_reasons.get(s, 'chosen')}" for s in draft.slices]
    lines += [f"note: {n}" for n in draft.notes]
    if draft.missing_target:
        lines.append(f"{_rows_without_target(draft)} have no target: they will be quarantined at ingest "
                     f"(`mlcycle quarantine show --config configs/{draft.name}.yaml` lists them)")  # fmt: skip
    if draft.checks:
        lines.append("check before training (each stays a feature until you answer; run init again with the option "
                     "and --force):")  # fmt: skip
        lines += [f"  {c.column}: {c.why}. {c.advice}" for c in draft.checks]
    return lines


def _cut_lines(split: dict[str, Any]) -> list[str]:
    """The config's `split.valid_from` / `split.test_from` lines, each saying what it overrides."""
    lines = []
    if "valid_from" in split:
        lines.append(f"  valid_from: {_yaml_cut(split['valid_from'])}   # rows from here to the test cut: validation "
                     "(wins over valid_size)")  # fmt: skip
    if "test_from" in split:
        lines.append(f"  test_from: {_yaml_cut(split['test_from'])}   # rows at or after it: the test part (wins over "
                     "test_size)")  # fmt: skip
    return lines


def _yaml_cut(value: int | float | str) -> str:
    return str(value) if isinstance(value, (int, float)) else _yaml(str(value))


def _time_split_line(draft: Draft) -> str:
    """The summary's split line for a time split cut at given moments."""
    split = draft.split
    valid = (f"validation from {split['valid_from']}" if "valid_from" in split else
             f"validation the last {split['valid_size']:.0%} of the rows before the test")  # fmt: skip
    test = f"test from {split['test_from']}" if "test_from" in split else _test_part(draft)
    return f"split: time by {split['time_columns']}, {valid}, {test}"


def _test_part(draft: Draft) -> str:
    if draft.test_path is None:
        return f"{draft.split['test_size']:.0%} test"
    rows = f"the {draft.test_rows:,} rows of " if draft.test_rows is not None else ""
    return f"test: {rows}{draft.test_path} (the official test file; validation is cut from {draft.path})"


def verify(draft: Draft, schema_source: str, config_source: str) -> None:
    """The drafted files load: the schema module compiles and the config validates (a defect of `init`, not the
    user's, if not)."""
    import yaml

    compile(schema_source, f"schemas/{draft.name}.py", "exec")
    PipelineConfig.model_validate(yaml.safe_load(config_source))


class InitDefect(RuntimeError):
    """The drafted files do not load: a defect of `init`, not of the user's data."""


@dataclass(frozen=True)
class ProjectFiles:
    """What `init` wrote into the project folder."""

    config: Path
    schema: Path


def project_files(name: str, folder: Path) -> ProjectFiles:
    """Where `init` writes a dataset's files in a project folder: `configs/<name>.yaml` and `schemas/<name>.py`
    (a plain folder of files read by path, not a package: nothing the project imports can shadow mlcycle)."""
    return ProjectFiles(config=folder / "configs" / f"{name}.yaml", schema=folder / "schemas" / f"{name}.py")


def write_project(draft: Draft, folder: Path, force: bool = False) -> ProjectFiles:
    """Write the drafted config and schema into the project folder. Raises DraftError if they exist (and not
    `force`), InitDefect if the drafted files do not load."""
    files = project_files(draft.name, folder)
    existing = [str(f) for f in (files.schema, files.config) if f.exists()]
    if existing and not force:
        raise DraftError(f"{', '.join(existing)} exist(s); pass --force to overwrite, or --name another")
    schema_source = schema_module(draft)
    config_source = config_yaml(draft, f"schemas/{draft.name}.py")
    try:
        verify(draft, schema_source, config_source)
    except (SyntaxError, ValueError) as exc:
        raise InitDefect(f"the drafted files do not load ({type(exc).__name__}: {str(exc)[:500]}); this is a defect "
                         "of mlcycle init: please report it with the summary") from exc  # fmt: skip
    for file, text in ((files.schema, schema_source), (files.config, config_source)):
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(text)
    return files
