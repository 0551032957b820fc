"""The model bundle: booster, fitted preprocessing, schema reference, metrics and lineage, stored in the
BentoML model store under a versioned tag. Training writes it; the service and the tests load it."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa
import xgboost as xgb

from mlcycle.schemas import is_file_ref, resolve_schema
from mlcycle.schemas.config import PipelineConfig
from mlcycle.tasks.errors import UserError
from mlcycle.tasks.ingest.read import sha256_file
from mlcycle.tasks.preprocess import PreprocessorSpec, apply_preprocessor, unseen_categories
from mlcycle.tasks.train.boost import dmatrix

log = logging.getLogger("mlcycle.registry")
BOOSTER_FILE = "booster.ubj"  # XGBoost's own binary JSON format: no pickle
FILES = ("preprocessor.json", "config.json", "metrics.json", "lineage.json")
SCHEMA_DIR = "schemas"  # copies of the project's schema files the config names (`schemas/x.py:XSchema`)


@dataclass(frozen=True)
class ModelBundle:
    """A trained model with everything needed to serve it exactly as it was evaluated."""

    tag: str
    booster: xgb.Booster
    preprocessor: PreprocessorSpec
    config: PipelineConfig
    classes: list[str]
    metrics: dict[str, Any]
    lineage: dict[str, Any]
    folder: Path | None = None  # where the bundle's files are, in the model store

    @property
    def features_schema(self) -> type[pa.DataFrameModel]:
        """The pandera model of a request, as this model was trained with it."""
        return resolve_schema(self.config.features_schema_ref)

    @property
    def training_schema(self) -> type[pa.DataFrameModel]:
        """The pandera model of a training row, as this model was trained with it."""
        return resolve_schema(self.config.schema_ref)

    def predict_raw(self, features: pd.DataFrame) -> np.ndarray:
        return predict_raw(self.booster, self.preprocessor, features)

    def predict_records(self, features: pd.DataFrame) -> tuple[list[dict[str, Any]], dict[str, int]]:
        """Predictions as the service returns them, one dict per row, and the unseen categories per feature."""
        prepared = apply_preprocessor(self.preprocessor, features)
        raw = self.booster.predict(dmatrix(prepared, None, nthread=1))
        unseen = unseen_categories(self.preprocessor, features, prepared)
        return answer_records(self.config.task, self.classes, raw), unseen


def answer_records(task: str, classes: list[str], raw: np.ndarray) -> list[dict[str, Any]]:
    """The service's answer per row from the booster's output: binary `probability` (of the positive class) and
    `label`; multiclass `label` (the most probable class) and `probabilities` (per class); regression `value`."""
    if task == "binary":
        negative, positive = classes
        return [{"probability": p, "label": positive if p >= 0.5 else negative} for p in raw.tolist()]
    if task == "multiclass":
        best = raw.argmax(axis=1).tolist()
        return [{"label": classes[b], "probabilities": dict(zip(classes, row, strict=True))}
                for b, row in zip(best, raw.tolist(), strict=True)]  # fmt: skip
    return [{"value": v} for v in raw.tolist()]


def predict_features(booster: xgb.Booster, features: np.ndarray) -> np.ndarray:
    """The booster's output for encoded features (`encode_records` / `encode_frame`): the one booster call that the
    service and the Python API (`mlcycle.load(...).predict`) both make, so their answers are the same bits."""
    return np.asarray(booster.inplace_predict(features), dtype=np.float64)


def contributions(booster: xgb.Booster, features: np.ndarray, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """XGBoost's own SHAP values (pred_contribs) per model feature, and the bias column; for multiclass those of each
    record's predicted class (its softmax margin), the class its answer names. `raw` is `predict_features`'s."""
    matrix = xgb.DMatrix(features, feature_names=booster.feature_names, feature_types=booster.feature_types,
                         enable_categorical=True, nthread=1)  # fmt: skip
    contribs = booster.predict(matrix, pred_contribs=True)
    if contribs.ndim == 3:  # multiclass: (records, classes, features + bias)
        contribs = contribs[np.arange(len(contribs)), raw.argmax(axis=1)]
    return contribs[:, :-1], contribs[:, -1]


def predict_raw(
    booster: xgb.Booster, preprocessor: PreprocessorSpec, features: pd.DataFrame, nthread: int = 1
) -> np.ndarray:
    """Probability of the positive class (binary), the class probabilities (multiclass: one column per class, in
    the bundle's `classes` order) or the predicted value (regression) per validated row.

    The one prediction path: evaluation, the service and the skew tests all call it.
    """
    prepared = apply_preprocessor(preprocessor, features)
    return booster.predict(dmatrix(prepared, None, nthread=nthread))


def collect_lineage(data_hash: str, schema_hash: str, config: PipelineConfig, extra: dict[str, Any]) -> dict[str, Any]:
    """What a model was made from: data, schema, config, code and library versions, and the run ids."""
    import importlib.metadata
    import platform
    import subprocess

    packages = ["xgboost", "pandas", "pandera", "scikit-learn", "ray", "bentoml", "prefect", "numpy"]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=Path(__file__).parent).stdout.strip() or None  # fmt: skip
    except OSError:
        commit = None
    return {
        "data_hash": data_hash,
        "schema_hash": schema_hash,
        "config_hash": config.fingerprint(),
        "seed": config.seed,
        "code_version": commit,
        "python": platform.python_version(),
        "libraries": {name: importlib.metadata.version(name) for name in packages},
        **extra,
    }


def save_bundle(
    booster: xgb.Booster,
    preprocessor: PreprocessorSpec,
    config: PipelineConfig,
    classes: list[str],
    metrics: dict[str, Any],
    lineage: dict[str, Any],
) -> str:
    """Write a new version of the model to the BentoML model store and return its tag.

    Raises:
        BundleSaveError: the disk under the model store is full: nothing was registered.
    """
    primary = metrics["primary"]
    try:
        tag, digests = _write_bundle(booster, preprocessor, config, classes, metrics, lineage)
    except OSError as exc:  # shutil.Error, the store's copy of the staged files, is one too
        full = _disk_full(exc)
        if full is None:
            raise
        raise BundleSaveError(
            f"{config.name}: the model could not be saved in the model store: {full}; nothing was "
            "registered (free space under MLCYCLE_HOME or BENTOML_HOME and train again)"
        ) from exc
    from mlcycle.tasks import registry

    registry.register(tag, primary_metric=primary, metric=metrics["test"][primary], data_hash=lineage["data_hash"],
                      digests=digests)  # fmt: skip
    return tag


class BundleSaveError(UserError, RuntimeError):
    """The model store's disk is full; BentoML removed the half-copied version, and nothing was registered."""


def _disk_full(exc: OSError) -> str | None:
    """The reason, when `exc` says the disk is full (directly, or for a file of a copy: shutil.Error lists them)."""
    import errno

    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"{exc.strerror} (errno {exc.errno})"
    failures = exc.args[0] if exc.args and isinstance(exc.args[0], list) else []
    reasons = [str(f[-1]) for f in failures if isinstance(f, tuple) and f]
    full = [r for r in reasons if f"[Errno {errno.ENOSPC}]" in r or f"[Errno {errno.EDQUOT}]" in r]
    return full[0].split(": '")[0] if full else None


def _write_bundle(
    booster: xgb.Booster,
    preprocessor: PreprocessorSpec,
    config: PipelineConfig,
    classes: list[str],
    metrics: dict[str, Any],
    lineage: dict[str, Any],
) -> tuple[str, dict[str, str]]:
    """The bundle's files in a new version of the model store; its tag and the SHA-256 of each file."""
    import bentoml

    primary = metrics["primary"]
    with bentoml.models.create(
        config.name,
        module="mlcycle",
        labels={"dataset": config.name, "task": config.task},
        metadata={
            "primary_metric": primary,
            primary: metrics["test"][primary],
            "classes": classes,
            "data_hash": lineage["data_hash"],
        },  # fmt: skip
    ) as model:
        root = Path(model.path)
        booster.save_model(str(root / BOOSTER_FILE))
        contents = {
            "preprocessor.json": preprocessor.model_dump(mode="json"),
            "config.json": config.model_dump(mode="json"),
            "metrics.json": metrics,
        }
        for name, payload in contents.items():
            (root / name).write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))
        copy_schema_files(config, root)
        # The lineage names every other file's digest (a Bento, which has no registry, checks against it); the
        # registry holds them all, the lineage's own included.
        files = file_digests(root)
        _write_json(root / "lineage.json", {**lineage, "classes": classes, "files": files})
        files["lineage.json"] = sha256_file(root / "lineage.json")
    return str(model.tag), files


def _write_json(path: Path, payload: Any) -> None:
    path.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))


def file_digests(root: Path) -> dict[str, str]:
    """SHA-256 of each file a bundle is made of (the booster, the JSON parts, the schema copy), by relative path."""
    names = [BOOSTER_FILE, *(n for n in FILES if n != "lineage.json")]
    names += sorted(str(p.relative_to(root)) for p in (root / SCHEMA_DIR).glob("*") if p.is_file())
    return {name: sha256_file(root / name) for name in names if (root / name).is_file()}


class IntegrityError(UserError, RuntimeError):
    """A bundle file that is missing or differs from the digest recorded when the model was saved: never served."""

    def __init__(self, tag: str, file: str, expected: str, found: str | None) -> None:
        self.tag, self.file = tag, file
        state = "is missing" if found is None else f"has sha256 {found[:16]}…, not the {expected[:16]}… recorded"
        super().__init__(f"{tag}: {file} {state} when the model was saved: the model is refused (restore the file "
                         "from a backup, or train again)")  # fmt: skip


def verify_bundle(tag: str, root: Path, lineage: dict[str, Any]) -> None:
    """Check every file against the registry's digests (or, with no registry entry, as in a Bento, the lineage's);
    raise IntegrityError naming the first file that does not match, after logging it and emitting
    `mlcycle.model.integrity-failed`."""
    from mlcycle.tasks import registry

    try:
        expected = registry.digests(tag)
    except Exception:  # no registry here (a built Bento): the lineage's record of the other files
        expected = None
    expected = expected if expected is not None else lineage.get("files")
    if not expected:
        log.warning("%s was saved before bundles recorded digests: its files cannot be checked", tag)
        return
    for name, digest in sorted(expected.items()):
        path = root / name
        found = sha256_file(path) if path.is_file() else None
        if found != digest:
            error = IntegrityError(tag, name, digest, found)
            log.error("%s", error)
            _emit_integrity_failed(tag, name, digest, found)
            raise error


def _emit_integrity_failed(tag: str, file: str, expected: str, found: str | None) -> None:
    try:
        from prefect.events import emit_event

        emit_event(event="mlcycle.model.integrity-failed",
                   resource={"prefect.resource.id": f"mlcycle.model.{tag.partition(':')[0]}"},
                   payload={"tag": tag, "file": file, "expected": expected, "found": found})  # fmt: skip
    except Exception:  # no Prefect API reachable: the log line and the error stand
        log.warning("could not emit mlcycle.model.integrity-failed for %s", tag)


def copy_schema_files(config: PipelineConfig, root: Path) -> None:
    """Keep a copy of each project schema file the config names inside the bundle: the model then serves, exports
    and explains with the schema it was trained with, from any folder, in a Bento or a container."""
    for ref in {config.schema_ref, config.features_schema_ref}:
        if is_file_ref(ref):
            source = Path(ref.rpartition(":")[0])
            (root / SCHEMA_DIR).mkdir(exist_ok=True)
            (root / SCHEMA_DIR / source.name).write_bytes(source.read_bytes())


def with_bundled_schema(config: PipelineConfig, root: Path) -> PipelineConfig:
    """The config with each project schema file it names read from the bundle's own copy (`copy_schema_files`),
    wherever the bundle is loaded: serving, export, reproduce and the Python API need no project folder."""
    update = {}
    for field in ("schema_ref", "features_schema_ref"):
        ref = getattr(config, field)
        if is_file_ref(ref):
            location, _, attr = ref.rpartition(":")
            bundled = root / SCHEMA_DIR / Path(location).name
            if bundled.is_file():
                update[field] = f"{bundled}:{attr}"
    return config.model_copy(update=update) if update else config


def load_bundle(tag: str) -> ModelBundle:
    """Load a bundle by tag (`adult:abc123`), or by name for its champion (the newest version before any)."""
    import bentoml

    from mlcycle.tasks import registry

    model = bentoml.models.get(registry.resolve(tag))
    root = Path(model.path)
    lineage = json.loads((root / "lineage.json").read_text())
    verify_bundle(str(model.tag), root, lineage)
    booster = xgb.Booster()
    booster.load_model(str(root / BOOSTER_FILE))
    parts = {name: json.loads((root / name).read_text()) for name in FILES}
    return ModelBundle(
        tag=str(model.tag),
        booster=booster,
        preprocessor=PreprocessorSpec.model_validate(parts["preprocessor.json"]),
        config=with_bundled_schema(PipelineConfig.model_validate(parts["config.json"]), root),
        classes=list(parts["lineage.json"].get("classes", [])),
        metrics=parts["metrics.json"],
        lineage=parts["lineage.json"],
        folder=root,
    )
