"""Reproduce a registered model: rebuild its splits from the recorded snapshot, refit the preprocessing and the final
model from its recorded config, search result and seed, and compare predictions on the test split.

The search itself is not re-run: the recorded best configuration and rounds are what the final fit used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xgboost as xgb

from mlcycle.tasks.errors import UserError
from mlcycle.tasks.ingest.store import DatasetStore, StoreError, read_curated
from mlcycle.tasks.ingest.validate import validate_frame
from mlcycle.tasks.preprocess import PreprocessorSpec, apply_preprocessor, fit_preprocessor
from mlcycle.tasks.registry.bundle import ModelBundle, load_bundle, predict_raw
from mlcycle.tasks.train.boost import TrainingData
from mlcycle.tasks.train.final import fit_final_model
from mlcycle.tasks.train.prepare import Splits, encode_target, feature_columns, sample_weights, split_frame


class ReproduceError(UserError, RuntimeError):
    """A model that cannot be rebuilt: its snapshot is gone, or its lineage lacks what the refit needs."""


@dataclass(frozen=True)
class Rebuilt:
    """A model refitted from a bundle's lineage, with the splits it was made from."""

    splits: Splits
    preprocessor: PreprocessorSpec
    booster: xgb.Booster
    data: TrainingData


@dataclass(frozen=True)
class Reproduction:
    tag: str
    rows: int
    max_abs_diff: float
    same_preprocessor: bool
    same_rounds: bool
    data_hash: str
    tolerance: float

    @property
    def matches(self) -> bool:
        return self.same_preprocessor and self.max_abs_diff <= self.tolerance


def rebuild_splits(bundle: ModelBundle) -> Splits:
    """The train / valid / test rows of the bundle's run, from its snapshot in the curated store."""
    config, lineage = bundle.config, bundle.lineage
    if lineage.get("mode") == "refresh":
        raise ReproduceError(f"{bundle.tag} is an incremental refresh of {lineage.get('parent_tag')}; "
                             "reproduce its parent (refreshes are not refitted from one snapshot)")  # fmt: skip
    data_hash = lineage.get("data_hash")
    if not data_hash:
        raise ReproduceError(f"{bundle.tag}: its lineage records no data snapshot")
    try:
        raw = read_curated(DatasetStore.for_dataset(config.name), data_hash, config.source.sample_rows, config.seed)
    except (StoreError, FileNotFoundError, KeyError) as exc:
        raise ReproduceError(f"{bundle.tag}: snapshot {data_hash} cannot be read: {exc}") from exc
    validated = validate_frame(raw.frame, bundle.training_schema, what=config.name)
    return split_frame(validated.valid, raw.origin["part"], config)


def rebuild_data(bundle: ModelBundle) -> tuple[Splits, PreprocessorSpec, TrainingData]:
    """The bundle's splits, its preprocessing fitted again on the training rows, and the model-ready data."""
    config = bundle.config
    splits = rebuild_splits(bundle)
    preprocessor = fit_preprocessor(
        splits.train, feature_columns(list(splits.train.columns), config), config.preprocess
    )
    data = TrainingData(
        x_train=apply_preprocessor(preprocessor, splits.train),
        y_train=encode_target(splits.train[config.target], config, bundle.classes),
        x_valid=apply_preprocessor(preprocessor, splits.valid),
        y_valid=encode_target(splits.valid[config.target], config, bundle.classes),
        w_train=sample_weights(splits.train, config),
        w_valid=sample_weights(splits.valid, config),
        num_class=len(bundle.classes) if config.task == "multiclass" else 0,
    )
    return splits, preprocessor, data


def refit(bundle: ModelBundle) -> Rebuilt:
    """Fit the bundle's model again, as the training flow did, from its snapshot, config and recorded search."""
    lineage = bundle.lineage
    if "best_config" not in lineage or "best_rounds" not in lineage:
        raise ReproduceError(f"{bundle.tag}: its lineage records no best_config / best_rounds")
    splits, preprocessor, data = rebuild_data(bundle)
    booster = fit_final_model(data, lineage["best_config"], lineage["best_rounds"], bundle.config,
                              int(lineage.get("best_boosted", 0)))  # fmt: skip
    return Rebuilt(splits, preprocessor, booster, data)


def reproduce(tag: str, tolerance: float = 1e-6) -> Reproduction:
    """Refit `tag` from its recorded snapshot, config and seed; compare test-set predictions with the registered model."""
    bundle = load_bundle(tag)
    rebuilt = refit(bundle)
    test = rebuilt.splits.test
    registered = bundle.predict_raw(test)
    again = predict_raw(rebuilt.booster, rebuilt.preprocessor, test)
    return Reproduction(
        tag=bundle.tag,
        rows=len(test),
        max_abs_diff=float(np.max(np.abs(registered - again))) if len(test) else 0.0,
        same_preprocessor=rebuilt.preprocessor == bundle.preprocessor,
        same_rounds=rebuilt.booster.num_boosted_rounds() == bundle.booster.num_boosted_rounds(),
        data_hash=bundle.lineage["data_hash"],
        tolerance=tolerance,
    )
