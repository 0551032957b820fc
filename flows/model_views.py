"""What the quick `mlcycle models` commands show: the registry's versions and promotion log, and everything recorded
for one version. They read the registry's SQLite file and the bundle's JSON files directly, without importing
Prefect, BentoML or XGBoost, so each answers in a fraction of a second (benchmarks/cli.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from mlcycle.tasks import registry
from mlcycle.tasks.tables import markdown_table

GATE_FILE = "gate.json"  # the decision and its evidence, next to the booster in the bundle's folder


def bundle_folder(tag: str) -> Path:
    """The folder of a saved version in the BentoML model store (`$BENTOML_HOME/models/<name>/<version>`)."""
    name, _, version = tag.partition(":")
    home = Path(os.environ.get("BENTOML_HOME") or Path.home() / "bentoml")
    folder = home / "models" / name / version
    if version and (folder / "model.yaml").exists():
        return folder
    import bentoml  # another store layout, or a tag BentoML spells differently: let BentoML find it

    return Path(bentoml.models.get(tag).path)


def versions_table(name: str | None = None) -> str:
    """`mlcycle models list`: one row per version, newest first."""
    rows = [{"tag": v.tag, "created": v.created, "metric": v.primary_metric, "value": v.metric,
             "data snapshot": (v.data_hash or "")[:12], "status": v.status} for v in registry.versions(name)]  # fmt: skip
    return markdown_table(rows, ["tag", "created", "metric", "value", "data snapshot", "status"])


def history_table(name: str) -> str:
    """`mlcycle models history`: the promotion log, oldest first."""
    rows = [{"at": e.at, "action": e.action, "from": e.from_tag, "to": e.to_tag, "by": e.actor,
             "flow run": (e.flow_run_id or "")[:8], "reason": _short(e.reason)} for e in registry.history(name)]  # fmt: skip
    return markdown_table(rows, ["at", "action", "from", "to", "by", "flow run", "reason"])


def _short(text: str, limit: int = 160) -> str:
    """A log reason for a table cell; `models show` has the whole record."""
    text = text.replace("|", "/").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def describe(tag: str) -> dict[str, Any]:
    """`mlcycle models show`: everything recorded for one version (a name means its champion)."""
    version = registry.version(registry.resolve(tag))
    folder = bundle_folder(version.tag)
    metrics = json.loads((folder / "metrics.json").read_text())
    gate_file = folder / GATE_FILE
    return {
        "tag": version.tag,
        "status": version.status,
        "created": version.created,
        "champion_of_name": registry.champion(version.name),
        "metrics": {k: v for k, v in metrics.items() if k in ("primary", "test", "baseline", "references", "rows")},
        "slices": metrics.get("slices"),
        "lineage": json.loads((folder / "lineage.json").read_text()),
        "config": json.loads((folder / "config.json").read_text()),
        "gate": json.loads(gate_file.read_text()) if gate_file.exists() else None,
        "events": [e.__dict__ for e in registry.history(version.name) if version.tag in (e.to_tag, e.from_tag)],
        "path": str(folder),
    }
