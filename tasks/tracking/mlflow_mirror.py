"""Pushing one queued record to an MLflow server (the only module that imports mlflow).

A run record becomes a parent run (config as params, data and schema hashes, code version, test metrics next to
the reference models, the report and the bundle's files as artifacts, the Prefect flow-run link), one child run per
trial (its hyperparameters, its learning curve as step metrics), and a model version of the booster tagged with
the bundle's tag. Every record ends by bringing the `champion` alias and the versions' `mlcycle.status` tags in
line with mlcycle's registry. Replays find what is already there by mlcycle's keys: a complete run is reused, a
run a push left half-written is deleted and written again, a version is never created twice.
"""

from __future__ import annotations

import contextlib
import math
import re
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, ViewType
from mlflow.exceptions import MlflowException

from mlcycle.schemas.config import PipelineConfig
from mlcycle.tasks import registry
from mlcycle.tasks.processes import environment
from mlcycle.tasks.registry.bundle import ModelBundle, load_bundle

ALIAS = "champion"
KEY_TAG = "mlcycle.run_key"  # the flow run's id: how a replay finds the run it already wrote
COMPLETE_TAG = "mlcycle.mirror_complete"
MODEL_ID_TAG = "mlcycle.model_id"
BUNDLE_TAG = "mlcycle.tag"
STATUS_TAG = "mlcycle.status"
BUNDLE_FILES = ("metrics.json", "lineage.json", "config.json", "preprocessor.json", "gate.json")
# The server's error codes that retrying cannot help: the record is set aside with the reason.
_REFUSED = {"INVALID_PARAMETER_VALUE", "BAD_REQUEST", "INVALID_STATE", "RESOURCE_DOES_NOT_EXIST"}
_KEY_CHARS = re.compile(r"[^\w\-. :]")
_NAME = re.compile(r"[A-Za-z_][\w\-]*")


class OutOfTime(Exception):
    """The flow's time for mirroring is spent; the rest stays queued."""


class Mirror:
    """One MLflow server, as mlcycle writes to it."""

    def __init__(self, uri: str, timeout_s: float | None) -> None:
        self.uri, self.timeout_s = uri, timeout_s
        self.client = MlflowClient(tracking_uri=uri, registry_uri=uri)

    def push(self, record: dict[str, Any], deadline: float) -> str | None:
        """Send one record: None when it went, why not when the server is out of reach or busy (the record stays
        queued); raises when the server refused it or the evidence it names is gone."""
        # mlflow's own warnings (type hints it cannot validate, deprecations) are about mlflow, not the record:
        # where warnings are errors (the test suite) they must not set a record aside
        with self._limits(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                if record["kind"] == "run":
                    self._push_run(record, deadline)
                self.sync_champion(record["name"])
            except OutOfTime as exc:
                return str(exc)
            except Exception as exc:
                if _transient(exc):
                    return str(exc).splitlines()[0][:300]
                raise
        return None

    @contextlib.contextmanager
    def _limits(self) -> Iterator[None]:
        """A flow waits `timeout_s` for an answer and never for MLflow's retries (seven, backing off, by default)."""
        if self.timeout_s is None:
            yield
            return
        limits = {"MLFLOW_HTTP_REQUEST_TIMEOUT": str(max(1, math.ceil(self.timeout_s))),
                  "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}  # fmt: skip
        with environment(limits):
            yield

    def _push_run(self, record: dict[str, Any], deadline: float) -> None:
        bundle = load_bundle(record["tag"])  # the evidence: what MLflow gets is what mlcycle recorded
        experiment_id = self._experiment(record["experiment"])
        found = self._find_run(experiment_id, record["key"])
        if found is not None and found.data.tags.get(COMPLETE_TAG) == "true":
            run_id, model_id = found.info.run_id, found.data.tags[MODEL_ID_TAG]
        else:
            if found is not None:  # a push that stopped half-way: start that run again
                self._delete_run_tree(experiment_id, found.info.run_id)
            run_id, model_id = self._write_run(experiment_id, record, bundle, deadline)
        self._register_version(record["name"], bundle, run_id, model_id)

    def _experiment(self, name: str) -> str:
        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            return str(experiment.experiment_id)
        try:
            return str(self.client.create_experiment(name, tags={"mlcycle": "mirror"}))
        except MlflowException as exc:  # another pusher created it first
            experiment = self.client.get_experiment_by_name(name)
            if experiment is None:
                raise exc from None
            return str(experiment.experiment_id)

    def _find_run(self, experiment_id: str, key: str) -> Any:
        runs = self.client.search_runs([experiment_id], f"tags.`{KEY_TAG}` = '{key}'", ViewType.ACTIVE_ONLY)
        return runs[0] if runs else None

    def _delete_run_tree(self, experiment_id: str, run_id: str) -> None:
        children = self.client.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{run_id}'")
        for child in children:
            self.client.delete_run(child.info.run_id)
        self.client.delete_run(run_id)

    def _write_run(self, experiment_id: str, record: dict[str, Any], bundle: ModelBundle,
                   deadline: float) -> tuple[str, str]:  # fmt: skip
        lineage, flow_run = bundle.lineage, record["flow_run"]
        tags = {
            KEY_TAG: record["key"],
            BUNDLE_TAG: bundle.tag,
            "mlcycle.flow": record["flow"],
            "mlcycle.decision": record["decision"],
            "mlflow.source.name": f"mlcycle {record['flow']}",
            "mlflow.source.git.commit": lineage.get("code_version") or "",
            "mlflow.note.content": _note(record, bundle),
            **{f"prefect.flow_run_{k}": v for k, v in flow_run.items() if v},
        }
        run = self.client.create_run(experiment_id, start_time=record["started_ms"], tags=tags,
                                     run_name=f"{record['flow']} {bundle.tag}")  # fmt: skip
        run_id = run.info.run_id
        params = {**flatten(bundle.config.model_dump(mode="json")), **lineage_params(lineage)}
        self._log(run_id, metrics=run_metrics(bundle.metrics, record["ended_ms"]), params=params)
        trials = _read_trials(record["report"])
        space = list(bundle.config.tune.space)
        metric = f"valid_{bundle.metrics.get('tuning_metric') or _stopping_metric(bundle)}"
        for trial in trials.get("trials", []):
            if time.monotonic() > deadline:
                raise OutOfTime("the flow's time for mirroring ran out")
            self._write_trial(experiment_id, run_id, trial, trials.get("curves", {}).get(trial["trial_id"], []),
                              space, metric, record["started_ms"])  # fmt: skip
        if record["report"] and Path(record["report"]).is_dir():
            self.client.log_artifacts(run_id, record["report"], "report")
        folder = _bundle_folder(bundle.tag)
        with tempfile.TemporaryDirectory() as staging:
            for name in BUNDLE_FILES:
                if (folder / name).exists():
                    (Path(staging) / name).write_bytes((folder / name).read_bytes())
            self.client.log_artifacts(run_id, staging, "bundle")
        if time.monotonic() > deadline:
            raise OutOfTime("the flow's time for mirroring ran out")
        model_id = self._log_model(experiment_id, run_id, bundle, folder)
        self.client.set_tag(run_id, MODEL_ID_TAG, model_id)
        self.client.set_tag(run_id, COMPLETE_TAG, "true")
        self.client.set_terminated(run_id, "FINISHED", end_time=record["ended_ms"])
        return run_id, model_id

    def _write_trial(self, experiment_id: str, parent_id: str, trial: dict[str, Any], curve: list[dict[str, float]],
                     space: list[str], metric: str, started_ms: int) -> None:  # fmt: skip
        # the trial's own times: its last report, less the seconds it ran
        ended_ms = int(curve[-1]["timestamp"] * 1000) if curve else int(time.time() * 1000)
        seconds: Any = trial.get("seconds")
        began_ms = ended_ms - int(float(seconds) * 1000) if curve and _number(seconds) else started_ms
        child = self.client.create_run(
            experiment_id, start_time=began_ms, run_name=str(trial["trial_id"]),
            tags={"mlflow.parentRunId": parent_id, "mlcycle.trial_id": str(trial["trial_id"]),
                  "mlcycle.trial_status": str(trial.get("status"))},
        )  # fmt: skip
        # a trial reports its best round, so the reports after its best repeat that round: one point per round
        firsts = {int(p["rounds"]): p for p in reversed(curve)}
        points = [Metric(metric, float(p["valid_score"]), int(p["timestamp"] * 1000), rounds)
                  for rounds, p in sorted(firsts.items())]  # fmt: skip
        final: dict[str, Any] = {f"best_{metric}": trial.get("valid_score"), "rounds": trial.get("rounds"),
                 "boosted": trial.get("boosted"), "seconds": trial.get("seconds")}  # fmt: skip
        points += [Metric(k, float(v), ended_ms, 0) for k, v in final.items() if _number(v)]
        self._log(child.info.run_id, metrics=points, params={k: trial[k] for k in space if k in trial})
        status = "FAILED" if trial.get("status") == "error" else "FINISHED"
        self.client.set_terminated(child.info.run_id, status, end_time=ended_ms)

    def _log(self, run_id: str, metrics: list[Metric], params: dict[str, Any]) -> None:
        """In batches of MLflow's limits: 1,000 metrics, 100 params a request."""
        items = [Param(k[:250], _param_text(v)) for k, v in params.items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[start : start + 100])
        for start in range(0, len(metrics), 1000):
            self.client.log_batch(run_id, metrics=metrics[start : start + 1000])

    def _log_model(self, experiment_id: str, run_id: str, bundle: ModelBundle, folder: Path) -> str:
        """The booster as an MLflow XGBoost model of the run, with the bundle's preprocessing beside it."""
        import mlflow.xgboost
        import xgboost as xgb
        from mlflow.tracking._tracking_service.utils import _use_tracking_uri

        logged = self.client.create_logged_model(experiment_id, name="model", source_run_id=run_id,
                                                 tags={BUNDLE_TAG: bundle.tag}, model_type="xgboost")  # fmt: skip
        extra = [str(folder / name) for name in ("preprocessor.json", "config.json") if (folder / name).exists()]
        # the flavour's log_model reads the process's URI: this one, for the call, then whatever it was (unset too)
        with _use_tracking_uri(self.uri):
            mlflow.xgboost.log_model(
                bundle.booster, name="model", model_id=logged.model_id, run_id=run_id,
                signature=signature(bundle.config), pip_requirements=[f"xgboost=={xgb.__version__}"], extra_files=extra,
                metadata={"mlcycle_tag": bundle.tag, "inputs": "records of the features schema; the booster takes "
                          "them after extra_files/preprocessor.json (mlcycle's tasks.preprocess.apply_preprocessor)"},
            )  # fmt: skip
        return str(logged.model_id)

    def _versions(self, name: str) -> dict[str, Any]:
        """The mirrored versions of a model name, by bundle tag."""
        found = self.client.search_model_versions(f"name = '{name}'")
        return {str(v.tags[BUNDLE_TAG]): v for v in found if v.tags.get(BUNDLE_TAG)}

    def _register_version(self, name: str, bundle: ModelBundle, run_id: str, model_id: str) -> None:
        if bundle.tag in self._versions(name):
            return
        try:
            self.client.create_registered_model(name, tags={"mlcycle": "mirror"},
                                                description=f"Mirrored from mlcycle's registry: model {name}")  # fmt: skip
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        self.client.create_model_version(
            name, source=f"models:/{model_id}", run_id=run_id, model_id=model_id,
            tags={BUNDLE_TAG: bundle.tag, STATUS_TAG: registry.version(bundle.tag).status},
            description=f"mlcycle bundle {bundle.tag}",
        )  # fmt: skip

    def sync_champion(self, name: str) -> None:
        """Point the `champion` alias where mlcycle's registry does, and mirror each version's status."""
        versions = self._versions(name)
        if not versions:
            return
        champion = registry.champion(name)
        aliases = self.client.get_registered_model(name).aliases
        target = versions.get(champion) if champion else None
        if target is not None and aliases.get(ALIAS) != target.version:
            self.client.set_registered_model_alias(name, ALIAS, target.version)
        elif target is None and ALIAS in aliases:
            # the champion was saved before the mirror was on: no mirrored version may claim to be it
            self.client.delete_registered_model_alias(name, ALIAS)
        for tag, version in versions.items():
            try:
                status = registry.version(tag).status
            except registry.RegistryError:
                continue
            if version.tags.get(STATUS_TAG) != status:
                self.client.set_model_version_tag(name, version.version, STATUS_TAG, status)


def signature(config: PipelineConfig) -> Any:
    """The model's inputs as the features schema defines a request record, and its output."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    from mlcycle.schemas import resolve_schema

    columns = resolve_schema(config.features_schema_ref).to_schema().columns
    inputs: list[Any] = [
        ColSpec(_mlflow_type(str(c.dtype)), name, required=not c.nullable) for name, c in columns.items()
    ]
    output = "probability" if config.task == "binary" else "value"
    return ModelSignature(inputs=Schema(inputs), outputs=Schema([ColSpec("double", output)]))


def _mlflow_type(dtype: str) -> str:
    dtype = dtype.lower()
    if dtype.startswith(("int", "uint")):
        return "long"
    if dtype.startswith("float"):
        return "double"
    if dtype.startswith("bool"):
        return "boolean"
    if dtype.startswith("datetime"):
        return "datetime"
    return "string"


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config as dotted keys (`tune.num_samples`); lists, and maps keyed by data values (`source.replace`)
    stay whole, as JSON."""
    if isinstance(value, dict) and value and all(_NAME.fullmatch(str(key)) for key in value):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: value}


def lineage_params(lineage: dict[str, Any]) -> dict[str, Any]:
    """What the model was made from, as params beside the config: data, schema, code, and the search's winner."""
    keys = ("data_hash", "schema_hash", "config_hash", "code_version", "parent_tag", "refresh_data_hash",
            "best_trial_id", "best_rounds", "final_model")  # fmt: skip
    params = {f"lineage.{k}": lineage[k] for k in keys if lineage.get(k) is not None}
    params.update({f"best.{k}": v for k, v in (lineage.get("best_config") or {}).items()})
    return params


def run_metrics(metrics: dict[str, Any], at_ms: int) -> list[Metric]:
    """The bundle's test metrics as `test/<metric>`, each reference model's as `<reference>/<metric>`, the parent's
    for a refresh as `parent/<metric>`, each slice's primary metric, and the test rows."""
    groups: dict[str, dict[str, Any]] = {"test": metrics["test"], **metrics.get("references", {})}
    if "parent_on_same_test" in metrics:
        groups["parent"] = metrics["parent_on_same_test"]
    values = {f"{group}/{name}": value for group, scores in groups.items() for name, value in scores.items()}
    primary = metrics["primary"]
    for column, rows in (metrics.get("slices") or {}).items():
        values.update({f"slices/{_part(column)}/{_part(row['value'])}/{primary}": row.get(primary) for row in rows})
    values["rows/test"] = metrics.get("rows")
    return [Metric(k, float(v), at_ms, 0) for k, v in values.items() if _number(v)]


def _part(value: Any) -> str:
    """A data value as one part of a metric name (MLflow allows letters, digits and `_-. :` in it)."""
    text = _KEY_CHARS.sub("_", str(value))
    return "_" if text.strip(".") == "" else text


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _param_text(value: Any) -> str:
    import json

    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:6000]  # MLflow's limit for a param value


def _note(record: dict[str, Any], bundle: ModelBundle) -> str:
    """The run's description in MLflow's UI: where it came from and what the gate decided."""
    link = record["flow_run"].get("url")
    lines = [f"mlcycle `{record['flow']}` run of **{record['name']}**, saved as bundle `{bundle.tag}`.",
             f"Prefect flow run: {link}" if link else "", "",
             f"Gate: **{record['decision'] or 'none'}**", *[f"- {r}" for r in record["reasons"]]]  # fmt: skip
    return "\n".join(lines)


def _read_trials(report: str | None) -> dict[str, Any]:
    import json

    path = Path(report) / "trials.json" if report else None
    return json.loads(path.read_text()) if path is not None and path.exists() else {}


def _stopping_metric(bundle: ModelBundle) -> str:
    from mlcycle.tasks.train.boost import STOPPING_METRIC

    return STOPPING_METRIC[bundle.config.task]


def _bundle_folder(tag: str) -> Path:
    import bentoml

    return Path(bentoml.models.get(tag).path)


def _transient(exc: BaseException) -> bool:
    """Is this the server being out of reach or busy (retry later), rather than refusing the record?"""
    import requests

    seen: BaseException | None = exc
    for _ in range(10):  # the chain of causes, not forever
        if seen is None:
            break
        if isinstance(seen, requests.exceptions.ConnectionError | requests.exceptions.Timeout
                      | requests.exceptions.RetryError | ConnectionError | TimeoutError):  # fmt: skip
            return True
        seen = seen.__cause__ or seen.__context__
    return isinstance(exc, MlflowException) and exc.error_code not in _REFUSED
