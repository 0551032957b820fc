"""`mlcycle simulate bike`: replay the bike-sharing history hour by hour, with the counts arriving later as labels.

The first `simulate.initial_months` months train one first model, which every policy starts from (each under its own
model name, with its own store; it is also kept frozen, as a reference). Then time advances through every later
month in steps of `simulate.step_days`. In a step, each hour is one request: every policy's serving model answers
it, and a challenger in shadow scores it too, written through the request log the service writes. The hour's count
comes back `simulate.label_delay_h` later, as a label file in the policy's feedback landing folder, ingested as the
performance check ingests it; the labelled rows are that policy's new training data. At the end of the step each
policy acts on what it has seen:

- scheduled: a full re-tune every `simulate.full_every_months` months (what the schedule runs), nothing else;
- degradation: the performance check's verdict on the labels so far (`feedback.*`); when the live RMSE has degraded,
  the retraining `retrain/<name>-on-degradation` runs (`retrain.on_degradation`, once `retrain.min_new_rows` new rows
  have arrived since the newest version);
- shadow: the same trigger, but with `feedback.shadow.live_gate` a new model that passes the gate is scored in shadow
  and serves only once the live rule finds it better than the champion on the same labelled hours.

Every hour is answered by the model serving at that hour, trained only on labels that had arrived before it, so each
month of 2012 is scored before anyone trains on it. A promotion is worse when the 30 days after it, scored offline,
show the new model's RMSE above the one it replaced; one with less than 30 days of data left after it cannot be
judged so, and is counted as not judged. Retraining runs the real flows in this process against Prefect's
temporary server; the performance check's work (`tasks.monitor.feedback.assess`) is called directly each step rather
than as a flow run, as are the label files' ingest and the registry's promote/reject (what the flow's tasks call).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlcycle.schemas import PipelineConfig
from mlcycle.tasks.paths import mlcycle_home

POLICIES = {
    "scheduled": "scheduled retraining only",
    "degradation": "degradation-triggered retraining",
    "shadow": "shadow-gated promotion",
}


def with_overrides(config: PipelineConfig, overrides: dict[str, Any]) -> PipelineConfig:
    """The config with dotted-key overrides applied, validated again."""
    raw = config.model_dump(mode="json")
    for dotted, value in overrides.items():
        node = raw
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return PipelineConfig.model_validate(raw)


def month_frames(config: PipelineConfig) -> dict[str, pd.DataFrame]:
    """The dataset's rows by month (`YYYY-MM`), each in time order, with its hour as `_t` (UTC)."""
    from mlcycle.tasks.ingest.read import read_source
    from mlcycle.tasks.train.prepare import time_key

    source = config.source.model_copy(update={"sample_rows": None})
    frame = read_source(source, mlcycle_home() / "cache" / "wheels", config.seed).frame
    key = time_key(frame, config.split.time_columns).dt.tz_localize("UTC")
    frame = frame.assign(_t=key).sort_values("_t")
    return {str(month): rows.reset_index(drop=True)
            for month, rows in frame.groupby(frame["_t"].dt.strftime("%Y-%m"), sort=True)}  # fmt: skip


def rmse(predictions: np.ndarray, truth: np.ndarray) -> float:
    return float(np.sqrt(np.mean((predictions - truth) ** 2)))


def drop_file(folder: Path, name: str, rows: pd.DataFrame) -> Path:
    """Write a CSV as a landing client would: to a temporary name, then renamed into place."""
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f"{name}.csv.part"
    rows.to_csv(partial, index=False)
    final = folder / f"{name}.csv"
    partial.rename(final)
    return final


def steps(rows: pd.DataFrame, days: int) -> list[tuple[datetime, datetime, pd.DataFrame]]:
    """A month's rows cut into steps of `days` (the last one shorter): (start, end, rows)."""
    start = rows["_t"].iloc[0].to_pydatetime().replace(day=1, hour=0)
    end_of_month = (start + timedelta(days=32)).replace(day=1)
    out, t = [], start
    while t < end_of_month:
        t1 = min(t + timedelta(days=days), end_of_month)
        out.append((t, t1, rows[(rows["_t"] >= t) & (rows["_t"] < t1)]))
        t = t1
    return out


class Models:
    """Bundles by tag, loaded once (every policy predicts every hour)."""

    def __init__(self) -> None:
        self._loaded: dict[str, Any] = {}

    def predict(self, tag: str, rows: pd.DataFrame) -> np.ndarray:
        from mlcycle.tasks.registry.bundle import load_bundle

        if tag not in self._loaded:
            self._loaded[tag] = load_bundle(tag)
        return np.asarray(self._loaded[tag].predict_raw(rows), dtype=float)


@dataclass
class Policy:
    """One policy's model name, what serves now, and what it did."""

    key: str
    config: PipelineConfig
    landing: Path
    serving: str
    shadow: str | None = None
    shadow_since: datetime | None = None
    pending: list[pd.DataFrame] = field(default_factory=list)  # labelled rows not yet landed
    fresh_rows: int = 0  # labelled rows since the newest version was trained (retrain.min_new_rows)
    waiting: list[tuple[datetime, str, float]] = field(default_factory=list)  # label arrival, request id, count
    answers: list[tuple[str, float, float]] = field(default_factory=list)  # month, prediction, truth
    promotions: list[tuple[datetime, str, str]] = field(default_factory=list)  # time, replaced, new
    shadowed: list[str] = field(default_factory=list)
    retrains: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.config.name


def simulate(config: PipelineConfig, echo: Callable[[str], None] = print) -> pd.DataFrame:
    """Run the replay; write the tables (CSV, markdown) and the plot under `$MLCYCLE_HOME/simulate/<run>/`."""
    from mlcycle.flows.training import train_flow

    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    out = mlcycle_home() / "simulate" / f"{config.name}-{stamp}"
    settings = config.simulate
    base = with_overrides(config, settings.tune_overrides)
    months = month_frames(base)
    names = sorted(months)
    first, later = names[: settings.initial_months], names[settings.initial_months :]
    started = time.monotonic()
    echo(f"replay of {config.name}: {len(names)} months ({names[0]} … {names[-1]}), first models on "
         f"{', '.join(first)}; labels {settings.label_delay_h:g} h after each hour, steps of {settings.step_days} days")  # fmt: skip
    start_rows = pd.concat([months[m] for m in first], ignore_index=True).drop(columns="_t")
    policies: list[Policy] = []
    for key in POLICIES:
        landing = out / "landing" / key
        policy_config = with_overrides(base, {
            "name": f"{config.name}-sim{stamp}-{key}", "source.kind": "landing",
            "source.landing": {"path": str(landing), "settle_s": 0},
            "feedback.landing": str(out / "feedback" / key), "feedback.settle_s": 0,
            "feedback.shadow.live_gate": key == "shadow"})  # fmt: skip
        drop_file(landing, f"{first[0]}-to-{first[-1]}", start_rows)
        if not policies:
            tag = train_flow(policy_config).tag
            policies.append(Policy(key, policy_config, landing, _serving(policy_config.name, tag)))
        else:
            policies.append(Policy(key, policy_config, landing, adopt(policies[0].serving, policy_config)))
    frozen = policies[0].serving
    echo(f"first models: {', '.join(p.serving for p in policies)} ({time.monotonic() - started:.0f} s)")

    models = Models()
    frozen_answers: list[tuple[str, float, float]] = []
    for i, month in enumerate(later):
        month_steps = steps(months[month], settings.step_days)
        for _, t1, rows in month_steps:
            schedule_due = (i + 1) % settings.full_every_months == 0 and t1 == month_steps[-1][1]
            if len(rows):
                frozen_answers += [(month, p, y) for p, y in zip(models.predict(frozen, rows),
                                                                  rows[config.target].to_numpy(float), strict=True)]  # fmt: skip
            for policy in policies:
                serve_step(policy, rows, month, models, settings.label_delay_h)
                deliver_labels(policy, t1)
                act(policy, t1, schedule_due)
        echo(f"{month}: {len(months[month])} rows; " + "; ".join(
            f"{p.key} {p.serving.split(':')[-1][:8]}" + (f" (shadow {p.shadow.split(':')[-1][:8]})" if p.shadow else "")
            + (f" RMSE {month_rmse(p.answers, month):.1f}" if month >= settings.score_from else "")
            for p in policies) + f" ({time.monotonic() - started:.0f} s)")  # fmt: skip
    table = month_table(policies, frozen_answers, settings.score_from)
    promotions = promotion_table(policies, months, models)
    write_outputs(table, promotions, policies, out, config.name, time.monotonic() - started, echo)
    return table


def _serving(name: str, fallback: str) -> str:
    """A policy's model of the moment: its champion, or its newest version while nothing has been promoted."""
    from mlcycle.tasks import registry

    return registry.champion(name) or fallback


def adopt(tag: str, config: PipelineConfig) -> str:
    """The first model under another policy's name, so every policy starts from the same one: the first months'
    file ingested into that policy's store, and the same booster, preprocessing and metrics saved against its
    snapshot and promoted, as the first model was."""
    from mlcycle.flows.ingest import ingest_flow
    from mlcycle.tasks import registry
    from mlcycle.tasks.ingest.store import DatasetStore, take_snapshot
    from mlcycle.tasks.registry.bundle import load_bundle, save_bundle

    ingest_flow(config)
    snapshot = take_snapshot(DatasetStore.for_dataset(config.name))
    bundle = load_bundle(tag)
    lineage = {**bundle.lineage, "data_hash": snapshot.hash, "adopted_from": tag}
    adopted = save_bundle(bundle.booster, bundle.preprocessor, config, bundle.classes, bundle.metrics, lineage)
    registry.promote(adopted, reason=f"the replay's first model, {tag}, trained on the same rows")
    return adopted


def serve_step(policy: Policy, rows: pd.DataFrame, month: str, models: Models, delay_h: float) -> None:
    """Answer each hour of the step with the serving model (and score it in shadow), logged as the service logs."""
    from mlcycle.schemas import resolve_schema
    from mlcycle.tasks.monitor.feedback import shadow_dir
    from mlcycle.tasks.monitor.request_log import RequestLog

    if not len(rows):
        return
    config = policy.config
    columns = {n: str(c.dtype) for n, c in resolve_schema(config.features_schema_ref).to_schema().columns.items()}
    features = rows[list(columns)]
    answered = models.predict(policy.serving, features)
    truth = rows[config.target].to_numpy(dtype=float)
    log = RequestLog(config.name, columns, config.serving.request_log)
    shadow_log = RequestLog(config.name, {}, config.serving.request_log, root=shadow_dir(config.name), index=False)
    shadowed = models.predict(policy.shadow, features) if policy.shadow else None
    records = features.astype(object).where(features.notna(), None).to_dict("records")
    for j, (record, at) in enumerate(zip(records, rows["_t"], strict=True)):
        rid = uuid.uuid4().hex
        at = at.to_pydatetime()
        log.add([record], policy.serving, rid, [float(answered[j])], at=at)
        if shadowed is not None and policy.shadow is not None:
            shadow_log.add([{}], policy.shadow, rid, [float(shadowed[j])], at=at)
        policy.waiting.append((at + timedelta(hours=delay_h), rid, float(truth[j])))
    log.flush()
    shadow_log.flush()
    policy.answers += [(month, float(p), float(y)) for p, y in zip(answered, truth, strict=True)]
    policy.pending.append(rows.assign(_arrives=rows["_t"] + pd.Timedelta(hours=delay_h)))


def deliver_labels(policy: Policy, now: datetime) -> None:
    """The labels due by `now`, as a file in the feedback landing folder, ingested as the performance check does."""
    from mlcycle.tasks.monitor.labels import LabelTarget, ingest_label_folder
    from mlcycle.tasks.monitor.request_log import RequestIndex, requests_dir

    due = [w for w in policy.waiting if w[0] <= now]
    if not due:
        return
    policy.waiting = [w for w in policy.waiting if w[0] > now]
    frame = pd.DataFrame({"request_id": [w[1] for w in due], "record": 0, "label": [w[2] for w in due]})
    drop_file(Path(str(policy.config.feedback.landing)), f"labels-{now:%Y%m%dT%H%M}", frame)
    index = RequestIndex(requests_dir(policy.name))
    found = ingest_label_folder(policy.name, policy.config.feedback, index.lookup, LabelTarget("regression"), now)
    accepted = sum(f.accepted for f in found)
    if accepted != len(due):
        policy.notes.append(f"{now:%Y-%m-%d}: {len(due)} labels sent, {accepted} accepted")


def land_labelled_rows(policy: Policy, now: datetime) -> int:
    """Write the rows whose labels have arrived by `now` to the policy's landing folder; how many."""
    if not policy.pending:
        return 0
    pending = pd.concat(policy.pending, ignore_index=True)
    arrived = pending[pending["_arrives"] <= now]
    policy.pending = [pending[pending["_arrives"] > now]] if (pending["_arrives"] > now).any() else []
    if len(arrived):
        drop_file(policy.landing, f"labelled-{now:%Y%m%dT%H%M}", arrived.drop(columns=["_t", "_arrives"]))
    policy.fresh_rows += len(arrived)
    return len(arrived)


def act(policy: Policy, now: datetime, schedule_due: bool) -> None:
    """What the policy does at the end of a step: retrain on its trigger, judge its shadow."""
    from mlcycle.tasks import registry

    if policy.key == "scheduled":
        if schedule_due:
            retrain(policy, "schedule", now)
        return
    report = check(policy, now)
    if policy.shadow and report.shadow_decision in ("promote", "reject"):
        reason = f"live rule: {(report.shadow_check or {}).get('detail', '')}"
        if report.shadow_decision == "promote":
            registry.promote(policy.shadow, reason=reason, evidence={"live": report.shadow_check})
            policy.promotions.append((now, policy.serving, policy.shadow))
            policy.serving = policy.shadow
        else:
            registry.reject(policy.shadow, reason=reason, evidence={"live": report.shadow_check})
        policy.shadow, policy.shadow_since = None, None
    if report.degradation.degraded and policy.shadow is None:
        land_labelled_rows(policy, now)
        if policy.fresh_rows >= policy.config.retrain.min_new_rows:  # the flow's own rule, checked before a run
            retrain(policy, "degradation", now)


def check(policy: Policy, now: datetime) -> Any:
    """The performance check's verdicts for this policy at `now` (tasks.monitor.feedback.assess)."""
    from mlcycle.tasks import registry
    from mlcycle.tasks.monitor.feedback import Served, assess

    config = policy.config
    champion = Served(policy.serving, registry.version(policy.serving).metric)
    shadow = Served(policy.shadow, registry.version(policy.shadow).metric) if policy.shadow else None
    return assess(config.name, config.task, "rmse", config.slices, config.feedback, champion, shadow,
                  policy.shadow_since, now, config.seed)  # fmt: skip


def retrain(policy: Policy, cause: str, now: datetime) -> None:
    """Land the labelled rows, ingest them (watch-landing), then the retraining deployment's flow."""
    from mlcycle.flows.retrain import retrain_flow
    from mlcycle.flows.watch import watch_flow
    from mlcycle.tasks import registry

    land_labelled_rows(policy, now)
    watch_flow(policy.config)
    result = retrain_flow(policy.config, cause=cause)  # type: ignore[arg-type]
    if result.tag is None:
        policy.notes.append(f"{now:%Y-%m-%d} {cause}: {result.reason}")
        return
    policy.retrains += 1
    policy.fresh_rows = 0
    champion = registry.champion(policy.name)
    if champion and champion != policy.serving:
        policy.promotions.append((now, policy.serving, champion))
        policy.serving = champion
    if registry.shadow(policy.name) == result.tag:
        policy.shadow, policy.shadow_since = result.tag, now
        policy.shadowed.append(result.tag)


def month_rmse(answers: list[tuple[str, float, float]], month: str) -> float:
    mine = [(p, y) for m, p, y in answers if m == month]
    return rmse(np.array([p for p, _ in mine]), np.array([y for _, y in mine])) if mine else float("nan")


def month_table(policies: list[Policy], frozen: list[tuple[str, float, float]], score_from: str) -> pd.DataFrame:
    """RMSE per scored month: each policy's served answers, and the frozen first model's."""
    months = sorted({m for m, _, _ in frozen if m >= score_from})
    rows = []
    for month in months:
        row: dict[str, Any] = {"month": month, "rows": sum(1 for m, _, _ in frozen if m == month)}
        row.update({p.key: month_rmse(p.answers, month) for p in policies})
        row["frozen"] = month_rmse(frozen, month)
        rows.append(row)
    return pd.DataFrame(rows)


def promotion_table(policies: list[Policy], months: dict[str, pd.DataFrame], models: Models) -> pd.DataFrame:
    """Every promotion, with both models scored offline on the 30 days of hours after it: worse if the new one's
    RMSE is higher. `judged` is False when the data ends before those 30 days do."""
    every = pd.concat(months.values(), ignore_index=True)
    end = every["_t"].max()
    rows = []
    for policy in policies:
        for at, old, new in policy.promotions:
            after = every[(every["_t"] >= at) & (every["_t"] < at + timedelta(days=30))]
            truth = after[policy.config.target].to_numpy(dtype=float)
            before = rmse(models.predict(old, after), truth) if len(after) else float("nan")
            now = rmse(models.predict(new, after), truth) if len(after) else float("nan")
            judged = bool(at + timedelta(days=30) <= end)
            rows.append({"policy": policy.key, "at": at.strftime("%Y-%m-%d"), "replaced": old, "promoted": new,
                         "rows_after": len(after), "replaced_rmse": before, "promoted_rmse": now, "judged": judged,
                         "worse": judged and now > before})  # fmt: skip
    return pd.DataFrame(rows, columns=["policy", "at", "replaced", "promoted", "rows_after", "replaced_rmse",
                                       "promoted_rmse", "judged", "worse"])  # fmt: skip


def summary_line(table: pd.DataFrame, promotions: pd.DataFrame, shadow: Policy) -> str:
    """The replay's verdict in one line (the issue's targets: X >= 10, K = 0)."""
    gain = (1 - table["degradation"].mean() / table["scheduled"].mean()) * 100
    worse = int(promotions.loc[promotions["policy"] == "shadow", "worse"].sum()) if len(promotions) else 0
    promoted = sum(1 for _, _, new in shadow.promotions if new in shadow.shadowed)
    return (
        f"feedback: degradation-triggered vs scheduled {gain:.0f}% RMSE, shadow-gated promotions "
        f"{promoted} of {len(shadow.shadowed)}, worse promotions {worse}"
    )


def write_outputs(table: pd.DataFrame, promotions: pd.DataFrame, policies: list[Policy], out: Path, dataset: str,
                  elapsed_s: float, echo: Callable[[str], None]) -> None:  # fmt: skip
    from matplotlib.figure import Figure

    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "rmse_by_month.csv", index=False)
    promotions.to_csv(out / "promotions.csv", index=False)
    columns = [*POLICIES, "frozen"]
    means = {c: table[c].mean() for c in columns}
    lines = ["| month | rows | scheduled | degradation | shadow-gated | frozen |", "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['month']} | {r['rows']} | " + " | ".join(f"{r[c]:.1f}" for c in columns) + " |"
              for _, r in table.iterrows()]  # fmt: skip
    lines.append("| **mean** | | " + " | ".join(f"**{means[c]:.1f}**" for c in columns) + " |")
    lines += ["", "| policy | retrainings | promotions | worse promotions | not judged (< 30 days after) | put in shadow |",
              "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for p in policies:
        mine = promotions[promotions["policy"] == p.key]
        lines.append(f"| {POLICIES[p.key]} | {p.retrains} | {len(p.promotions)} | {int(mine['worse'].sum())} | "
                     f"{int((~mine['judged'].astype(bool)).sum())} | {len(p.shadowed) if p.key == 'shadow' else '-'} |")  # fmt: skip
    (out / "rmse_by_month.md").write_text("\n".join(lines) + "\n")
    fig = Figure(figsize=(8, 4))  # no pyplot: the caller's plotting backend stays as it was
    ax = fig.subplots()
    for column in columns:
        label = POLICIES.get(column, "frozen first model")
        ax.plot(table["month"], table[column], marker="o", label=f"{label} (mean {means[column]:.1f})")
    ax.set_ylabel("RMSE of the month's served answers")
    ax.set_title(f"{dataset}: replay with labels arriving later")
    ax.tick_params(axis="x", rotation=45)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "rmse_by_month.png", dpi=110)
    echo("\n".join(lines))
    for p in policies:
        for note in p.notes[-5:]:
            echo(f"{p.key}: {note}")
    echo(f"wrote {out / 'rmse_by_month.csv'}, {out / 'rmse_by_month.md'}, {out / 'promotions.csv'}, "
         f"{out / 'rmse_by_month.png'} in {elapsed_s:.0f} s")  # fmt: skip
    echo(summary_line(table, promotions, next(p for p in policies if p.key == "shadow")))
