"""The promotion gate: may a challenger replace the champion? Every rule is judged on the same holdout rows (the
challenger's test split) for both models, and the decision keeps all its evidence in one plain-data record.

Rules (thresholds in `schemas.config.GateConfig`):
- metric: the paired bootstrap interval of the primary metric's improvement lies above the margin (against the
  trivial baseline for the first model of a name);
- slices: no configured slice loses more than the tolerance (a share of the champion's metric on it);
- latency: p99 of single-record requests on the service's own path (validation, encoding, booster) within budget;
  size: the bundle on disk within budget;
- smoke: the real service, started with the challenger, answers the golden requests as the model does offline;
- live (off unless `feedback.shadow.live_gate`): a challenger that passed every rule above goes into shadow instead of
  serving; the performance check promotes it once the paired bootstrap interval of its improvement over the champion,
  on the same labelled live requests, lies above `feedback.shadow.margin` (`check_live`).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from mlcycle.schemas.config import GateConfig, ShadowConfig, TaskType
from mlcycle.tasks.train.evaluate import row_log_loss, score

LOWER_IS_BETTER = frozenset({"rmse", "mae", "rmsle", "log_loss", "brier"})


@dataclass
class Check:
    """One rule's verdict: passed, failed, or not run (passed is None) with why, and its figures."""

    rule: str
    passed: bool | None
    detail: str
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass
class GateRecord:
    """The decision and everything it rests on."""

    tag: str
    champion: str | None
    decision: str  # "promote" | "reject" | "shadow" (passed offline; promoted only on live evidence)
    reasons: list[str]
    checks: list[Check]
    holdout: dict[str, Any]
    decided_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @property
    def promoted(self) -> bool:
        return self.decision == "promote"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        verdict = {"promote": "promoted", "shadow": "put in shadow"}.get(self.decision, "rejected")
        against = f"champion {self.champion}" if self.champion else "the trivial baseline (first model of its name)"
        return f"{self.tag} {verdict} against {against}: " + "; ".join(self.reasons)

    def markdown(self) -> str:
        lines = [f"## Gate: {self.summary()}", "", "| rule | verdict | detail |", "|---|---|---|"]
        for check in self.checks:
            verdict = {True: "pass", False: "**FAIL**", None: "not run"}[check.passed]
            lines.append(f"| {check.rule} | {verdict} | {check.detail} |")
        lines += ["", f"holdout: {self.holdout}"]
        return "\n".join(lines)


def improvement(metric: str, new: float, old: float) -> float:
    """How much better `new` is than `old`: positive is better, whichever way the metric points."""
    return old - new if metric in LOWER_IS_BETTER else new - old


def metric_value(task: TaskType, metric: str, y: np.ndarray, pred: np.ndarray,
                 weights: np.ndarray | None = None) -> float:  # fmt: skip
    """One metric (weighted by `weights` when given), computed directly for the primary metrics (the bootstrap
    calls this thousands of times)."""
    if metric == "roc_auc":
        return float(skm.roc_auc_score(y, pred, sample_weight=weights)) if len(np.unique(y)) == 2 else float("nan")
    if metric == "rmse":
        return float(np.sqrt(np.average((y - pred) ** 2, weights=weights)))
    if metric == "mae":
        return float(np.average(np.abs(y - pred), weights=weights))
    if metric == "log_loss":
        return float(np.average(row_log_loss(y, pred), weights=weights))
    if metric == "accuracy" and task == "multiclass" and np.ndim(pred) == 1:  # predicted classes (live metrics)
        return float(np.average(y == pred, weights=weights))
    return score(task, y, pred, weights)[metric]


def paired_bootstrap(task: TaskType, metric: str, y: np.ndarray, challenger: np.ndarray, reference: np.ndarray,
                     samples: int, confidence: float, seed: int,
                     weights: np.ndarray | None = None) -> dict[str, Any]:  # fmt: skip
    """Interval of the challenger's improvement over the reference, both scored on the same resampled rows.

    A resample is a count per holdout row (how often it was drawn), so ROC AUC, RMSE, MAE and log loss are computed
    for a block of resamples at once from the rows sorted once; other metrics resample row by row. Both ways draw
    the same rows for the same seed. With sample `weights` a drawn row counts its weight times (the rows are drawn
    uniformly: the weights say what a row stands for, not how likely it is to be drawn). Unweighted ROC AUC on a
    holdout of `DELONG_ROWS` rows or more takes DeLong's interval for two correlated AUCs instead, exact to the
    normal approximation that large holdouts justify, in one sort.
    """
    if metric == "roc_auc" and weights is None and len(y) >= DELONG_ROWS and len(np.unique(y)) == 2:
        return delong_interval(y, challenger, reference, confidence)
    rng = np.random.default_rng(seed)
    n = len(y)
    deltas: list[float] = []
    vectorised = metric in ("roc_auc", "rmse", "mae", "log_loss") or _class_accuracy(task, metric, challenger)
    block = max(1, min(samples, 4_000_000 // max(n, 1)))  # resamples scored together: ~32 MB of counts
    done = 0
    while done < samples:
        size = min(block, samples - done)
        draws = [rng.integers(0, n, n) for _ in range(size)]
        done += size
        if vectorised:
            counts = np.stack([np.bincount(rows, minlength=n) for rows in draws]).astype(np.float64)
            if weights is not None:
                counts = counts * weights
            new = _weighted_metric(metric, y, challenger, counts)
            old = _weighted_metric(metric, y, reference, counts)
            block_deltas = improvement(metric, new, old)
            deltas.extend(float(d) for d in block_deltas[np.isfinite(block_deltas)])
            continue
        for rows in draws:
            w = None if weights is None else weights[rows]
            if w is not None and w.sum() <= 0:
                continue
            delta = improvement(metric, metric_value(task, metric, y[rows], challenger[rows], w),
                                metric_value(task, metric, y[rows], reference[rows], w))  # fmt: skip
            if np.isfinite(delta):
                deltas.append(delta)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(deltas, [alpha, 1 - alpha]) if deltas else (float("nan"), float("nan"))
    observed = improvement(metric, metric_value(task, metric, y, challenger, weights),
                           metric_value(task, metric, y, reference, weights))  # fmt: skip
    return {"observed": float(observed), "low": float(low), "high": float(high), "samples": len(deltas),
            "confidence": confidence, "method": "bootstrap", "rows": n, "weighted": weights is not None}  # fmt: skip


DELONG_ROWS = 20_000


def delong_interval(y: np.ndarray, challenger: np.ndarray, reference: np.ndarray, confidence: float) -> dict[str, Any]:
    """The challenger's ROC AUC improvement over the reference with DeLong's variance of the paired difference
    (Sun & Xu's fast algorithm: mid-ranks instead of all positive-negative pairs)."""
    from scipy.stats import norm, rankdata

    preds = np.vstack([challenger, reference])
    positive = y == 1
    m, n = int(positive.sum()), int((~positive).sum())
    ordered = np.hstack([preds[:, positive], preds[:, ~positive]])
    tz = rankdata(ordered, axis=1)
    tx = rankdata(ordered[:, :m], axis=1)
    ty = rankdata(ordered[:, m:], axis=1)
    aucs = tz[:, :m].sum(axis=1) / (m * n) - (m + 1) / (2 * n)
    v01 = (tz[:, :m] - tx) / n
    v10 = 1 - (tz[:, m:] - ty) / m
    cov = np.cov(v01) / m + np.cov(v10) / n
    spread = float(np.sqrt(max(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1], 0.0)))
    observed = float(aucs[0] - aucs[1])
    z = float(norm.ppf(1 - (1 - confidence) / 2))
    return {"observed": observed, "low": observed - z * spread, "high": observed + z * spread, "samples": 0,
            "confidence": confidence, "method": "delong", "rows": len(y)}  # fmt: skip


def metric_interval(task: TaskType, metric: str, y: np.ndarray, pred: np.ndarray, samples: int, confidence: float,
                    seed: int) -> dict[str, float]:  # fmt: skip
    """Percentile bootstrap interval of one model's metric on labelled rows (a live metric's uncertainty)."""
    rng = np.random.default_rng(seed)
    n = len(y)
    if metric in ("roc_auc", "rmse", "mae") or _class_accuracy(task, metric, pred):
        counts = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(samples)]).astype(np.float64)
        values = _weighted_metric(metric, y, pred, counts)
    else:
        draws = (rng.integers(0, n, n) for _ in range(samples))
        values = np.array([metric_value(task, metric, y[rows], pred[rows]) for rows in draws])
    values = values[np.isfinite(values)]
    alpha = (1 - confidence) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha]) if len(values) else (float("nan"), float("nan"))
    return {"value": metric_value(task, metric, y, pred), "low": float(low), "high": float(high), "rows": n,
            "samples": len(values), "confidence": confidence}  # fmt: skip


def _class_accuracy(task: TaskType, metric: str, pred: np.ndarray) -> bool:
    """Multiclass accuracy of predicted classes (not probabilities): what live metrics have for multiclass."""
    return metric == "accuracy" and task == "multiclass" and np.ndim(pred) == 1


def _weighted_metric(metric: str, y: np.ndarray, pred: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The metric of `pred` on each resample (a row of `counts`: how often each holdout row was drawn, times its
    sample weight); `accuracy` only of predicted classes."""
    with np.errstate(invalid="ignore", divide="ignore"):  # a resample of zero total weight: NaN, left out
        if metric == "accuracy":
            return counts @ (y == pred).astype(np.float64) / counts.sum(axis=1)
        if metric == "log_loss":
            return counts @ row_log_loss(y, pred) / counts.sum(axis=1)
        if metric == "rmse":
            return np.sqrt(counts @ ((y - pred) ** 2) / counts.sum(axis=1))
        if metric == "mae":
            return counts @ np.abs(y - pred) / counts.sum(axis=1)
    if metric == "rmse":
        return np.sqrt(counts @ ((y - pred) ** 2) / counts.sum(axis=1))
    if metric == "mae":
        return counts @ np.abs(y - pred) / counts.sum(axis=1)
    # ROC AUC: the chance a drawn positive scores above a drawn negative (ties count half), from the rows sorted
    # by score once and summed per distinct score.
    order = np.argsort(pred, kind="stable")
    ranked, positive = pred[order], y[order] == 1
    starts = np.flatnonzero(np.r_[True, np.diff(ranked) != 0])
    weights = counts[:, order]
    pos = np.add.reduceat(np.where(positive, weights, 0.0), starts, axis=1)
    neg = np.add.reduceat(np.where(positive, 0.0, weights), starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg
    pairs = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, (pos * (below + 0.5 * neg)).sum(axis=1) / pairs, np.nan)


def check_metric(task: TaskType, metric: str, y: np.ndarray, challenger: np.ndarray, reference: np.ndarray,
                 against: str, rules: GateConfig, seed: int, weights: np.ndarray | None = None) -> Check:  # fmt: skip
    """Improvement of the primary metric over the reference, judged by its bootstrap interval's lower bound."""
    interval = paired_bootstrap(task, metric, y, challenger, reference, rules.bootstrap_samples, rules.confidence,
                                seed, weights)  # fmt: skip
    evidence = {
        "metric": metric,
        "against": against,
        "challenger": metric_value(task, metric, y, challenger, weights),
        "reference": metric_value(task, metric, y, reference, weights),
        "margin": rules.margin,
        **interval,
    }
    passed = bool(np.isfinite(interval["low"]) and interval["low"] > rules.margin)
    pct = round(rules.confidence * 100)
    detail = (f"{metric} {evidence['challenger']:.4f} vs {against} {evidence['reference']:.4f}: improvement "
              f"{interval['observed']:+.4f}, {pct}% CI [{interval['low']:+.4f}, {interval['high']:+.4f}] "
              f"{'>' if passed else 'not >'} margin {rules.margin:g}")  # fmt: skip
    return Check("metric" if against != "trivial baseline" else "baseline", passed, detail, evidence)


def check_slices(task: TaskType, metric: str, y: np.ndarray, challenger: np.ndarray, champion: np.ndarray,
                 groups: pd.DataFrame, rules: GateConfig, weights: np.ndarray | None = None) -> Check:  # fmt: skip
    """Per configured slice value with enough rows: the challenger may not lose more than the tolerance."""
    if groups.empty or not len(groups.columns):
        return Check("slices", True, "no slices configured")
    rows, worse = [], []
    for column in groups.columns:
        values = groups[column].astype("object").where(groups[column].notna(), "<missing>").to_numpy()
        for value in pd.unique(values):
            mask = values == value
            if mask.sum() < rules.min_slice_rows:
                continue
            w = None if weights is None else weights[mask]
            if w is not None and w.sum() <= 0:
                continue
            new = metric_value(task, metric, y[mask], challenger[mask], w)
            old = metric_value(task, metric, y[mask], champion[mask], w)
            if not (np.isfinite(new) and np.isfinite(old)):
                continue
            loss = -improvement(metric, new, old)
            allowed = rules.slice_tolerance * abs(old)
            row = {"slice": column, "value": str(value), "rows": int(mask.sum()), "challenger": new,
                   "champion": old, "loss": loss, "allowed": allowed}  # fmt: skip
            rows.append(row)
            if loss > allowed:
                worse.append(row)
    if worse:
        named = ", ".join(f"{r['slice']}={r['value']} {r['champion']:.4f}→{r['challenger']:.4f}" for r in worse)
        return Check("slices", False, f"{len(worse)} slice(s) worse than tolerance "
                     f"{rules.slice_tolerance:.1%} of the champion's {metric}: {named}", {"slices": rows})  # fmt: skip
    return Check("slices", True, f"{len(rows)} slice(s) within tolerance {rules.slice_tolerance:.1%}", {"slices": rows})


def request_latency_ms(bundle: Any, rows: pd.DataFrame, count: int) -> np.ndarray:
    """Milliseconds per single-record request on the path the service takes for one (serving/service.py, without
    HTTP): the raw JSON body validated by the record model, the schema's own checks, `encode_records`, and the
    booster's `inplace_predict` with the service's thread count; cycling through `rows` after one warm-up."""
    from mlcycle.schemas.api import record_model
    from mlcycle.tasks.preprocess import encode_records

    validator = record_model(bundle.features_schema)
    records = json.loads(rows[validator.fields].to_json(orient="records", date_format="iso"))
    bodies = [json.dumps({"records": [r]}).encode() for r in records]
    booster = bundle.booster.copy()  # the bundle's own keeps its threads
    booster.set_param({"nthread": bundle.config.serving.predict_threads})

    def answer(body: bytes) -> None:
        valid = validator.validate_json_fast(body, 1)
        if valid is None:  # a record the strict tier refuses is refused by the service too: time its verdict
            valid, _ = validator.validate_python(json.loads(body)["records"], strict=True)
        validator.check_leftover(valid)
        if valid:
            features, _ = encode_records(bundle.preprocessor, valid)
            booster.inplace_predict(features)

    answer(bodies[0])
    times = []
    for i in range(count):
        start = time.perf_counter()
        answer(bodies[i % len(bodies)])
        times.append((time.perf_counter() - start) * 1000)
    return np.asarray(times)


def check_latency(times_ms: np.ndarray, rules: GateConfig) -> Check:
    p50, p99 = (float(v) for v in np.percentile(times_ms, [50, 99]))
    passed = p99 <= rules.latency_p99_ms
    detail = (f"single-record request p99 {p99:.3f} ms (p50 {p50:.3f}) on the service's path "
              f"{'within' if passed else 'over'} budget {rules.latency_p99_ms:g} ms")  # fmt: skip
    return Check("latency", passed, detail, {"p50_ms": p50, "p99_ms": p99, "calls": len(times_ms),
                                             "budget_ms": rules.latency_p99_ms})  # fmt: skip


def folder_size_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


def check_size(size_mb: float, rules: GateConfig) -> Check:
    passed = size_mb <= rules.max_size_mb
    detail = f"bundle {size_mb:.3f} MB {'within' if passed else 'over'} budget {rules.max_size_mb:g} MB"
    return Check("size", passed, detail, {"size_mb": size_mb, "budget_mb": rules.max_size_mb})


def decide(tag: str, champion: str | None, checks: list[Check], holdout: dict[str, Any],
           live_required: bool = False) -> GateRecord:  # fmt: skip
    """Promote only if every rule that ran passed (into shadow instead, when live evidence is required and there is
    a champion to compare with); the reasons name each failure, or summarise the passes."""
    failed = [c for c in checks if c.passed is False]
    if not failed and live_required and champion:
        checks = [*checks, Check("live", None, f"passed offline; no live evidence yet: scored in shadow beside "
                                 f"{champion} until it beats it on labelled requests (feedback.shadow)")]  # fmt: skip
    reasons = [f"{c.rule}: {c.detail}" for c in failed] or [f"{c.rule}: {c.detail}" for c in checks if c.passed]
    decision = "reject" if failed else "shadow" if live_required and champion else "promote"
    return GateRecord(tag, champion, decision, reasons, checks, holdout)


LiveDecision = str  # "promote" | "reject" | "wait"


def check_live(task: TaskType, metric: str, y: np.ndarray, shadow: np.ndarray, champion: np.ndarray,
               champion_tag: str, rules: ShadowConfig, samples: int, confidence: float, seed: int,
               hours_in_shadow: float) -> tuple[LiveDecision, Check]:  # fmt: skip
    """The live rule: the shadow's improvement over the champion on the same labelled live records (paired
    bootstrap). Promote when the interval lies above `rules.margin`; reject when it lies below zero (worse with
    confidence) or when `rules.max_hours` passed without a verdict; otherwise wait for more labels."""
    if len(y) < rules.min_labels:
        if hours_in_shadow > rules.max_hours:
            return "reject", Check("live", False, f"only {len(y)} labelled record(s) scored by both models after "
                                   f"{hours_in_shadow:.0f} h in shadow (needs {rules.min_labels}; "
                                   f"feedback.shadow.max_hours {rules.max_hours:g})", {"rows": len(y)})  # fmt: skip
        return "wait", Check("live", None, f"{len(y)} of {rules.min_labels} labelled records scored by both models",
                             {"rows": len(y)})  # fmt: skip
    interval = paired_bootstrap(task, metric, y, shadow, champion, samples, confidence, seed)
    evidence = {"metric": metric, "against": champion_tag, "shadow": metric_value(task, metric, y, shadow),
                "champion": metric_value(task, metric, y, champion), "margin": rules.margin,
                "hours_in_shadow": hours_in_shadow, **interval}  # fmt: skip
    pct = round(confidence * 100)
    detail = (f"live {metric} {evidence['shadow']:.4f} vs champion {champion_tag} {evidence['champion']:.4f} on "
              f"{len(y)} labelled records: improvement {interval['observed']:+.4f}, {pct}% CI "
              f"[{interval['low']:+.4f}, {interval['high']:+.4f}]")  # fmt: skip
    if np.isfinite(interval["low"]) and interval["low"] > rules.margin:
        return "promote", Check("live", True, f"{detail} > margin {rules.margin:g}", evidence)
    if np.isfinite(interval["high"]) and interval["high"] < 0:
        return "reject", Check("live", False, f"{detail}: worse than the champion", evidence)
    if hours_in_shadow > rules.max_hours:
        return "reject", Check("live", False, f"{detail}: not shown better within feedback.shadow.max_hours "
                               f"{rules.max_hours:g}", evidence)  # fmt: skip
    return "wait", Check("live", None, f"{detail}: not yet above margin {rules.margin:g}", evidence)


def gate_challenger(tag: str, test: pd.DataFrame, y_test: np.ndarray, trivial: np.ndarray, rules: GateConfig,
                    champion: str | None, live_required: bool = False) -> GateRecord:  # fmt: skip
    """Judge a saved challenger against the champion (or the trivial baseline) on the challenger's test rows.

    The cheap rules run first; the smoke test (seconds: it starts the real service) runs only if they all passed.
    `live_required`: a challenger that passes goes into shadow instead (the first model of a name is promoted).
    """
    import bentoml

    from mlcycle.tasks.registry.bundle import load_bundle
    from mlcycle.tasks.registry.smoke import golden_records, smoke_test
    from mlcycle.tasks.train.prepare import sample_weights

    bundle = load_bundle(tag)
    config, metric = bundle.config, bundle.metrics["primary"]
    weights = sample_weights(test, config)  # every rule counts a holdout row by its sample weight
    challenger_pred = bundle.predict_raw(test)
    holdout = {"rows": len(test), "data_hash": bundle.lineage.get("data_hash"), "of": tag, "metric": metric,
               "weighted_by": config.weight}  # fmt: skip
    checks: list[Check] = []
    reference, against, champion_pred = trivial, "trivial baseline", None
    if champion:
        try:
            held = load_bundle(champion)
            if held.classes != bundle.classes:  # its probabilities would be of other classes, column by column
                raise ValueError(f"its classes {held.classes} are not the challenger's {bundle.classes}")
            champion_pred = held.predict_raw(test)
            reference, against = champion_pred, f"champion {champion}"
        except Exception as exc:  # a champion that cannot score today's rows is not a reason to keep it
            checks.append(Check("champion", None, f"champion {champion} could not predict the holdout "
                                f"({type(exc).__name__}: {exc}); judged against the trivial baseline"))  # fmt: skip
    checks.append(check_metric(config.task, metric, y_test, challenger_pred, reference, against, rules, config.seed,
                               weights))  # fmt: skip
    if champion_pred is not None:
        checks.append(check_slices(config.task, metric, y_test, challenger_pred, champion_pred,
                                   test[config.slices], rules, weights))  # fmt: skip
    else:
        checks.append(Check("slices", None, "no champion to compare slices with"))
    times = request_latency_ms(bundle, test, rules.latency_rows)
    checks.append(check_latency(times, rules))
    checks.append(check_size(folder_size_mb(Path(bentoml.models.get(tag).path)), rules))
    if not rules.smoke_test:
        checks.append(Check("smoke", None, "switched off by gate.smoke_test"))
    elif any(c.passed is False for c in checks):
        checks.append(Check("smoke", None, "not run: the challenger already failed a rule"))
    else:
        from mlcycle.schemas import resolve_schema

        fields = list(resolve_schema(config.features_schema_ref).to_schema().columns)
        records = golden_records(config, test[fields])
        result = smoke_test(tag, records, rules.smoke_tolerance, rules.smoke_timeout_s)
        evidence = result.as_dict()
        checks.append(Check("smoke", result.passed, result.detail, evidence))
    return decide(tag, champion, checks, holdout, live_required)
