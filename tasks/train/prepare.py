"""Prepare: choose the features and split the rows without leaking the target or the future."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from mlcycle.schemas import resolve_schema
from mlcycle.schemas.config import PipelineConfig, SplitConfig
from mlcycle.tasks.errors import UserError
from mlcycle.tasks.preprocess import category_texts, clock_hour, parse_times

log = logging.getLogger("mlcycle.prepare")


class LeakageError(UserError, ValueError):
    """A split or a feature list would let training see what it must not."""


class TargetError(UserError, ValueError):
    """A label the model cannot represent (a class training never saw), or sample weights it cannot use."""


@dataclass(frozen=True)
class Splits:
    """The rows of each split; of a snapshot larger than the driver holds, a seeded sample of each split's rows,
    with the whole splits' sizes in `rows` (tasks.train.dataset)."""

    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    rows: dict[str, int] | None = None

    def sizes(self) -> dict[str, int]:
        if self.rows is not None:
            return dict(self.rows)
        return {"train": len(self.train), "valid": len(self.valid), "test": len(self.test)}

    @property
    def sampled(self) -> bool:
        """Whether the frames hold a sample of the splits rather than all their rows."""
        return self.rows is not None and self.rows != {
            "train": len(self.train), "valid": len(self.valid), "test": len(self.test)}  # fmt: skip


def feature_columns(columns: list[str], config: PipelineConfig) -> list[str]:
    """The model's inputs: the columns a request carries (the features schema's) and the derived features, except
    the target, the ids and the `drop` list. A training-only column (an outcome recorded later, a weight) is never
    a feature, whether or not `drop` names it."""
    derived = [d.name for d in config.preprocess.derived]
    requested = set(resolve_schema(config.features_schema_ref).to_schema().columns)
    excluded = {config.target, *config.ids, *config.drop, *([config.weight] if config.weight else [])}
    return [c for c in [*columns, *derived] if c not in excluded and (c in requested or c in derived)]


def _allowed_targets(config: PipelineConfig) -> list[str] | None:
    """The target's allowed values in the training schema (its `isin`), as text, in the schema's order."""
    column = resolve_schema(config.schema_ref).to_schema().columns[config.target]
    allowed = next((c.statistics["allowed_values"] for c in column.checks if "allowed_values" in c.statistics), None)
    return None if allowed is None else [str(v) for v in allowed]


def target_classes(config: PipelineConfig, train_labels: pd.Series | None = None) -> list[str]:
    """The classes the model predicts, in the order of its outputs; recorded in the bundle.

    Binary: [negative, positive]. Multiclass: the target's allowed values in the training schema (`isin`, in its
    order), else the labels of `train_labels` (the training split), sorted (numbers as numbers). Regression: none.
    """
    if config.task == "regression":
        return []
    allowed = _allowed_targets(config)
    if config.task == "binary":
        negatives = [v for v in allowed or [] if v != config.positive_label]
        negative = negatives[0] if len(negatives) == 1 else f"not {config.positive_label}"
        return [negative, str(config.positive_label)]
    if allowed is None:
        if train_labels is None:
            raise TargetError(f"target {config.target!r} has no allowed values (isin) in {config.schema_ref}: the "
                              "classes come from the training labels, which were not given")  # fmt: skip
        allowed = [str(v) for v in sorted(pd.unique(train_labels.dropna()))]
    if len(allowed) < 2:
        raise TargetError(f"target {config.target!r}: a multiclass task needs at least 2 classes, found {allowed}")
    return allowed


def encode_target(values: pd.Series, config: PipelineConfig, classes: list[str] | None = None) -> np.ndarray:
    """The label as the model sees it: 1/0 for the positive class of a binary task, the class's index in `classes`
    (default: the schema's allowed values) for multiclass, the number otherwise.

    A multiclass label outside `classes` (a class the training split never had, when the classes come from it)
    raises `TargetError`: the model cannot predict it, and silently dropping its rows would flatter the metrics.
    """
    if config.task == "binary":
        return (values.astype("string") == config.positive_label).to_numpy(dtype="float64")
    if config.task == "multiclass":
        classes = classes if classes is not None else target_classes(config)
        text = values.astype("string")
        codes = text.map({c: float(i) for i, c in enumerate(classes)})
        if codes.isna().any():
            unknown = sorted({str(v) if pd.notna(v) else "<missing>" for v in text[codes.isna()]})
            raise TargetError(
                f"target {config.target!r}: label(s) {unknown[:10]} ({int(codes.isna().sum())} rows) are not among "
                f"the model's classes {classes[:20]}; list every class in the training schema (isin on the "
                "target), or give the class enough rows to reach the training split"
            )  # fmt: skip
        return codes.to_numpy(dtype="float64")
    return values.to_numpy(dtype="float64")


def sample_weights(frame: pd.DataFrame, config: PipelineConfig) -> np.ndarray | None:
    """The rows' sample weights from the config's `weight` column, or None when it names none.

    Raises `TargetError` naming the column and the fix when the column is missing, is not numeric, or holds a
    missing, negative or infinite value, or when the weights sum to zero.
    """
    if config.weight is None:
        return None
    name = config.weight
    if name not in frame.columns:
        raise TargetError(f"weight column {name!r} is not in the data; add it to the training schema "
                          f"{config.schema_ref} (not to the features schema)")  # fmt: skip
    column = frame[name]
    if not pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
        raise TargetError(f"weight column {name!r} holds {column.dtype} values; sample weights must be numbers")
    values = column.to_numpy(dtype="float64", na_value=np.nan)
    bad = ~np.isfinite(values) | (values < 0)
    if bad.any():
        rows = frame.index[bad][:5].tolist()
        raise TargetError(f"weight column {name!r}: {int(bad.sum())} row(s) missing, negative or infinite (rows "
                          f"{rows}); declare it non-negative and not nullable in {config.schema_ref} so such rows "
                          "are quarantined at ingest")  # fmt: skip
    if len(values) and values.sum() <= 0:
        raise TargetError(f"weight column {name!r}: every weight is zero; nothing would be learned or measured")
    return values


def check_weight_column(config: PipelineConfig) -> None:
    """The weight column must be in the training schema and not in the features schema: never a feature, never
    asked of the service."""
    if config.weight is None:
        return
    if config.weight not in resolve_schema(config.schema_ref).to_schema().columns:
        raise TargetError(f"weight {config.weight!r} is not a column of the training schema {config.schema_ref}; "
                          "add it there")  # fmt: skip
    if config.weight in resolve_schema(config.features_schema_ref).to_schema().columns:
        raise TargetError(f"weight {config.weight!r} is in the features schema {config.features_schema_ref}: the "
                          "service would ask for it; move it to the training schema only")  # fmt: skip


def split_frame(frame: pd.DataFrame, part: pd.Series, config: PipelineConfig) -> Splits:
    """Split into train / valid / test.

    Rows the source pins to `test` (an official test file) form the test set; otherwise the test set is cut by
    the configured strategy. A time split orders rows by `time_columns` and keeps every later moment out of
    training; rows of the same moment never straddle two splits.
    """
    split = config.split
    pinned = part.reindex(frame.index).fillna("") == "test"
    if split.strategy == "time":
        return _time_split(frame, split, has_test=bool(pinned.any()), pinned=pinned)
    positions = split_positions(frame[config.target], pinned.to_numpy(dtype=bool), config)
    if frame.index.is_monotonic_increasing:  # positions in order are rows in index order: one take per split
        return Splits(*(frame.iloc[p] for p in positions))
    return Splits(*(frame.iloc[p].sort_index() for p in positions))


def split_positions(
    target: pd.Series, pinned: np.ndarray, config: PipelineConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The positions of the train, valid and test rows (each in ascending order) of a random or stratified split:
    `split_frame`'s, decided from the target column alone, so that the other columns are taken once per split
    (and a caller holding only the target and the pinned rows of a larger table can split it)."""
    split = config.split
    everything = np.arange(len(target))
    labels = target.to_numpy()
    if pinned.any():
        rest, test = everything[~pinned], everything[pinned]
    else:
        rest, test = _cut(everything, labels, split.test_size, config)
    valid_share = split.valid_size if pinned.any() else split.valid_size / (1 - split.test_size)
    train, valid = _cut(rest, labels[rest], valid_share, config)
    return train, valid, test


def _cut(
    positions: np.ndarray, labels: np.ndarray, share: float, config: PipelineConfig
) -> tuple[np.ndarray, np.ndarray]:
    stratify = labels if config.split.strategy == "stratified" else None
    first, second = train_test_split(positions, test_size=share, random_state=config.seed, stratify=stratify)
    return np.sort(first), np.sort(second)


def time_key(frame: pd.DataFrame, columns: list[str]) -> pd.Series:
    """A moment per row, from the split's time columns (`split.time_columns`, where the rules are documented): a
    timestamp for dates, years and epoch seconds, the number itself for any other number."""
    return _time_key(frame, columns)[0]


YEARS = (1000, 9999)  # whole numbers in this range are years
EPOCH_SECONDS = (1e8, 1e10)  # whole numbers in this range are seconds since 1970 (1973 to 2286)
_CALENDAR = ("year", "month", "day", "hour")


def _time_key(frame: pd.DataFrame, columns: list[str]) -> tuple[pd.Series, str]:
    """The moments and what they were read from: `date` (a date or timestamp, later columns adding hours),
    `year` (a year, then its month, day and hour), `epoch` (seconds since 1970) or `number` (anything else that
    orders the rows, such as a period index)."""
    first = frame[columns[0]]
    numeric = pd.api.types.is_numeric_dtype(first) and not pd.api.types.is_bool_dtype(first)
    if not numeric:
        key, kind = parse_times(first), "date"
        for column in columns[1:]:
            values = frame[column]
            hours = values.astype("float64") if pd.api.types.is_numeric_dtype(values) else clock_hour(values)
            key = key + pd.to_timedelta(hours, unit="h")
    else:
        numbers = first.astype("float64")
        present = numbers.dropna()
        whole = bool((present % 1 == 0).all())
        if whole and present.between(*YEARS).all():
            if len(columns) > len(_CALENDAR):
                raise LeakageError(f"time columns {columns}: a year takes at most its month, day and hour after it")
            parts = {"year": numbers, "month": 1.0, "day": 1.0}
            for part, column in zip(_CALENDAR[1:], columns[1:], strict=False):
                values = frame[column]
                parts[part] = pd.to_numeric(values, errors="coerce") if part != "hour" or pd.api.types.is_numeric_dtype(
                    values) else clock_hour(values)  # fmt: skip
            key, kind = pd.to_datetime(pd.DataFrame(parts, index=frame.index), errors="coerce"), "year"
        elif whole and present.between(*EPOCH_SECONDS).all() and len(columns) == 1:
            key, kind = pd.to_datetime(numbers, unit="s", errors="coerce"), "epoch"
        elif len(columns) == 1:
            key, kind = numbers, "number"
        else:
            raise LeakageError(f"time columns {columns}: after a number that is neither a year nor epoch seconds "
                               "nothing can follow; name one column")  # fmt: skip
    if key.isna().any():
        bad = frame.index[key.isna()][:5].tolist()
        example = {c: _plain(frame.at[bad[0], c]) for c in columns}
        raise LeakageError(f"time columns {columns} give no time for rows {bad} (e.g. {example}); a time split needs "
                           "one per row")  # fmt: skip
    return key, kind


def _plain(value: object) -> object:
    if isinstance(value, np.generic):
        value = value.item()
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _moment(cut: int | float | str, kind: str, name: str, columns: list[str]) -> Any:
    """A configured cut (`split.test_from`) as a moment of the time key's kind."""
    if kind == "number":
        try:
            return float(cut)
        except ValueError:
            raise LeakageError(f"split.{name} {cut!r}: the time column {columns[0]!r} holds numbers, so the cut is a "
                               "number too") from None  # fmt: skip
    if kind == "epoch" and not isinstance(cut, str):
        return pd.Timestamp(float(cut), unit="s")
    text = str(int(cut)) if isinstance(cut, float) and cut.is_integer() else str(cut)
    when = parse_times(pd.Series([text], dtype=object)).iloc[0]
    if pd.isna(when):
        raise LeakageError(f"split.{name} {cut!r} is not a date or timestamp (write e.g. 2021-11-01 or "
                           "2021-11-01T06:00:00Z)")  # fmt: skip
    return when


def _shown(value: object) -> str:
    """A moment as a person writes it: 2021-11-01, 2021-11-01 06:30:00, 2021, 12."""
    if isinstance(value, pd.Timestamp):
        return value.strftime("%Y-%m-%d") if value == value.normalize() else str(value)
    return str(_plain(value))


def _time_split(frame: pd.DataFrame, split: SplitConfig, has_test: bool, pinned: pd.Series) -> Splits:
    key, kind = _time_key(frame, split.time_columns)
    cuts = {name: _moment(getattr(split, name), kind, name, split.time_columns)
            for name in ("valid_from", "test_from") if getattr(split, name) is not None}  # fmt: skip
    if has_test:
        if "test_from" in cuts:
            log.warning("split.test_from is not used: the source pins the test part (an official test file)")
        rest, test, rest_key = frame[~pinned], frame[pinned], key[~pinned]
        valid_cut = cuts.get("valid_from", rest_key.quantile(1 - split.valid_size / (1 - split.test_size)))
        splits = Splits(train=rest[rest_key < valid_cut], valid=rest[rest_key >= valid_cut], test=test)
        _check_cuts(splits, {k: v for k, v in cuts.items() if k == "valid_from"}, key, split.time_columns)
        check_time_order(splits, split.time_columns)
        return splits
    test_cut = cuts.get("test_from")
    if test_cut is None:
        test_cut = key.quantile(1 - split.test_size)
    if "valid_from" in cuts:
        valid_cut = cuts["valid_from"]
    elif "test_from" in cuts:  # the last valid_size share of the rows before the cut
        before = key[key < test_cut]
        valid_cut = before.quantile(1 - split.valid_size) if len(before) else test_cut
    else:
        valid_cut = key.quantile(1 - split.test_size - split.valid_size)
    if "valid_from" in cuts and "test_from" in cuts and not valid_cut < test_cut:
        raise LeakageError(f"split.valid_from {_shown(valid_cut)} is not before split.test_from {_shown(test_cut)}")
    # Each split keeps the rows in the frame's order, as every other split does (and as Ray Data reads them): the
    # order of the training rows is what XGBoost's row subsampling draws from.
    splits = Splits(
        train=frame[key < valid_cut], valid=frame[(key >= valid_cut) & (key < test_cut)], test=frame[key >= test_cut]
    )
    log.info("time split at %s (valid) and %s (test)", _shown(valid_cut), _shown(test_cut))
    _check_cuts(splits, cuts, key, split.time_columns)
    check_time_order(splits, split.time_columns)
    return splits


def _check_cuts(splits: Splits, cuts: dict[str, Any], key: pd.Series, columns: list[str]) -> None:
    """Refuse a configured cut that leaves a part without rows, naming the cut and the time columns' range."""
    if not cuts:
        return
    span = f"{columns} run from {_shown(key.min())} to {_shown(key.max())}"
    valid_or_test = "valid_from" if "valid_from" in cuts else "test_from"
    for part, rows, cut in (("test", splits.test, "test_from"), ("validation", splits.valid, valid_or_test),
                            ("training", splits.train, valid_or_test)):  # fmt: skip
        if rows.empty and cut in cuts:
            raise LeakageError(f"split.{cut} {_shown(cuts[cut])} leaves no {part} rows: the time columns {span}")


def check_time_order(splits: Splits, time_columns: list[str]) -> None:
    """Refuse a split in which a training row is later than a validation row, or a validation row later than a
    test row."""
    keys = [time_key(part, time_columns) for part in (splits.train, splits.valid, splits.test)]
    for (earlier, later), names in zip(
        ((0, 1), (1, 2), (0, 2)), (("train", "valid"), ("valid", "test"), ("train", "test")), strict=True
    ):
        if len(keys[earlier]) and len(keys[later]) and keys[earlier].max() >= keys[later].min():
            raise LeakageError(f"time split leaks the future: {names[0]} reaches {keys[earlier].max()}, "
                               f"{names[1]} starts at {keys[later].min()}")  # fmt: skip


@dataclass(frozen=True)
class LeakageReport:
    """Likely target leaks among the features, and rows of validation/test that also stand in training."""

    suspects: list[dict[str, object]]
    duplicated_in_train: dict[str, int]
    # categorical features whose validation or test values are mostly ones training never saw (`mostly_unseen`)
    unseen: list[dict[str, object]] = field(default_factory=list)

    def lines(self) -> list[str]:
        found = [f"likely leak: {s['columns']} ({s['reason']})" for s in self.suspects]
        dupes = ", ".join(f"{n} of {name}" for name, n in self.duplicated_in_train.items())
        return [*found, *unseen_lines(self.unseen), f"rows also in training: {dupes}"]


UNSEEN_SHARE = 0.5  # a categorical feature whose validation or test rows hold more unseen values than this is named
UNSEEN_MIN_ROWS = 10  # ... when the part holds at least this many of its values


def mostly_unseen(splits: Splits, features: list[str], config: PipelineConfig) -> list[dict[str, object]]:
    """The categorical features whose values in the validation or the test rows are mostly values the training rows
    never hold (over `UNSEEN_SHARE` of those rows): the model learns nothing it can use there. A code under a time
    split (a month, a year) is the usual cause: every later period is a value of its own."""
    found: list[dict[str, object]] = []
    for column in (c for c in features if c in splits.train.columns):
        values = splits.train[column]
        numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
        if numeric and column not in config.preprocess.categorical:
            continue
        seen = set(_distinct_texts(values))
        for part, rows in (("validation", splits.valid), ("test", splits.test)):
            present = rows[column].dropna() if column in rows.columns else pd.Series(dtype=object)
            if len(present) < UNSEEN_MIN_ROWS:
                continue
            texts = _distinct_texts(present)  # each distinct value once: a large part costs its distinct values
            new = texts[~texts.isin(seen)]
            share = float(present.isin(new.index).mean())
            if share > UNSEEN_SHARE:
                found.append({"column": column, "part": part, "share": round(share, 4),
                              "examples": sorted(new.tolist())[:3]})  # fmt: skip
    return found


def _distinct_texts(values: pd.Series) -> pd.Series:
    """The distinct present values as category texts, indexed by the values."""
    distinct = pd.Series(values.dropna().unique())
    return pd.Series(category_texts(distinct).to_numpy(), index=distinct.to_numpy())


def unseen_lines(unseen: list[dict[str, object]]) -> list[str]:
    """One line per feature named by `mostly_unseen`, with what to do about it."""
    lines = []
    for column in dict.fromkeys(str(u["column"]) for u in unseen):
        parts = [u for u in unseen if u["column"] == column]
        shares = ", ".join(f"{float(u['share']):.0%} of {u['part']}" for u in parts)  # type: ignore[arg-type]
        examples = ", ".join(dict.fromkeys(str(e) for u in parts for e in u["examples"]))  # type: ignore[attr-defined]
        lines.append(f"mostly unseen in training: {column} ({shares} rows hold values training never saw, e.g. "
                     f"{examples}): the model cannot use such a category there; make a period (month, weekday, "
                     "hour) a number, or drop the column")  # fmt: skip
    return lines


LEAK_SCAN_ROWS = 200_000


def find_leaks(
    splits: Splits, features: list[str], config: PipelineConfig, duplicated: dict[str, int] | None = None
) -> LeakageReport:
    """Look for features that nearly copy the target on the training rows, and count cross-split duplicates.

    A numeric feature, or the sum of two (bike sharing's `casual` + `registered` = `cnt`), whose correlation
    with the target reaches `split.leak_threshold` is reported (not for multiclass, whose class index is no
    quantity); so is a categorical feature whose every well-populated value almost always has the same label
    (classification), and (binary tasks) a feature that alone ranks the
    label nearly perfectly. The feature checks look at a seeded sample of `LEAK_SCAN_ROWS` training rows at most:
    a copy of the target shows in any sample of that size. `duplicated`: the cross-split duplicates counted
    already (over every row, where `splits` holds a sample of them).
    """
    train = splits.train
    if len(train) > LEAK_SCAN_ROWS:
        train = train.sample(n=LEAK_SCAN_ROWS, random_state=config.seed)
    classes = target_classes(config, train[config.target]) if config.task == "multiclass" else None
    target = encode_target(train[config.target], config, classes)
    raw = [c for c in features if c in train.columns]
    # A class index is not a quantity: for multiclass the correlations below would mean nothing.
    numeric = [c for c in raw if pd.api.types.is_numeric_dtype(train[c]) and train[c].nunique() > 1
               and config.task != "multiclass"]  # fmt: skip
    threshold = config.split.leak_threshold
    suspects: list[dict[str, object]] = []
    for column in numeric:
        corr = _abs_corr(train[column], target)
        if corr >= threshold:
            suspects.append(
                {"columns": [column], "correlation": round(corr, 4), "reason": f"|corr| with target {corr:.3f}"}
            )
    alone = {c: _abs_corr(train[c], target) for c in numeric}
    for i, first in enumerate(numeric):
        for second in numeric[i + 1 :]:
            corr = _abs_corr(train[first] + train[second], target)
            # A pair is news only when together they copy the target better than either does alone.
            if corr >= threshold and corr > max(alone[first], alone[second]) + 0.01:
                suspects.append({"columns": [first, second], "correlation": round(corr, 4),
                                 "reason": f"|corr| of their sum with target {corr:.3f}"})  # fmt: skip
    if config.task in ("binary", "multiclass"):
        for column in (c for c in raw if c not in numeric and not pd.api.types.is_numeric_dtype(train[c])):
            purity = _label_purity(train[column], target)
            if purity is not None and purity >= threshold:
                suspects.append({"columns": [column], "correlation": round(purity, 4),
                                 "reason": f"its values give the label {purity:.1%} of the time"})  # fmt: skip
    if config.task == "binary":
        named = {c for s in suspects for c in s["columns"]}  # type: ignore[attr-defined]
        for column in (c for c in raw if c not in named):
            auc = single_feature_auc(train[column], target)
            if auc is not None and auc >= threshold:
                suspects.append({"columns": [column], "correlation": round(auc, 4),
                                 "reason": f"alone it ranks the label with ROC AUC {auc:.3f}"})  # fmt: skip
    dupes = duplicated if duplicated is not None else _duplicates(splits, list(train.columns))
    report = LeakageReport(suspects=suspects, duplicated_in_train=dupes, unseen=mostly_unseen(splits, raw, config))
    for line in report.lines():
        (log.warning if line.startswith(("likely leak", "mostly unseen")) else log.info)(line)
    if suspects and config.split.on_leak == "fail":
        raise LeakageError("; ".join(report.lines()[:-1]) + " (set split.on_leak: warn to train anyway)")
    return report


def single_feature_auc(values: pd.Series, target: np.ndarray, bins: int = 20, min_rows: int = 10) -> float | None:
    """How well one column alone ranks a binary label, as ROC AUC in the better direction: a number by its value
    (missing values first or last, whichever ranks better) or by its quantile bin's share of positives (for a
    relation that is not monotone), anything else by its value's share of positives (values of fewer than
    `min_rows` rows pooled, missing values a group of their own). A number present only for one class (an amount
    charged off, a date of default) shows here where a correlation does not."""
    from sklearn.metrics import roc_auc_score

    if len(np.unique(target)) < 2 or len(values) < 2 * min_rows:
        return None
    ranked = 0.0
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        numbers = values.astype("float64")
        if numbers.notna().any() and numbers.nunique() > 1:
            low, high = float(numbers.min()) - 1, float(numbers.max()) + 1
            for fill in (low, high):
                auc = float(roc_auc_score(target, numbers.fillna(fill).to_numpy()))
                ranked = max(ranked, auc, 1 - auc)
        codes = pd.qcut(numbers, q=bins, duplicates="drop", labels=False) if numbers.nunique() > bins else numbers
        groups = pd.Series(codes, index=values.index).astype("float64").fillna(-1.0).astype(str)
    else:
        text = values.astype("object").where(values.notna(), "<missing>").astype(str)
        counts = text.value_counts()
        groups = text.where(text.isin(counts.index[counts >= min_rows]), "<rare>")
    if groups.nunique() < 2:
        return ranked or None
    rate = pd.Series(target, index=values.index).groupby(groups).transform("mean")
    auc = float(roc_auc_score(target, rate.to_numpy()))
    return max(ranked, auc, 1 - auc)


def _abs_corr(values: pd.Series, target: np.ndarray) -> float:
    numbers = values.to_numpy(dtype="float64", na_value=np.nan)
    keep = ~np.isnan(numbers)
    if keep.sum() < 3 or np.std(numbers[keep]) == 0 or np.std(target[keep]) == 0:
        return 0.0
    return float(abs(np.corrcoef(numbers[keep], target[keep])[0, 1]))


def _label_purity(values: pd.Series, target: np.ndarray, min_rows: int = 10) -> float | None:
    """Share of rows whose value's majority label is their label, over values with at least `min_rows` rows."""
    frame = pd.DataFrame({"v": values.astype("object").to_numpy(), "y": target}).dropna()
    counts = pd.crosstab(frame["v"], frame["y"])  # rows per value and label, any number of classes
    counts = counts[counts.sum(axis=1) >= min_rows]
    if len(counts) < 2:
        return None
    return float(counts.max(axis=1).sum() / counts.to_numpy().sum())


def _duplicates(splits: Splits, columns: list[str]) -> dict[str, int]:
    def hashes(frame: pd.DataFrame) -> pd.Series:
        # the values as they are: the three splits share one frame's types (text first would take five times as long)
        return pd.util.hash_pandas_object(frame[columns], index=False)

    seen = hashes(splits.train).to_numpy()
    return {name: int(np.isin(hashes(part).to_numpy(), seen).sum())
            for name, part in (("valid", splits.valid), ("test", splits.test))}  # fmt: skip
