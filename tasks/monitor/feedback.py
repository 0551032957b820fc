"""Live performance: labels joined back to the predictions the service logged, the serving model's metrics over
rolling windows (overall and per slice, with bootstrap intervals), degradation against the model's own test metric,
and the shadow challenger's paired comparison with the champion on the same labelled requests.

Windows are in prediction time: the window of 168 h holds the predictions made in the last 168 hours before the
check, and counts those whose label has arrived (so a window shorter than the labels' delay is mostly unlabelled).
A model's metrics use only its own predictions: those it answered (`_model` in the request log) and those it made
in shadow (the shadow log under `requests/<name>/shadow/`). Degradation is judged on the champion alone: its live
primary metric over `feedback.judge_window_h`, with at least `feedback.min_labels` labels, whose whole bootstrap
interval lies past its test metric by more than `feedback.degradation_margin` of it.

The live metric is the task's primary one where the request log holds what it needs: ROC AUC (binary), RMSE
(regression); for multiclass it is the accuracy of the predicted class (`LIVE_METRIC`), since the log keeps each
answer's predicted class and its probability, not every class's.

Each check writes a report (JSON) under `$MLCYCLE_HOME/feedback/<name>/performance/`; the service reads the newest
for its `/metrics` gauges, and `trace_request` reads them to say which live metrics a label counted towards.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mlcycle.schemas.config import FeedbackConfig, TaskType
from mlcycle.tasks.monitor.labels import LabelStore, feedback_dir
from mlcycle.tasks.monitor.request_log import RequestIndex, requests_dir
from mlcycle.tasks.registry.gate import LOWER_IS_BETTER, metric_interval

LIVE_METRIC = {"binary": "roc_auc", "multiclass": "accuracy", "regression": "rmse"}
REPORTS_KEPT = 500  # performance reports kept per name (one per check): the trail `trace_request` follows


def shadow_dir(name: str) -> Path:
    return requests_dir(name) / "_shadow"  # "_": the folder read as a Parquet dataset is the champion's answers


def reports_dir(name: str) -> Path:
    return feedback_dir(name) / "performance"


def read_logged(folder: Path, since: datetime | None = None, until: datetime | None = None) -> pd.DataFrame:
    """The request log's rows (or the shadow log's) with `_ts` in [since, until); `_record` derived for files
    written before it was logged (a request's rows are written in record order)."""
    files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    filters = []
    if since is not None:
        filters.append(("_ts", ">=", pa.scalar(since, type=pa.timestamp("us", tz="UTC"))))
    if until is not None:
        filters.append(("_ts", "<", pa.scalar(until, type=pa.timestamp("us", tz="UTC"))))
    frames = []
    for path in files:
        try:
            frame = pq.read_table(path, filters=filters or None).to_pandas()
        except FileNotFoundError:  # removed by the log's size bound since the listing
            continue
        if "_record" not in frame.columns:
            frame = frame.assign(_record=frame.groupby("_request_id").cumcount())
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=["_ts", "_model", "_request_id", "_record", "_prediction"])
    return pd.concat([f for f in frames if len(f)] or frames[:1], ignore_index=True)


def join_labels(logged: pd.DataFrame, shadow: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """One row per labelled logged record: its features, `_ts`, `_model`, `_prediction` and `_label` (the answer),
    `y`, `_received`, and `_shadow_model` / `_shadow_prediction` / `_shadow_label` where a shadow scored it too."""
    keyed = labels[["request_id", "record", "y", "received"]].rename(
        columns={"request_id": "_request_id", "record": "_record", "received": "_received"}
    )
    joined = logged.astype({"_record": "int64"}).merge(keyed, on=["_request_id", "_record"], how="inner")
    if len(shadow):
        kept = [c for c in ("_request_id", "_record", "_model", "_prediction", "_label") if c in shadow.columns]
        extra = shadow[kept].astype({"_record": "int64"})
        extra = extra.rename(columns={"_model": "_shadow_model", "_prediction": "_shadow_prediction",
                                      "_label": "_shadow_label"})  # fmt: skip
        joined = joined.merge(extra.drop_duplicates(["_request_id", "_record"]), on=["_request_id", "_record"],
                              how="left")  # fmt: skip
    else:
        joined = joined.assign(_shadow_model=None, _shadow_prediction=np.nan, _shadow_label=None)
    return joined


def predictions_of(frame: pd.DataFrame, tag: str, classes: tuple[str, ...] = ()) -> np.ndarray:
    """Per row, the prediction `tag` made (answering or in shadow), NaN where it made none; with `classes`
    (multiclass), the index of the class it predicted."""

    def values(column: str) -> np.ndarray:
        if not classes:
            return frame[column].to_numpy(dtype=float)
        index = {name: float(i) for i, name in enumerate(classes)}
        return np.array([index.get(v, np.nan) for v in frame[column].tolist()], dtype=float)

    answered = np.where(frame["_model"].to_numpy() == tag, values("_label" if classes else "_prediction"), np.nan)
    if "_shadow_model" not in frame.columns:
        return answered
    shadowed = np.where(frame["_shadow_model"].to_numpy() == tag,
                        values("_shadow_label" if classes else "_shadow_prediction"), np.nan)  # fmt: skip
    return np.where(np.isnan(answered), shadowed, answered)


@dataclass(frozen=True)
class LiveMetric:
    """One model's live primary metric over one window, overall (`slice` "all") or on one slice value."""

    model: str
    role: str  # champion, shadow, or earlier (served in the window, no longer champion)
    window_h: float
    since: str
    until: str
    slice: str
    value: str
    predictions: int  # logged predictions of the model in the window (labelled or not)
    labelled: int
    metric: str
    live: float | None
    low: float | None
    high: float | None
    test: float | None

    def worse_than_test(self) -> float | None:
        """How much worse than its test metric, as a share of it (positive: worse)."""
        if self.live is None or self.test is None or self.test == 0:
            return None
        delta = self.live - self.test if self.metric in LOWER_IS_BETTER else self.test - self.live
        return delta / abs(self.test)


def live_metrics(joined: pd.DataFrame, logged: pd.DataFrame, models: dict[str, tuple[str, float | None]],
                 task: TaskType, metric: str, slices: list[str], now: datetime, settings: FeedbackConfig,
                 seed: int, classes: tuple[str, ...] = ()) -> list[LiveMetric]:  # fmt: skip
    """Every model's metric per window, overall and per slice value; a cell with fewer than `min_labels` labels has
    counts but no metric. `models`: tag → (role, test metric); `logged`: `_ts` and `_model` of every prediction
    made, answered or in shadow (the coverage counts)."""
    out = []
    for window_h in settings.windows_h:
        since = now - timedelta(hours=window_h)
        in_window = (joined["_ts"] >= since) & (joined["_ts"] < now) & (joined["_received"] <= now)
        logged_window = logged[(logged["_ts"] >= since) & (logged["_ts"] < now)] if len(logged) else logged
        for tag, (role, test) in models.items():
            pred = predictions_of(joined, tag, classes)
            mask = in_window.to_numpy() & ~np.isnan(pred)
            made = int((logged_window["_model"] == tag).sum()) if len(logged_window) else 0
            cells = [("all", "all", mask)]
            for column in slices:
                if column not in joined.columns:
                    continue
                values = joined[column].astype("object").where(joined[column].notna(), "<missing>").astype(str)
                cells += [(column, v, mask & (values == v).to_numpy()) for v in sorted(values[mask].unique())]
            for column, value, cell in cells:
                y, p = joined["y"].to_numpy(dtype=float)[cell], pred[cell]
                live = low = high = None
                if len(y) >= settings.min_labels:
                    interval = metric_interval(task, metric, y, p, settings.bootstrap_samples, settings.confidence,
                                               seed)  # fmt: skip
                    live, low, high = _finite(interval["value"]), _finite(interval["low"]), _finite(interval["high"])
                out.append(LiveMetric(tag, role, window_h, since.isoformat(), now.isoformat(), column, value,
                                      made if column == "all" else 0, int(cell.sum()), metric, live, low, high,
                                      test))  # fmt: skip
    return out


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


@dataclass(frozen=True)
class Degradation:
    """The verdict on the champion's live primary metric: degraded with confidence, or not, or not judged."""

    judged: bool
    degraded: bool
    model: str | None
    metric: str
    window_h: float
    labelled: int
    live: float | None
    low: float | None
    high: float | None
    test: float | None
    line: float | None  # the test metric moved by the margin: the whole interval past it is degradation
    detail: str


def judge_degradation(
    rows: list[LiveMetric], champion: str | None, metric: str, settings: FeedbackConfig
) -> Degradation:
    """Degraded when the champion's whole interval over `judge_window_h` lies past its test metric by the margin."""
    cell = next((r for r in rows if r.model == champion and r.slice == "all" and r.window_h == settings.judge_window_h),
                None)  # fmt: skip
    window = settings.judge_window_h
    if cell is None or cell.live is None or cell.test is None:
        labelled = cell.labelled if cell else 0
        detail = (f"not judged: {labelled} labelled prediction(s) of {champion} in the last {window:g} h, fewer than "
                  f"feedback.min_labels={settings.min_labels}" if champion else "not judged: no champion")  # fmt: skip
        if cell is not None and cell.test is None and cell.live is not None:
            detail = f"not judged: {champion} has no test {metric} to compare with"
        return Degradation(False, False, champion, metric, window, labelled, cell.live if cell else None, None, None,
                           cell.test if cell else None, None, detail)  # fmt: skip
    lower_better = metric in LOWER_IS_BETTER
    line = (
        cell.test * (1 + settings.degradation_margin) if lower_better else cell.test * (1 - settings.degradation_margin)
    )
    bound = cell.low if lower_better else cell.high
    degraded = bound is not None and (bound > line if lower_better else bound < line)
    pct = round(settings.confidence * 100)
    detail = (f"{champion}: live {metric} {cell.live:.4f} over the last {window:g} h ({cell.labelled} labels), {pct}% "
              f"CI [{cell.low:.4f}, {cell.high:.4f}]; test {cell.test:.4f}, degradation line {line:.4f} "
              f"(margin {settings.degradation_margin:.0%}): " + ("DEGRADED" if degraded else "within"))  # fmt: skip
    return Degradation(True, degraded, champion, metric, window, cell.labelled, cell.live, cell.low, cell.high,
                       cell.test, line, detail)  # fmt: skip


def paired_rows(joined: pd.DataFrame, champion: str, shadow: str, since: datetime | None, now: datetime,
                classes: tuple[str, ...] = ()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """(y, shadow's predictions, champion's predictions) on the labelled records both models scored."""
    if not len(joined):
        empty = np.array([], dtype=float)
        return empty, empty, empty
    mine, theirs = predictions_of(joined, shadow, classes), predictions_of(joined, champion, classes)
    mask = ~np.isnan(mine) & ~np.isnan(theirs) & (joined["_received"] <= now).to_numpy()
    if since is not None:
        mask &= (joined["_ts"] >= since).to_numpy()
    return joined["y"].to_numpy(dtype=float)[mask], mine[mask], theirs[mask]


# --- reports ------------------------------------------------------------------------------------------------------


@dataclass
class PerformanceReport:
    """One performance check: what it read, the live metrics, the degradation verdict and the shadow's."""

    dataset: str
    checked_at: str
    champion: str | None
    shadow: str | None
    metric: str
    labels: int  # labelled predictions read (all windows, all models)
    metrics: list[LiveMetric]
    degradation: Degradation
    shadow_decision: str | None = None  # promote / reject / wait
    shadow_check: dict[str, Any] | None = None
    ingested: list[dict[str, Any]] = field(default_factory=list)  # label files ingested by this check

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PerformanceReport:
        return cls(**{**data, "metrics": [LiveMetric(**m) for m in data["metrics"]],
                      "degradation": Degradation(**data["degradation"])})  # fmt: skip


def write_report(report: PerformanceReport, root: Path | None = None) -> Path:
    """Keep a check's report (and the newest as `latest.json`); the oldest beyond `REPORTS_KEPT` go."""
    folder = root or reports_dir(report.dataset)
    folder.mkdir(parents=True, exist_ok=True)
    stamp = report.checked_at.replace(":", "").replace("-", "").replace("+0000", "Z").replace("+00:00", "Z")
    path = folder / f"{stamp}.json"
    text = json.dumps(report.as_dict(), indent=1, default=str)
    for target in (path, folder / "latest.json"):
        partial = target.with_suffix(".json.part")
        partial.write_text(text)
        partial.replace(target)
    for old in sorted(p for p in folder.glob("*.json") if p.name != "latest.json")[:-REPORTS_KEPT]:
        old.unlink(missing_ok=True)
    return path


def latest_report(name: str, root: Path | None = None) -> PerformanceReport | None:
    path = (root or reports_dir(name)) / "latest.json"
    return PerformanceReport.from_dict(json.loads(path.read_text())) if path.exists() else None


def metrics_markdown(report: PerformanceReport) -> str:
    lines = [f"# Live performance: {report.dataset}", "",
             f"Checked {report.checked_at}; champion {report.champion}; shadow {report.shadow or '-'}; "
             f"{report.labels} labelled predictions read.", "", f"**Degradation**: {report.degradation.detail}", ""]  # fmt: skip
    if report.shadow:
        check = report.shadow_check or {}
        lines += [f"**Shadow** {report.shadow}: {report.shadow_decision} — {check.get('detail', '')}", ""]
    lines += ["| model | role | window | slice | labelled / predictions | live | interval | test | vs test |",
              "|---|---|---:|---|---:|---:|---|---:|---:|"]  # fmt: skip
    for m in report.metrics:
        if m.slice != "all" and m.live is None:
            continue
        gap = m.worse_than_test()
        lines.append(
            f"| {m.model} | {m.role} | {m.window_h:g} h | {m.slice if m.slice == 'all' else f'{m.slice}={m.value}'} | "
            f"{m.labelled} / {m.predictions if m.slice == 'all' else '-'} | "
            f"{'-' if m.live is None else f'{m.live:.4f}'} | "
            f"{'-' if m.low is None else f'[{m.low:.4f}, {m.high:.4f}]'} | "
            f"{'-' if m.test is None else f'{m.test:.4f}'} | {'-' if gap is None else f'{gap:+.1%} worse'} |"
        )
    for item in report.ingested:
        lines.append(f"- label file {item['file']}: {item['rows_in']} rows, {item['accepted']} accepted, "
                     f"{item['duplicates']} duplicates, {item['corrected']} corrected, {item['quarantined']} "
                     f"quarantined {item.get('reasons') or ''}")  # fmt: skip
    return "\n".join(lines)


# --- lineage ------------------------------------------------------------------------------------------------------


def trace_request(name: str, request_id: str) -> dict[str, Any]:
    """Everything known about one answer: its records and predictions, the model and the data it was trained on,
    the labels that came back, and the live metrics those labels counted towards."""
    from mlcycle.tasks import registry

    found = RequestIndex(requests_dir(name)).lookup([request_id]).get(request_id)
    if found is None:
        return {"request_id": request_id, "found": False,
                "reason": f"{request_id} is not in {name}'s request log (unknown, not sampled, or no longer kept)"}  # fmt: skip
    rows = read_logged(requests_dir(name), found.ts, found.ts + timedelta(microseconds=1))
    rows = rows[rows["_request_id"] == request_id].sort_values("_record")
    shadow = read_logged(shadow_dir(name), found.ts - timedelta(minutes=10), found.ts + timedelta(hours=1))
    shadow = shadow[shadow["_request_id"] == request_id] if len(shadow) else shadow
    labels = LabelStore(name).of_request(request_id)
    try:
        lineage = registry_lineage(found.model)
    except Exception as exc:  # a model deleted from the store still has its registry row
        lineage = {"error": f"{type(exc).__name__}: {exc}"}
    version = None
    try:
        version = asdict(registry.version(found.model))
    except Exception:
        version = None
    counted = []
    labelled = {int(r) for r in labels["record"]} if len(labels) else set()
    received = labels["received"].min() if len(labels) else None
    for path in sorted(reports_dir(name).glob("*.json")) if labelled else []:
        if path.name == "latest.json":
            continue
        report = PerformanceReport.from_dict(json.loads(path.read_text()))
        if received is not None and pd.Timestamp(report.checked_at) < received:
            continue
        for m in report.metrics:
            if m.model == found.model and m.slice in ("all", *_slice_hits(m, rows)) and m.live is not None and \
                    pd.Timestamp(m.since) <= pd.Timestamp(found.ts) < pd.Timestamp(m.until):  # fmt: skip
                counted.append({"checked_at": report.checked_at, "window_h": m.window_h, "slice": m.slice,
                                "value": m.value, "live": m.live, "labelled": m.labelled, "metric": m.metric})  # fmt: skip
    return {
        "request_id": request_id,
        "found": True,
        "predicted_at": found.ts.isoformat(),
        "model": found.model,
        "records": found.records,
        "predictions": rows.drop(columns=["_request_id"]).to_dict("records"),
        "shadow": shadow[["_record", "_model", "_prediction"]].to_dict("records") if len(shadow) else [],
        "version": version,
        "lineage": lineage,
        "labels": labels.to_dict("records"),
        "counted_in": counted,
    }


def _slice_hits(metric: LiveMetric, rows: pd.DataFrame) -> list[str]:
    if metric.slice == "all" or metric.slice not in rows.columns:
        return []
    return [metric.slice] if metric.value in set(rows[metric.slice].astype(str)) else []


def registry_lineage(tag: str) -> dict[str, Any]:
    """The parts of a model's lineage that say what it was trained on and by which run."""
    import bentoml

    folder = Path(bentoml.models.get(tag).path)
    lineage = json.loads((folder / "lineage.json").read_text())
    keep = ("data_hash", "schema_hash", "config_hash", "code_version", "flow_run_id", "mode", "parent_tag",
            "refresh_data_hash", "rows")  # fmt: skip
    return {k: lineage[k] for k in keep if k in lineage}


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Served:
    """A model the check looks at: its tag, and its own test metric (what live performance is held to)."""

    tag: str
    test: float | None


def assess(name: str, task: TaskType, metric: str, slices: list[str], settings: FeedbackConfig, champion: Served | None,
           shadow: Served | None, shadow_since: datetime | None, now: datetime, seed: int,
           earlier: dict[str, float | None] | None = None, classes: tuple[str, ...] = ()) -> PerformanceReport:  # fmt: skip
    """Read the logs and labels the windows need, join them, and judge: live metrics, degradation, the shadow.
    `classes`: a multiclass model's, in order (its live metric is the accuracy of the predicted class)."""
    classes = classes if task == "multiclass" else ()
    from mlcycle.tasks.registry.gate import check_live

    since = now - timedelta(hours=max(settings.windows_h))
    if shadow_since is not None:
        since = min(since, shadow_since)
    logged = read_logged(requests_dir(name), since, now)
    shadowed = read_logged(shadow_dir(name), since, now)
    labels = LabelStore(name).read(since, now)
    labels = labels[labels["received"] <= now]
    joined = join_labels(logged, shadowed, labels)
    models: dict[str, tuple[str, float | None]] = {}
    if champion is not None:
        models[champion.tag] = ("champion", champion.test)
    if shadow is not None:
        models[shadow.tag] = ("shadow", shadow.test)
    for tag, test in (earlier or {}).items():
        if tag not in models and (logged["_model"] == tag).any():
            models[tag] = ("earlier", test)
    made = pd.concat([logged[["_ts", "_model"]], shadowed[["_ts", "_model"]]], ignore_index=True)
    rows = live_metrics(joined, made, models, task, metric, slices, now, settings, seed, classes)
    report = PerformanceReport(name, now.isoformat(timespec="seconds"), champion.tag if champion else None,
                               shadow.tag if shadow else None, metric, len(joined), rows,
                               judge_degradation(rows, champion.tag if champion else None, metric, settings))  # fmt: skip
    if champion is not None and shadow is not None:
        y, mine, theirs = paired_rows(joined, champion.tag, shadow.tag, shadow_since, now, classes)
        hours = (now - shadow_since).total_seconds() / 3600 if shadow_since else 0.0
        decision, check = check_live(task, metric, y, mine, theirs, champion.tag, settings.shadow,
                                     settings.bootstrap_samples, settings.confidence, seed, hours)  # fmt: skip
        report.shadow_decision, report.shadow_check = decision, asdict(check)
    return report
