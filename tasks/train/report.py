"""Reports people would rather look at than read: plots (PNG), a self-contained HTML page, and markdown tables
for the terminal and the Prefect UI."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xgboost as xgb
from sklearn.metrics import roc_curve

from mlcycle.schemas.config import TaskType
from mlcycle.tasks.tables import format_cell, markdown_table
from mlcycle.tasks.train.prepare import LeakageReport
from mlcycle.tasks.train.tune import TuneResult


@dataclass(frozen=True)
class ReportFiles:
    folder: Path
    plots: list[Path]
    html: Path


def comparison_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per metric: the tuned model next to each reference model."""
    names = ["tuned", *metrics["references"]]
    by_model = {"tuned": metrics["test"], **metrics["references"]}
    return [{"metric": m, **{n: by_model[n][m] for n in names}} for m in metrics["test"]]


def markdown_report(tag: str, metrics: dict[str, Any], leakage: LeakageReport, files: ReportFiles | None) -> str:
    """The run's evaluation as markdown: comparison, slices, bias, leakage, and links to the plots."""
    primary = metrics["primary"]
    parts = [f"# {tag}", "", f"Test rows: {metrics['rows']}. Primary metric: **{primary}**.", "",
             "## Tuned model against references (same split)", markdown_table(comparison_rows(metrics))]  # fmt: skip
    for column, rows in metrics["slices"].items():
        parts += ["", f"## Slices by `{column}`", markdown_table(rows, ["value", "rows", "share", *metrics["test"]])]
    for column, entry in metrics["bias"].items():
        gaps = {k: v for k, v in entry.items() if k != "groups"}
        parts += ["", f"## Bias by `{column}`", ", ".join(f"{k}: {format_cell(v)}" for k, v in gaps.items()), "",
                  markdown_table(entry["groups"])]  # fmt: skip
    parts += ["", "## Leakage checks", *[f"- {line}" for line in leakage.lines()]]
    if "per_class" in metrics:
        parts += ["", "## Per class", markdown_table(metrics["per_class"]), "", "## Confusion matrix (rows: true class)",
                  markdown_table(confusion_rows(metrics["confusion"]))]  # fmt: skip
    if metrics.get("weighted"):
        parts += ["", "Every metric is weighted by the rows' sample weights."]
    if "calibration" in metrics:
        parts += ["", "## Calibration", markdown_table(metrics["calibration"])]
    if files:
        parts += [
            "",
            "## Plots",
            *[f"- [{p.name}]({p.as_uri()})" for p in files.plots],
            f"- [report.html]({files.html.as_uri()})",
        ]
    return "\n".join(parts)


def confusion_rows(confusion: dict[str, Any]) -> list[dict[str, Any]]:
    """The confusion matrix as table rows: the true class, then one column per predicted class."""
    return [{"true": name, **{f"predicted {p}": v for p, v in zip(confusion["classes"], row, strict=True)}}
            for name, row in zip(confusion["classes"], confusion["counts"], strict=True)]  # fmt: skip


def plot_confusion(ax: Any, matrix: np.ndarray, classes: list[str], title: str, fmt: str) -> None:
    """One confusion matrix as a heat map, rows the true class, each cell labelled with its value."""
    ax.imshow(matrix, cmap="Blues", vmin=0)
    ax.set(xticks=range(len(classes)), yticks=range(len(classes)), xticklabels=classes, yticklabels=classes,
           xlabel="predicted class", ylabel="true class", title=title)  # fmt: skip
    ax.tick_params(axis="x", rotation=45)
    top = float(matrix.max()) if matrix.size else 0.0
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, format(value, fmt), ha="center", va="center", color="white" if value > top / 2 else "black")


def write_report(
    folder: Path,
    tag: str,
    task: TaskType,
    y_test: np.ndarray,
    predictions: np.ndarray,
    references: dict[str, np.ndarray],
    metrics: dict[str, Any],
    booster: xgb.Booster,
    leakage: LeakageReport,
) -> ReportFiles:
    """Write the plots and a self-contained report.html (plots embedded) into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    plots = []

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        fig.savefig(folder / name, dpi=110)
        plots.append(folder / name)

    if task == "multiclass":
        # ROC and calibration curves are per class pair; the confusion matrix shows every class's errors at once
        conf = metrics["confusion"]
        counts = np.asarray(conf["counts"], dtype=float)
        totals = counts.sum(axis=1, keepdims=True)
        normalised = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
        size = max(5.0, 0.6 * len(conf["classes"]) + 2)
        fig, (left, right) = _subplots(1, 2, figsize=(2 * size, size))
        what = "weight" if conf["weighted"] else "rows"
        plot_confusion(left, counts, conf["classes"], f"Confusion matrix, test set ({what})",
                       ".3g" if conf["weighted"] else ".0f")  # fmt: skip
        plot_confusion(right, normalised, conf["classes"], "Normalised by true class (recall on the diagonal)", ".2f")
        save(fig, "confusion_matrix.png")
    elif task == "binary":
        fig, ax = _subplots(figsize=(5, 5))
        for name, pred in {"tuned": predictions, **references}.items():
            if name != "trivial":
                fpr, tpr, _ = roc_curve(y_test, pred)
                ax.plot(
                    fpr, tpr, label=f"{name} (AUC {metrics['references'].get(name, metrics['test'])['roc_auc']:.4f})"
                )
        ax.plot([0, 1], [0, 1], "k:", label="chance")
        ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC, test set")
        ax.legend(loc="lower right")
        save(fig, "roc.png")
        fig, ax = _subplots(figsize=(5, 5))
        table = metrics["calibration"]
        ax.plot([r["predicted"] for r in table], [r["observed"] for r in table], "o-", label="tuned")
        ax.plot([0, 1], [0, 1], "k:", label="perfect")
        ax.set(xlabel="predicted probability", ylabel="observed rate", title="Calibration, test set")
        ax.legend()
        save(fig, "calibration.png")
    else:
        fig, (left, right) = _subplots(1, 2, figsize=(10, 4.5))
        left.scatter(y_test, predictions, s=4, alpha=0.4)
        top = float(max(y_test.max(), predictions.max()))
        left.plot([0, top], [0, top], "k:")
        left.set(xlabel="actual", ylabel="predicted", title="Predicted against actual, test set")
        right.hist(predictions - y_test, bins=60)
        right.set(xlabel="residual (predicted - actual)", ylabel="rows", title="Residuals")
        save(fig, "residuals.png")

    gains = sorted(booster.get_score(importance_type="gain").items(), key=lambda kv: kv[1])[-20:]
    fig, ax = _subplots(figsize=(6, 0.3 * len(gains) + 1.2))
    ax.barh([k for k, _ in gains], [v for _, v in gains])
    ax.set(xlabel="total gain", title="Feature importance")
    save(fig, "feature_importance.png")

    primary = metrics["primary"]
    columns = list(metrics["slices"])
    if columns:
        fig, axes = _subplots(1, len(columns), figsize=(5 * len(columns), 4), squeeze=False)
        for ax, column in zip(axes[0], columns, strict=True):
            rows = metrics["slices"][column]
            ax.bar([r["value"] for r in rows], [r[primary] for r in rows])
            ax.axhline(metrics["test"][primary], color="k", linestyle=":", label="all rows")
            ax.set(title=f"{primary} by {column}", ylabel=primary)
            ax.tick_params(axis="x", rotation=45)
            ax.legend()
        save(fig, "slices.png")

    files = ReportFiles(folder=folder, plots=plots, html=folder / "report.html")
    files.html.write_text(_html(tag, metrics, leakage, plots))
    return files


def _html(tag: str, metrics: dict[str, Any], leakage: LeakageReport, plots: list[Path]) -> str:
    def table(rows: list[dict[str, Any]]) -> str:
        if not rows:
            return "<p>(none)</p>"
        head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(format_cell(v))}</td>" for v in r.values()) + "</tr>" for r in rows
        )
        return f"<table><tr>{head}</tr>{body}</table>"

    sections = [
        f"<h1>{html.escape(tag)}</h1>",
        "<h2>Tuned model against references</h2>",
        table(comparison_rows(metrics)),
    ]
    for column, rows in metrics["slices"].items():
        sections += [f"<h2>Slices by {html.escape(column)}</h2>", table(rows)]
    for column, entry in metrics["bias"].items():
        sections += [f"<h2>Bias by {html.escape(column)}</h2>", table(entry["groups"])]
        sections.append(
            "<p>" + html.escape(", ".join(f"{k}: {format_cell(v)}" for k, v in entry.items() if k != "groups")) + "</p>"
        )
    if "per_class" in metrics:
        sections += ["<h2>Per class</h2>", table(metrics["per_class"]), "<h2>Confusion matrix (rows: true class)</h2>",
                     table(confusion_rows(metrics["confusion"]))]  # fmt: skip
    if metrics.get("weighted"):
        sections.append("<p>Every metric is weighted by the rows' sample weights.</p>")
    sections += [
        "<h2>Leakage checks</h2>",
        "<ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in leakage.lines()) + "</ul>",
    ]
    for plot in plots:
        data = base64.b64encode(plot.read_bytes()).decode()
        sections.append(f'<h2>{html.escape(plot.stem)}</h2><img alt="{plot.stem}" src="data:image/png;base64,{data}">')
    style = "body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px}"
    return f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(tag)}</title><style>{style}</style></head><body>{''.join(sections)}</body></html>"


def _subplots(nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float], squeeze: bool = True) -> Any:
    """A figure and its axes without pyplot: no global backend is chosen (a notebook that trains keeps showing its
    own plots) and nothing is left open."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, squeeze=squeeze)


def write_tuning_report(files: ReportFiles, tuned: TuneResult) -> ReportFiles:
    """Add the best score over wall time (PNG) and every trial's record and curve (trials.json) to a report."""
    import json

    points = tuned.best_over_time()
    fig, ax = _subplots(figsize=(6, 4))
    if points:
        ax.step([p[0] for p in points], [p[1] for p in points], where="post")
    ax.set(xlabel="seconds since the search began", ylabel=f"best validation {tuned.metric}",
           title=f"Search: {len(tuned.trials)} trials in {tuned.elapsed_s:.0f} s")  # fmt: skip
    fig.tight_layout()
    plot = files.folder / "tuning.png"
    fig.savefig(plot, dpi=110)
    (files.folder / "trials.json").write_text(
        json.dumps({"trials": tuned.trials, "curves": tuned.curves}, indent=1, default=str)
    )
    return ReportFiles(folder=files.folder, plots=[*files.plots, plot], html=files.html)


def tuning_markdown(tuned: TuneResult, files: ReportFiles) -> str:
    """The search at a glance: counts by status, the best trial, where the curves are."""
    statuses: dict[str, int] = {}
    for trial in tuned.trials:
        statuses[trial["status"]] = statuses.get(trial["status"], 0) + 1
    nodes = sorted({str(t["node_id"]) for t in tuned.trials if t.get("node_id")})
    return "\n".join([
        f"# Search ({'resumed' if tuned.resumed else 'new'})", "",
        f"{len(tuned.trials)} trials in {tuned.elapsed_s:.1f} s: " + ", ".join(f"{n} {s}" for s, n in statuses.items()),
        f"best validation {tuned.metric} {tuned.best_score:.5f} at {tuned.best_rounds} rounds (trial {tuned.best_trial_id})",
        f"nodes used: {len(nodes)}", f"experiment: `{tuned.experiment_path}`", "",
        f"- [best score over time]({(files.folder / 'tuning.png').as_uri()})",
        f"- [every trial and its curve]({(files.folder / 'trials.json').as_uri()})",
    ])  # fmt: skip
