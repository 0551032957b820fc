"""Sample weights from a declared column: checked (present, non-negative, a training-only column), never a feature,
used by every fit and every metric; on tiny data made here where weighting visibly changes the model."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pytest
import xgboost as xgb
from pandera.typing import Series
from sklearn import metrics as skm

from mlcycle.schemas.config import PipelineConfig
from mlcycle.tasks.registry.gate import check_slices, paired_bootstrap
from mlcycle.tasks.train.boost import TrainingData, fit_booster, fit_rounds, refresh_booster, xgb_params
from mlcycle.tasks.train.evaluate import score, slice_metrics
from mlcycle.tasks.train.final import fit_final_model
from mlcycle.tasks.train.prepare import TargetError, check_weight_column, feature_columns, sample_weights

_names = itertools.count()


class SurveyFeatures(pa.DataFrameModel):
    x: Series[float]
    group: Series[str]


class SurveySchema(SurveyFeatures):
    survey_weight: Series[float] = pa.Field(ge=0)
    label: Series[str] = pa.Field(isin=["no", "yes"])


class WeightAsFeature(SurveySchema):
    """A features schema that (wrongly) asks the service for the weight."""


def config(**changes: Any) -> PipelineConfig:
    base = {"name": f"w{next(_names)}", "schema_ref": "tests.test_weights:SurveySchema",
            "features_schema_ref": "tests.test_weights:SurveyFeatures", "target": "label", "task": "binary",
            "positive_label": "yes", "weight": "survey_weight",
            "source": {"kind": "files", "files": [{"path": "unused.csv"}]}}  # fmt: skip
    return PipelineConfig.model_validate({**base, **changes})


def survey(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Every x appears twice with opposite labels: 'yes' weighs 9 where x > 0 and 1 where x < 0, so unweighted the
    label is a coin toss everywhere and weighted it is 90 % 'yes' for x > 0 and 10 % for x < 0."""
    rng = np.random.default_rng(seed)
    x = np.repeat(rng.uniform(-1, 1, n), 2)
    y = np.tile([1.0, 0.0], n)
    heavy = (x > 0) == (y == 1)
    frame = pd.DataFrame({"x": x})
    return frame, y, np.where(heavy, 9.0, 1.0)


def test_the_weight_is_never_a_feature_and_must_be_a_training_only_column() -> None:
    cfg = config()
    assert feature_columns(["x", "group", "survey_weight", "label"], cfg) == ["x", "group"]
    check_weight_column(cfg)
    with pytest.raises(TargetError, match="in the features schema"):
        check_weight_column(config(features_schema_ref="tests.test_weights:WeightAsFeature"))
    with pytest.raises(TargetError, match="not a column of the training schema"):
        check_weight_column(config(weight="w2"))
    with pytest.raises(ValueError, match="also the target or an id"):
        config(weight="label")


@pytest.mark.parametrize(
    ("values", "message"),
    [([1.0, None, 2.0], "missing, negative or infinite"), ([1.0, -0.5, 2.0], "missing, negative or infinite"),
     ([0.0, 0.0, 0.0], "every weight is zero"), (["a", "b", "c"], "must be numbers")],
)  # fmt: skip
def test_weights_that_cannot_be_used_stop_the_run_naming_the_column(values: list[Any], message: str) -> None:
    frame = pd.DataFrame({"survey_weight": values})
    with pytest.raises(TargetError, match=f"survey_weight.*{message}"):
        sample_weights(frame, config())


def test_weights_are_read_as_numbers_and_absent_without_a_weight_column() -> None:
    frame = pd.DataFrame({"survey_weight": [1, 0, 2.5]})
    assert sample_weights(frame, config()).tolist() == [1.0, 0.0, 2.5]
    assert sample_weights(frame, config(weight=None)) is None


def test_weighted_training_learns_what_the_weights_say_in_every_fit_path() -> None:
    frame, y, w = survey(300, seed=0)
    valid, yv, wv = survey(100, seed=1)
    params = xgb_params("binary", {"eta": 0.3, "max_depth": 2}, nthread=1, seed=0)
    probe = pd.DataFrame({"x": [0.5, -0.5]})
    fits = {
        "plain": fit_rounds(frame, y, params, 40),
        "fixed rounds": fit_rounds(frame, y, params, 40, w),
        "early stopping": fit_booster(TrainingData(frame, y, valid, yv, w, wv), params, 200, 20),
    }
    predict = {name: b.predict(xgb.DMatrix(probe)) for name, b in fits.items()}
    assert predict["plain"] == pytest.approx([0.5, 0.5], abs=0.05)  # a coin toss unweighted
    for name in ("fixed rounds", "early stopping"):
        assert predict[name] == pytest.approx([0.9, 0.1], abs=0.05), name
    # refresh (training continuation) adds weighted rounds to an unweighted model
    grown = refresh_booster(fits["plain"], TrainingData(frame, y, valid, yv, w, wv), params, 100, 20)
    assert grown.predict(xgb.DMatrix(probe))[0] > 0.8
    # the final fit on train + validation keeps the weights of both
    cfg = config(tune={"final_fit": "train_valid"})
    final = fit_final_model(TrainingData(frame, y, valid, yv, w, wv), {"eta": 0.3, "max_depth": 2}, 40, cfg)
    assert final.predict(xgb.DMatrix(probe)) == pytest.approx([0.9, 0.1], abs=0.05)


def test_every_metric_and_slice_is_weighted_as_scikit_learn_weights_it() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 400).astype(float)
    pred = np.clip(0.3 * y + rng.uniform(0, 0.7, 400), 0, 1)
    w = rng.uniform(0, 5, 400)
    metrics = score("binary", y, pred, w)
    assert metrics["roc_auc"] == pytest.approx(skm.roc_auc_score(y, pred, sample_weight=w))
    assert metrics["brier"] == pytest.approx(skm.brier_score_loss(y, pred, sample_weight=w))
    assert metrics["roc_auc"] != pytest.approx(score("binary", y, pred)["roc_auc"], abs=1e-4)
    regression = score("regression", y * 10, pred * 10, w)
    assert regression["rmse"] == pytest.approx(np.sqrt(np.average((y * 10 - pred * 10) ** 2, weights=w)))
    groups = pd.DataFrame({"g": np.where(np.arange(400) % 2, "a", "b")})
    rows = {r["value"]: r for r in slice_metrics("binary", y, pred, groups, w)["g"]}
    mask = groups["g"].to_numpy() == "a"
    assert rows["a"]["roc_auc"] == pytest.approx(skm.roc_auc_score(y[mask], pred[mask], sample_weight=w[mask]))


@pytest.mark.parametrize("metric", ["roc_auc", "rmse", "log_loss", "brier"])
def test_the_gates_bootstrap_counts_each_row_by_its_weight(metric: str) -> None:
    """Rows of weight 0 are invisible to a weighted bootstrap: the interval equals that of the other rows alone,
    resampled the same way (the vectorised metrics and the row-by-row one alike)."""
    rng = np.random.default_rng(4)
    n = 300
    y = rng.integers(0, 2, n).astype(float)
    good, bad = np.clip(0.5 * y + rng.uniform(0, 0.5, n), 0, 1), rng.uniform(0, 1, n)
    w = np.where(np.arange(n) % 3 == 0, 0.0, 1.0)
    # where the weight is 0 the models swap: unweighted the challenger looks worse there
    challenger = np.where(w == 0, bad, good)
    reference = np.where(w == 0, good, bad)
    task = "regression" if metric == "rmse" else "binary"
    weighted = paired_bootstrap(task, metric, y, challenger, reference, 200, 0.9, seed=0, weights=w)  # type: ignore[arg-type]
    plain = paired_bootstrap(task, metric, y, challenger, reference, 200, 0.9, seed=0)  # type: ignore[arg-type]
    kept = w > 0
    alone = paired_bootstrap(task, metric, y[kept], challenger[kept], reference[kept], 200, 0.9, seed=0)  # type: ignore[arg-type]
    assert weighted["observed"] == pytest.approx(alone["observed"])
    assert weighted["observed"] > plain["observed"]
    assert weighted["low"] > 0
    groups = pd.DataFrame({"g": ["all"] * n})
    from mlcycle.schemas.config import GateConfig

    assert check_slices(task, metric, y, challenger, reference, groups, GateConfig(), w).passed  # type: ignore[arg-type]
