"""The Python API: the flows and the model store from a notebook, through the same code as the CLI and the service.

    import mlcycle

    project = mlcycle.init("loans.csv", target="default")   # configs/loans.yaml + schemas/loans.py, here
    result = mlcycle.train(project.config, tune={"time_budget_s": 60})
    model = mlcycle.load("loans")                            # the champion; or a full tag "loans:abc123"
    model.predict(frame)                                     # what POST /predict answers, as a DataFrame
    model.explain(frame)                                     # what POST /explain answers
    mlcycle.models("loans")                                  # the registry's versions of `loans`

Nothing here runs at import: each function sets up mlcycle's environment (`MLCYCLE_HOME`, default `./.mlcycle`,
and the BentoML store below it) when it is called, as the `mlcycle` command does.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    import pandera.pandas as pa

    from mlcycle.flows.training import TrainResult
    from mlcycle.schemas.api import RequestFields
    from mlcycle.schemas.config import PipelineConfig
    from mlcycle.tasks.registry.bundle import ModelBundle

__all__ = ["Model", "Project", "RecordError", "ValidationError", "demo_data", "init", "load", "models", "train"]


class ValidationError(ValueError):
    """Rows that the model's features schema refuses; `errors` names each one's row, field and rule."""

    def __init__(self, model: str, errors: list[RecordError], rows: int) -> None:
        self.errors = errors
        broken = len({e.row for e in errors})
        shown = "; ".join(str(e) for e in errors[:10]) + (f"; and {len(errors) - 10} more" if len(errors) > 10 else "")
        super().__init__(f"{broken} of {rows} row(s) do not fit the request schema of {model}: {shown}")


@dataclass(frozen=True)
class RecordError:
    """One broken field of one row: the row's index label, the field, the rule it breaks and the value."""

    row: Any
    field: str | None
    rule: str
    value: str | None = None

    def __str__(self) -> str:
        value = f" (value {self.value!r})" if self.value is not None else ""
        return f"row {self.row!r}, field {self.field!r}: {self.rule}{value}"


@dataclass(frozen=True)
class Project:
    """What `init` wrote: the config and schema files, and what it decided per column (`summary`)."""

    name: str
    config: Path
    schema: Path
    summary: list[str] = field(repr=False)

    def __str__(self) -> str:
        return "\n".join([*self.summary, f"wrote {self.schema} and {self.config}"])


def init(
    path: str | Path,
    target: str,
    *,
    name: str | None = None,
    task: str | None = None,
    positive: str | None = None,
    weight: str | None = None,
    time_column: str | None = None,
    test_from: str | None = None,
    valid_from: str | None = None,
    drop: str | list[str] | dict[str, str] | None = None,
    test: str | Path | None = None,
    sep: str = ",",
    names: list[str] | None = None,
    folder: str | Path = ".",
    force: bool = False,
) -> Project:
    """Draft a dataset from one raw file, as `mlcycle init` does: `configs/<name>.yaml` and `schemas/<name>.py` in
    `folder` (the project; default the current folder). `drop` leaves columns out (names, or a mapping of name to
    reason), `test` is an official test file (every row of it the test set); `test_from` / `valid_from` cut a time
    split at a moment (`"2021-11-01"`, or a number for a numeric time column). Raises
    `mlcycle.tasks.ingest.draft.DraftError` naming the problem for a bad file or option."""
    _setup()
    from mlcycle.schemas.config import CsvOptions
    from mlcycle.tasks.ingest.draft import draft_dataset, parse_drop, summary_lines, write_project

    csv = CsvOptions(header=names is None, names=names, sep=sep)
    draft = draft_dataset(Path(path), target, name=name, task=task, positive=positive, csv=csv, weight=weight,
                          time_column=time_column, test_from=test_from, valid_from=valid_from,
                          drop=parse_drop([drop] if isinstance(drop, str) else drop),
                          test=None if test is None else Path(test))  # fmt: skip
    files = write_project(draft, Path(folder), force=force)
    return Project(name=draft.name, config=files.config, schema=files.schema, summary=summary_lines(draft))


def train(config: str | Path | PipelineConfig, *, cache: bool = True, **overrides: Any) -> TrainResult:
    """Run the training flow (ingest, validate, split, tune, evaluate, package, gate) and return its result: the
    model's `tag`, its `test` metrics beside the `baseline`'s, the gate's `decision` and `gate_reasons`, the
    `report` path, and the steps `reused` from earlier runs.

    `config` is a config file, a built-in demo's name (`"adult"`) or a loaded `PipelineConfig`; `overrides` change
    its fields, nested (`tune={"time_budget_s": 60}`) or dotted (`**{"tune.time_budget_s": 60}`), as `--set` does.
    A step whose inputs did not change is reused (the same config on the same data is the same model);
    `cache=False` computes every step again.
    """
    _setup()
    from mlcycle.flows.training import train_flow

    return train_flow(_config(config, overrides), cache=cache)


def load(ref: str) -> Model:
    """A registered model: a full tag (`adult:abc123`) or a name, which means its champion."""
    _setup()
    from mlcycle.tasks import registry
    from mlcycle.tasks.registry.bundle import load_bundle

    tag = ref if ":" in ref else registry.serving_tag(ref)
    return Model(load_bundle(tag))


def models(name: str | None = None) -> pd.DataFrame:
    """The registry's versions (of `name`, or of every model), newest first: tag, status, primary metric and value,
    data snapshot, and whether each is its name's champion."""
    _setup()
    import pandas as pd

    from mlcycle.tasks import registry

    rows = [vars(v) for v in registry.versions(name)]
    champions = {n: registry.champion(n) for n in {r["name"] for r in rows}}
    frame = pd.DataFrame(rows, columns=["tag", "name", "created", "status", "primary_metric", "metric", "data_hash"])
    return frame.assign(champion=[champions[n] == t for n, t in zip(frame["name"], frame["tag"], strict=True)])


class Model:
    """A trained model with its schema, preprocessing, metrics and lineage. `predict` and `explain` validate, encode
    and call the booster exactly as the service's /predict and /explain do: the same inputs give the same bits."""

    def __init__(self, bundle: ModelBundle) -> None:
        self.bundle = bundle

    def __repr__(self) -> str:
        primary = self.metrics.get("primary")
        score = f", test {primary} {self.metrics['test'][primary]:.4f}" if primary else ""
        return f"<mlcycle.Model {self.tag} ({self.task}{score})>"

    @property
    def tag(self) -> str:
        return self.bundle.tag

    @property
    def name(self) -> str:
        return self.bundle.config.name

    @property
    def task(self) -> str:
        return self.bundle.config.task

    @property
    def classes(self) -> list[str]:
        return self.bundle.classes

    @property
    def metrics(self) -> dict[str, Any]:
        return self.bundle.metrics

    @property
    def lineage(self) -> dict[str, Any]:
        return self.bundle.lineage

    @property
    def config(self) -> PipelineConfig:
        return self.bundle.config

    @property
    def schema(self) -> type[pa.DataFrameModel]:
        """The pandera model a request is held to: the features schema the model was trained with."""
        return self.bundle.features_schema

    @property
    def fields(self) -> list[str]:
        """The request fields: the features schema's columns (others in the frame are ignored). A column the model
        does not read (one its config drops) may be absent; a code column may hold its numbers (95 is "95")."""
        return list(self.schema.to_schema().columns)

    @functools.cached_property
    def request_fields(self) -> RequestFields:
        """Which fields are codes and which the model ignores, as the service reads them."""
        from mlcycle.tasks.records import request_fields

        return request_fields(self.schema, self.bundle.preprocessor, self.config.preprocess.categorical)

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        """What the service answers per row, indexed like `frame`: `probability` (of the positive class) and `label`
        (binary); `label` and `probability_<class>` per class (multiclass); `value` (regression). Raises
        `ValidationError` naming every broken row, field and rule."""
        import pandas as pd

        from mlcycle.tasks.registry.bundle import predict_features

        features, index = self._encoded(frame)
        raw = predict_features(self.bundle.booster, features)
        if self.task == "binary":
            negative, positive = self.classes
            labels = pd.Series(positive, index=index).where(raw >= 0.5, negative)
            return pd.DataFrame({"probability": raw, "label": labels}, index=index)
        if self.task == "multiclass":
            labels = [self.classes[i] for i in raw.argmax(axis=1).tolist()]
            probabilities = {f"probability_{c}": raw[:, i] for i, c in enumerate(self.classes)}
            return pd.DataFrame({"label": labels, **probabilities}, index=index)
        return pd.DataFrame({"value": raw}, index=index)

    def explain(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Per row, each request field's SHAP contribution (derived features count to their source field), `bias`
        and `margin` (their sum): log-odds for binary, target units for regression, the predicted class's softmax
        margin for multiclass, as POST /explain answers."""
        import numpy as np
        import pandas as pd

        from mlcycle.tasks.registry.bundle import contributions, predict_features

        features, index = self._encoded(frame)
        contribs, bias = contributions(self.bundle.booster, features, predict_features(self.bundle.booster, features))
        derived = {d.name: d.source for d in self.bundle.preprocessor.derived}
        by_field = {name: np.zeros(len(index)) for name in self.fields}
        for j, feature in enumerate(self.bundle.preprocessor.feature_names):
            by_field[derived.get(feature, feature)] += contribs[:, j]
        return pd.DataFrame({**by_field, "bias": bias, "margin": bias + contribs.sum(axis=1)}, index=index)

    def _encoded(self, frame: pd.DataFrame) -> tuple[Any, pd.Index]:
        """The frame's request fields, validated by the features schema and encoded as the service encodes them."""
        import pandas as pd

        from mlcycle.tasks.preprocess import encode_frame
        from mlcycle.tasks.records import validate_request_frame

        if not isinstance(frame, pd.DataFrame):
            raise TypeError(f"predict takes a pandas DataFrame, got {type(frame).__name__}")
        read = [f for f in self.fields if f not in self.request_fields.ignored]
        missing = [f for f in read if f not in frame.columns]
        if missing:
            raise ValidationError(self.tag, [RecordError(None, f, "missing column") for f in missing], len(frame))
        if frame.empty:
            raise ValidationError(self.tag, [RecordError(None, None, "the frame has no rows")], 0)
        positions = frame[read].reset_index(drop=True)
        validated = validate_request_frame(positions, self.schema, self.request_fields, what=f"{self.tag} request")
        if not validated.quarantine.empty:
            ledger = validated.quarantine.sort_values(["row", "column"], kind="stable")
            errors = [RecordError(frame.index[int(r.row)], r.column, r.check, r.value) for r in ledger.itertuples()]
            raise ValidationError(self.tag, errors, len(frame))
        features, _unseen = encode_frame(self.bundle.preprocessor, validated.valid)
        return features, frame.index


def demo_data(name: str) -> pd.DataFrame:
    """The raw rows of a built-in demo (`adult`, `bike`, `penguins`) as its config reads them, every split part
    together: data to try `init` on (`demo_data("penguins").to_csv("penguins.csv", index=False)`)."""
    _setup()
    from mlcycle.schemas import load_config
    from mlcycle.schemas.config import demo_config, demo_names
    from mlcycle.tasks.ingest.read import read_source
    from mlcycle.tasks.paths import mlcycle_home

    if demo_config(Path(name)) is None:
        raise ValueError(f"{name!r} is not a built-in demo; the demos are {', '.join(demo_names())}")
    config = load_config(demo_config(Path(name)))  # type: ignore[arg-type]
    return read_source(config.source, mlcycle_home() / "cache" / "wheels", config.seed).frame


def _setup() -> None:
    from mlcycle.tasks.paths import configure_environment

    configure_environment()


def _config(config: str | Path | PipelineConfig, overrides: Mapping[str, Any]) -> PipelineConfig:
    from mlcycle.schemas import load_config
    from mlcycle.schemas.config import PipelineConfig

    dotted = dict(_dotted(overrides))
    if isinstance(config, PipelineConfig):
        raw = config.model_dump()
        for key, value in dotted.items():
            *parents, leaf = key.split(".")
            node = raw
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        return PipelineConfig.model_validate(raw)
    return load_config(config, dotted)


def _dotted(values: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """`{"tune": {"time_budget_s": 60}}` → `[("tune.time_budget_s", 60)]`; a dotted key stays as it is."""
    out: list[tuple[str, Any]] = []
    for key, value in values.items():
        if isinstance(value, Mapping) and value:
            out += _dotted(value, f"{prefix}{key}.")
        else:
            out.append((f"{prefix}{key}", value))
    return out
