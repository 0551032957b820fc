"""`mlcycle simulate bike`: replay the bike-sharing history month by month through the cycle.

The first `simulate.initial_months` months land at once and train the first model, which stays frozen. Then every
month, in time order: the month's rows are scored (RMSE) by the three contenders *before* anything learns from them,
and only then are they dropped into the landing folder. The cycle ingests them (watch-landing), refreshes its model
on the new rows (what the new-data trigger runs), re-tunes in full every `simulate.full_every_months` months (what
the schedule runs) and checks drift. The refresh-only contender continues its own model on each month and is never
re-tuned. The flows run in this process, one after another (see the README for why not through the deployments).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from schemas import PipelineConfig
from tasks.paths import mlcycle_home


@dataclass(frozen=True)
class Contenders:
    cycle: PipelineConfig  # the cycle's own dataset: landing folder, watch, retrain, drift
    refresh: PipelineConfig  # incremental refresh only, in a store of its own
    frozen_tag: str


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
    """The dataset's rows by month (`YYYY-MM`), each in time order."""
    from tasks.ingest.read import read_source
    from tasks.train.prepare import time_key

    source = config.source.model_copy(update={"sample_rows": None})
    frame = read_source(source, mlcycle_home() / "cache" / "wheels", config.seed).frame
    key = time_key(frame, config.split.time_columns)
    frame = frame.assign(_t=key).sort_values("_t")
    return {str(month): rows.drop(columns="_t").reset_index(drop=True)
            for month, rows in frame.groupby(frame["_t"].dt.strftime("%Y-%m"), sort=True)}  # fmt: skip


def rmse(bundle_ref: str, rows: pd.DataFrame, target: str) -> float:
    from tasks.registry.bundle import load_bundle

    predictions = load_bundle(bundle_ref).predict_raw(rows.drop(columns=[target]))
    return float(np.sqrt(np.mean((predictions - rows[target].to_numpy(dtype=float)) ** 2)))


def drop_file(folder: Path, name: str, rows: pd.DataFrame) -> Path:
    """Write a month's CSV as a landing client would: to a temporary name, then renamed into place."""
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f"{name}.csv.part"
    rows.to_csv(partial, index=False)
    final = folder / f"{name}.csv"
    partial.rename(final)
    return final


def simulate(config: PipelineConfig, echo: Callable[[str], None] = print) -> pd.DataFrame:
    """Run the replay; write the table (CSV, markdown) and the plot under `$MLCYCLE_HOME/simulate/<run>/`."""
    from flows.drift import drift_flow
    from flows.ingest import ingest_flow
    from flows.retrain import retrain_flow
    from flows.training import refresh_flow, train_flow
    from flows.watch import landing_config, watch_flow

    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    out = mlcycle_home() / "simulate" / f"{config.name}-{stamp}"
    settings = config.simulate
    base = with_overrides(config, settings.tune_overrides)
    months = month_frames(base)
    names = sorted(months)
    first = names[: settings.initial_months]
    later = names[settings.initial_months :]
    cycle = landing_config(with_overrides(base, {"name": f"{config.name}-sim{stamp}", "source.kind": "landing",
                                                 "source.landing": {"path": str(out / "landing" / "cycle"),
                                                                    "settle_s": 0}}))  # fmt: skip
    refresh = landing_config(with_overrides(base, {"name": f"{config.name}-sim{stamp}-refresh", "source.kind": "landing",
                                                   "source.landing": {"path": str(out / "landing" / "refresh"),
                                                                      "settle_s": 0}}))  # fmt: skip
    started = time.monotonic()
    echo(f"replay of {config.name}: {len(names)} months ({names[0]} … {names[-1]}), first model on {', '.join(first)}")
    start_rows = pd.concat([months[m] for m in first], ignore_index=True)
    drop_file(out / "landing" / "cycle", f"{first[0]}-to-{first[-1]}", start_rows)
    drop_file(out / "landing" / "refresh", f"{first[0]}-to-{first[-1]}", start_rows)
    frozen_tag = train_flow(cycle).tag
    refresh_tag = train_flow(refresh).tag
    echo(f"first models: frozen {frozen_tag}, refresh-only starts from {refresh_tag} "
         f"({time.monotonic() - started:.0f} s)")  # fmt: skip

    records = []
    for i, month in enumerate(later):
        rows = months[month]
        scored = month >= settings.score_from
        if scored:
            champion = _champion(cycle.name)
            records.append({"month": month, "rows": len(rows), "cycle": rmse(champion, rows, config.target),
                            "frozen": rmse(frozen_tag, rows, config.target),
                            "refresh_only": rmse(refresh_tag, rows, config.target), "cycle_model": champion})  # fmt: skip
        drop_file(out / "landing" / "cycle", month, rows)
        watch_flow(cycle)
        drift = drift_flow(cycle) if scored else None  # the new month against the model that has not seen it
        full = (i + 1) % settings.full_every_months == 0
        retrained = retrain_flow(cycle, cause="schedule" if full else "new-data", mode="full" if full else "refresh")
        ingest_flow(refresh, [str(drop_file(out / "landing" / "refresh", month, rows))])
        refreshed = refresh_flow(refresh, refresh_tag)
        refresh_tag = refreshed.tag if refreshed else refresh_tag
        if scored:
            records[-1]["drift"] = ", ".join(drift.drifted) if drift and drift.detected else ""
        echo(f"{month}: {len(rows)} rows; cycle {retrained.mode} → {retrained.tag}; refresh-only → {refresh_tag}"
             + (f"; RMSE cycle {records[-1]['cycle']:.1f}, frozen {records[-1]['frozen']:.1f}, "
                f"refresh-only {records[-1]['refresh_only']:.1f}" if scored else "")
             + f" ({time.monotonic() - started:.0f} s)")  # fmt: skip
    table = pd.DataFrame(records)
    write_outputs(table, out, config.name, time.monotonic() - started, echo)
    return table


def _champion(name: str) -> str:
    """The cycle's model of the day: the champion if one was promoted, else the newest version."""
    from tasks import registry

    return registry.champion(name) or registry.versions(name)[0].tag


def improvement(table: pd.DataFrame) -> float:
    return float(1 - table["cycle"].mean() / table["frozen"].mean())


def write_outputs(table: pd.DataFrame, out: Path, dataset: str, elapsed_s: float, echo: Callable[[str], None]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "rmse_by_month.csv", index=False)
    means = {c: table[c].mean() for c in ("cycle", "frozen", "refresh_only")}
    lines = ["| month | rows | cycle | frozen | refresh only | drift flagged |", "|---|---:|---:|---:|---:|---|"]
    lines += [f"| {r.month} | {r.rows} | {r.cycle:.1f} | {r.frozen:.1f} | {r.refresh_only:.1f} | {r.drift or ''} |"
              for r in table.itertuples()]  # fmt: skip
    lines.append(
        f"| **mean** | | **{means['cycle']:.1f}** | **{means['frozen']:.1f}** | **{means['refresh_only']:.1f}** | |"
    )
    (out / "rmse_by_month.md").write_text("\n".join(lines) + "\n")
    fig, ax = plt.subplots(figsize=(8, 4))
    for column, label in (("frozen", "frozen after the first months"), ("refresh_only", "incremental refresh only"),
                          ("cycle", "the cycle's champion")):  # fmt: skip
        ax.plot(table["month"], table[column], marker="o", label=f"{label} (mean {means[column]:.1f})")
    ax.set_ylabel("RMSE on the month, before training on it")
    ax.set_title(f"{dataset}: replay month by month")
    ax.tick_params(axis="x", rotation=45)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "rmse_by_month.png", dpi=110)
    plt.close(fig)
    echo("\n".join(lines))
    echo(f"wrote {out / 'rmse_by_month.csv'}, {out / 'rmse_by_month.md'}, {out / 'rmse_by_month.png'} "
         f"in {elapsed_s:.0f} s")  # fmt: skip
    echo(
        f"improvement over frozen {improvement(table):.0%} "
        f"(refresh only: {1 - means['refresh_only'] / means['frozen']:.0%})"
    )
