"""Steps that skip themselves: the search and the model of a training run, keyed by what they depend on.

A training run's expensive steps are pure functions of four things: the snapshot's data hash, the schema's
fingerprint, the part of the config each step reads, and the code (mlcycle's own source and the libraries that shape
a model). Each step's key is the SHA-256 of those four; a step whose key was computed before is not computed again:

| step | its key covers | what is stored under the key |
|---|---|---|
| search | data, schema, code, every config section but the ones only later steps read | the search's result, the best trial's booster |
| model | the search's key and every config section but `gate` and `tracking` | the tag of the bundle it produced |
| gate | the model's tag, the `gate` section, the champion it was judged against | the decision, made once |

The results live in `MLCYCLE_HOME/steps/<dataset>/`, next to what they describe: a model step points at its bundle
in the registry, which already holds the booster, the fitted preprocessing, the metrics and the digests, so a reused
model is that same registry entry, never a copy. Why not Prefect's cache policies: they key a task on its inputs
(DataFrames and boosters here, expensive and unstable to hash) and persist results as pickles beside the registry;
mlcycle already has the content hashes (snapshot, schema) and a registry that must not gain a second entry for the
same model. See docs/architecture.md, "Steps that skip themselves".
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata, util
from pathlib import Path
from typing import Any

from mlcycle.schemas import PipelineConfig
from mlcycle.tasks.paths import mlcycle_home

log = logging.getLogger(__name__)

# config sections that only steps after the search read (evaluation slices, serving, monitoring, the gate, ...):
# changing them reuses the search. A section not named here is in the search's key: unknown means "may matter".
AFTER_SEARCH = frozenset(
    {"slices", "refresh", "serving", "schedule", "retrain", "drift", "simulate", "feedback", "gate", "tracking"}
)
# sections no bundle depends on: changing them reuses the model (and judges it again, see `gate_key`)
AFTER_MODEL = frozenset({"gate", "tracking"})
# the libraries whose versions change what a search or a fit produces
LIBRARIES = ("xgboost", "scikit-learn", "numpy", "pandas", "pyarrow", "pandera", "ray", "optuna")
SOURCE_PACKAGES = ("mlcycle.flows", "mlcycle.tasks", "mlcycle.schemas", "mlcycle.serving")


@functools.cache
def code_version() -> str:
    """A hash of mlcycle's own source files and of the versions of the libraries that shape a model: any edit to
    the code, installed or in a working copy, is a new version (a version number alone would miss the latter)."""
    digest = hashlib.sha256()
    for package in SOURCE_PACKAGES:
        spec = util.find_spec(package)
        for folder in (spec.submodule_search_locations or []) if spec else []:
            for path in sorted(Path(folder).rglob("*.py")):
                digest.update(f"{package}/{path.relative_to(folder).as_posix()}\0".encode())
                digest.update(path.read_bytes())
    for name in LIBRARIES:
        try:
            digest.update(f"{name}=={metadata.version(name)}\0".encode())
        except metadata.PackageNotFoundError:
            digest.update(f"{name} absent\0".encode())
    return digest.hexdigest()[:16]


def _plain(value: Any) -> Any:
    """JSON for what the search reports: numpy scalars as Python numbers, anything else as text."""
    return value.item() if hasattr(value, "item") else str(value)


def _hash(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _sections(config: PipelineConfig, leave_out: frozenset[str]) -> dict[str, Any]:
    return {k: v for k, v in config.model_dump(mode="json").items() if k not in leave_out}


@dataclass(frozen=True)
class StepKeys:
    """The keys of one run's steps (recorded in the model's lineage under `steps`)."""

    search: str
    model: str

    @classmethod
    def of(cls, config: PipelineConfig, data_hash: str, schema_hash: str) -> StepKeys:
        common = {"data": data_hash, "schema": schema_hash, "code": code_version()}
        search = _hash({**common, "step": "search", "config": _sections(config, AFTER_SEARCH)})
        model = _hash({**common, "step": "model", "search": search, "config": _sections(config, AFTER_MODEL)})
        return cls(search=search, model=model)


def gate_key(tag: str, config: PipelineConfig, champion: str | None) -> str:
    """A decision is made again only when what it rests on changed: the `gate` rules, or the champion."""
    return _hash({"step": "gate", "tag": tag, "gate": config.gate.model_dump(mode="json"), "champion": champion})


@dataclass(frozen=True)
class Reused:
    """A step's stored result: which run computed it, and when."""

    step: str
    key: str
    flow_run_id: str | None
    at: str
    value: dict[str, Any]

    def line(self) -> str:
        return f"{self.step}: reused from run {self.flow_run_id or 'local'} of {self.at} (key {self.key})"


@dataclass(frozen=True)
class StepStore:
    """One dataset's stored step results: `<step>-<key>.json`, and files beside it named in its `files` with their
    SHA-256 (a result whose file no longer matches is not used: it is computed again, with a warning)."""

    root: Path

    @classmethod
    def for_dataset(cls, name: str) -> StepStore:
        return cls(mlcycle_home() / "steps" / name)

    def _record(self, step: str, key: str) -> Path:
        return self.root / f"{step}-{key}.json"

    def file(self, step: str, key: str, name: str) -> Path:
        return self.root / f"{step}-{key}.{name}"

    def get(self, step: str, key: str) -> Reused | None:
        path = self._record(step, key)
        try:
            record = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("steps: %s unreadable (%s): the %s step runs again", path, exc, step)
            return None
        from mlcycle.tasks.ingest.read import sha256_file

        for name, digest in record.get("files", {}).items():
            stored = self.file(step, key, name)
            if not stored.exists() or sha256_file(stored) != digest:
                log.warning("steps: %s is missing or changed since it was stored: the %s step runs again", stored,
                            step)  # fmt: skip
                return None
        return Reused(step, key, record.get("flow_run_id"), record["at"], record["value"])

    def put(self, step: str, key: str, value: dict[str, Any], flow_run_id: str | None,
            files: dict[str, Path] | None = None) -> None:  # fmt: skip
        """Store a result atomically: its files first (moved beside the record), the record that names them last."""
        from mlcycle.tasks.ingest.read import sha256_file

        self.root.mkdir(parents=True, exist_ok=True)
        digests = {}
        for name, source in (files or {}).items():
            target = self.file(step, key, name)
            os.replace(source, target)
            digests[name] = sha256_file(target)
        record = {"step": step, "key": key, "flow_run_id": flow_run_id, "files": digests, "value": value,
                  "at": datetime.now(UTC).isoformat(timespec="seconds")}  # fmt: skip
        with tempfile.NamedTemporaryFile("w", dir=self.root, prefix=".incoming-", suffix=".json", delete=False) as fh:
            json.dump(record, fh, indent=2, sort_keys=True, default=_plain)
        os.replace(fh.name, self._record(step, key))


def search_value(tuned: Any) -> dict[str, Any]:
    """A TuneResult as stored (its booster goes to a file of its own)."""
    value = asdict(tuned)
    value.pop("best_booster")
    return value


def save_search(store: StepStore, key: str, tuned: Any, flow_run_id: str | None) -> None:
    files = {}
    if tuned.best_booster is not None:
        store.root.mkdir(parents=True, exist_ok=True)
        staged = store.root / f".incoming-{key}.ubj"
        tuned.best_booster.save_model(staged)
        files["booster.ubj"] = staged
    store.put("search", key, search_value(tuned), flow_run_id, files)


def load_search(store: StepStore, key: str) -> tuple[Any, Reused] | None:
    """The stored search result under `key`, its best booster loaded, or None."""
    import xgboost as xgb

    from mlcycle.tasks.train.tune import TuneResult

    reused = store.get("search", key)
    if reused is None:
        return None
    booster = None
    if (path := store.file("search", key, "booster.ubj")).exists():
        booster = xgb.Booster()
        booster.load_model(path)
    return TuneResult(**reused.value, best_booster=booster), reused


def stored_model(store: StepStore, key: str) -> Reused | None:
    """The model stored under `key`, if its bundle is still in the registry (a deleted model is trained again)."""
    from mlcycle.tasks import registry

    reused = store.get("model", key)
    if reused is None:
        return None
    try:
        registry.version(reused.value["tag"])
    except registry.RegistryError:
        log.warning("steps: %s, stored for key %s, is no longer in the registry: training again",
                    reused.value["tag"], key)  # fmt: skip
        return None
    return reused
