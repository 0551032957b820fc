"""Multiclass tasks, piece by piece, on tiny penguin-shaped data made here: classes, label encoding, training,
metrics against scikit-learn's, references, the report's confusion matrix, the gate, answers, export parity and
drift on the predicted class. (The whole cycle on the real penguins: tests/integration/test_multiclass.py.)"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pytest
from pandera.typing import Series
from sklearn import metrics as skm

from mlcycle.schemas import load_config, resolve_schema
from mlcycle.schemas.config import PipelineConfig
from mlcycle.schemas.penguins import SPECIES
from mlcycle.tasks.monitor.drift import prediction_drift
from mlcycle.tasks.preprocess import apply_preprocessor, fit_preprocessor
from mlcycle.tasks.registry.bundle import answer_records, load_bundle, save_bundle
from mlcycle.tasks.registry.export import export_booster, offline_predictions, records_of
from mlcycle.tasks.registry.gate import gate_challenger, metric_value, paired_bootstrap
from mlcycle.tasks.train.boost import TrainingData, fit_booster, fit_rounds, xgb_params
from mlcycle.tasks.train.evaluate import confusion, evaluate_model, per_class_report, reference_predictions, score
from mlcycle.tasks.train.prepare import (
    TargetError,
    encode_target,
    feature_columns,
    find_leaks,
    split_frame,
    target_classes,
)
from mlcycle.tasks.train.report import write_report
from tests.conftest import ROOT

_names = itertools.count()
FEATURES = ["island", "bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g", "sex", "year"]
FAST_GATE = {"gate.bootstrap_samples": 100, "gate.latency_rows": 10, "gate.latency_p99_ms": 1e6,
             "gate.smoke_test": False}  # fmt: skip


class NoClassesSchema(pa.DataFrameModel):
    """A multiclass target with no allowed values declared: the classes come from the training labels."""

    x: Series[float]
    species: Series[str]


def penguin_rows(n: int, seed: int, shuffle: bool = False) -> pd.DataFrame:
    """Penguin-like rows: the species follows flipper length and bill depth, with some overlap."""
    rng = np.random.default_rng(seed)
    species = rng.choice(SPECIES, n, p=[0.45, 0.2, 0.35])
    flipper = np.select([species == "Adelie", species == "Chinstrap"], [190.0, 196.0], 217.0) + rng.normal(0, 6, n)
    depth = np.select([species == "Gentoo"], [15.0], 18.4) + rng.normal(0, 1.0, n)
    length = np.select([species == "Adelie", species == "Chinstrap"], [38.8, 48.8], 47.5) + rng.normal(0, 2.5, n)
    island = np.where(species == "Gentoo", "Biscoe", np.where(species == "Chinstrap", "Dream",
                                                              rng.choice(["Biscoe", "Dream", "Torgersen"], n)))  # fmt: skip
    frame = pd.DataFrame({"island": island, "bill_length_mm": length.round(1), "bill_depth_mm": depth.round(1),
                          "flipper_length_mm": flipper.round(0), "body_mass_g": rng.normal(4200, 700, n).round(0),
                          "sex": rng.choice(["female", "male", None], n, p=[0.48, 0.48, 0.04]),
                          "year": rng.choice([2007, 2008, 2009], n), "species": species})  # fmt: skip
    return frame.assign(species=rng.permutation(species)) if shuffle else frame


def penguins_config(**changes: Any) -> PipelineConfig:
    return load_config(ROOT / "configs/penguins.yaml", {"name": f"mc{next(_names)}", **FAST_GATE, **changes})


def fit_small(config: PipelineConfig, frame: pd.DataFrame, rounds: int = 30) -> tuple[Any, Any, list[str]]:
    classes = target_classes(config, frame[config.target])
    spec = fit_preprocessor(frame, feature_columns(list(frame.columns), config), config.preprocess)
    params = xgb_params("multiclass", {"eta": 0.3, "max_depth": 3}, nthread=1, seed=0, num_class=len(classes))
    booster = fit_rounds(apply_preprocessor(spec, frame), encode_target(frame[config.target], config, classes),
                         params, rounds)  # fmt: skip
    return booster, spec, classes


def save_small(config: PipelineConfig, frame: pd.DataFrame, rounds: int = 30) -> str:
    booster, spec, classes = fit_small(config, frame, rounds)
    metrics = {"primary": "log_loss", "test": {"log_loss": 0.5}}
    return save_bundle(booster, spec, config, classes, metrics, {"data_hash": "unit"})


# --- config, classes, labels -------------------------------------------------------------------------------------


def test_a_multiclass_config_may_split_stratified_and_a_regression_may_not() -> None:
    assert penguins_config().task == "multiclass"
    with pytest.raises(ValueError, match="stratified split needs a classification task"):
        load_config(ROOT / "configs/bike.yaml", {"split.strategy": "stratified"})


def test_classes_come_from_the_schema_in_its_order_else_from_the_training_labels_sorted() -> None:
    assert target_classes(penguins_config()) == SPECIES
    config = penguins_config(schema_ref="tests.test_multiclass:NoClassesSchema")
    labels = pd.Series(["Gentoo", "Adelie", "Gentoo", "Chinstrap"])
    assert target_classes(config, labels) == ["Adelie", "Chinstrap", "Gentoo"]
    numbers = pd.Series([10, 2, 1, 2])  # sorted as numbers, recorded as text
    assert target_classes(config, numbers) == ["1", "2", "10"]
    with pytest.raises(TargetError, match="at least 2 classes"):
        target_classes(config, pd.Series(["Adelie", "Adelie"]))


def test_a_label_training_never_saw_stops_the_run_by_name() -> None:
    config = penguins_config()
    assert encode_target(pd.Series(["Gentoo", "Adelie"]), config, SPECIES).tolist() == [2.0, 0.0]
    with pytest.raises(TargetError, match=r"\['Emperor'\] \(1 rows\) are not among the model's classes"):
        encode_target(pd.Series(["Gentoo", "Emperor"]), config, ["Adelie", "Gentoo"])


def test_stratified_split_keeps_every_class_in_every_part_and_the_leak_scan_runs() -> None:
    config = penguins_config()
    frame = penguin_rows(300, seed=0)
    splits = split_frame(frame, pd.Series("", index=frame.index), config)
    for part in (splits.train, splits.valid, splits.test):
        assert set(part["species"]) == set(SPECIES)
    report = find_leaks(splits, FEATURES, config)
    assert report.suspects == []  # island and species overlap, but no value gives the label 95% of the time
    leaky = splits.train.assign(island=splits.train["species"].map({"Adelie": "Torgersen", "Chinstrap": "Dream",
                                                                    "Gentoo": "Biscoe"}))  # fmt: skip
    copied = find_leaks(type(splits)(leaky, splits.valid, splits.test), FEATURES, config)
    assert [s["columns"] for s in copied.suspects] == [["island"]]


# --- training and metrics ----------------------------------------------------------------------------------------


def test_multiclass_booster_gives_class_probabilities_and_stops_on_mlogloss() -> None:
    config = penguins_config()
    frame = penguin_rows(400, seed=1)
    spec = fit_preprocessor(frame, FEATURES, config.preprocess)
    y = encode_target(frame["species"], config, SPECIES)
    data = TrainingData(apply_preprocessor(spec, frame[:300]), y[:300], apply_preprocessor(spec, frame[300:]),
                        y[300:], num_class=3)  # fmt: skip
    params = xgb_params("multiclass", {"eta": 0.3}, nthread=1, seed=0, num_class=3)
    assert params["objective"] == "multi:softprob" and params["eval_metric"] == "mlogloss"
    booster = fit_booster(data, params, 300, early_stopping_rounds=10)
    assert booster.num_boosted_rounds() < 300  # stopped early on the validation log loss
    probs = booster.predict(__import__("xgboost").DMatrix(data.x_valid, enable_categorical=True))
    assert probs.shape == (100, 3) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    with pytest.raises(ValueError, match="num_class"):
        xgb_params("multiclass", {}, nthread=1, seed=0)


def _probabilities(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n).astype(float)
    logits = rng.normal(size=(n, 3)) + 2.0 * np.eye(3)[y.astype(int)]
    probs = (np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)).astype(np.float32)
    return y, probs, rng.uniform(0.2, 3.0, n)


@pytest.mark.parametrize("weighted", [False, True])
def test_multiclass_metrics_equal_scikit_learns(weighted: bool) -> None:
    y, probs, w = _probabilities(300, seed=2)
    weights = w if weighted else None
    metrics = score("multiclass", y, probs, weights)
    predicted = probs.argmax(axis=1)
    normalised = probs / probs.sum(axis=1, keepdims=True, dtype=np.float64)
    assert metrics["log_loss"] == pytest.approx(skm.log_loss(y, normalised, sample_weight=weights), rel=1e-9)
    assert metrics["accuracy"] == pytest.approx(skm.accuracy_score(y, predicted, sample_weight=weights))
    assert metrics["f1_macro"] == pytest.approx(skm.f1_score(y, predicted, average="macro", sample_weight=weights))
    assert metrics["f1_weighted"] == pytest.approx(
        skm.f1_score(y, predicted, average="weighted", sample_weight=weights)
    )
    assert metrics["roc_auc_ovr"] == pytest.approx(
        skm.roc_auc_score(y, normalised, multi_class="ovr", sample_weight=weights)
    )
    # a slice without one of the classes: one-vs-rest AUC is undefined there, the rest still computed
    assert np.isnan(score("multiclass", y[y < 2], probs[y < 2])["roc_auc_ovr"])
    if weighted:  # the weights matter: every metric moves
        plain = score("multiclass", y, probs)
        assert plain["log_loss"] != pytest.approx(metrics["log_loss"], rel=1e-3)


def test_per_class_report_and_confusion_matrix_equal_scikit_learns() -> None:
    y, probs, w = _probabilities(200, seed=3)
    report = per_class_report(y, probs, ["a", "b", "c"], w)
    precision, recall, f1, _ = skm.precision_recall_fscore_support(y, probs.argmax(axis=1), sample_weight=w)
    assert [r["class"] for r in report] == ["a", "b", "c"]
    np.testing.assert_allclose([r["precision"] for r in report], precision)
    np.testing.assert_allclose([r["recall"] for r in report], recall)
    np.testing.assert_allclose([r["f1"] for r in report], f1)
    assert [r["support"] for r in report] == np.bincount(y.astype(int)).tolist()
    assert sum(r["weight"] for r in report) == pytest.approx(w.sum())
    matrix = confusion(y, probs, ["a", "b", "c"])
    assert matrix["counts"] == skm.confusion_matrix(y, probs.argmax(axis=1)).tolist() and not matrix["weighted"]


def test_references_are_fitted_weighted_and_the_trivial_one_gives_the_weighted_priors() -> None:
    config = penguins_config()
    frame = penguin_rows(500, seed=4)
    spec = fit_preprocessor(frame, FEATURES, config.preprocess)
    x = apply_preprocessor(spec, frame)
    y = encode_target(frame["species"], config, SPECIES)
    w = np.where(y == 1, 4.0, 1.0)  # Chinstrap counts four times
    data = TrainingData(x[:300], y[:300], x[300:400], y[300:400], w[:300], w[300:400], num_class=3)
    refs = reference_predictions("multiclass", data, x[400:], seed=0)
    priors = np.bincount(y[:300].astype(int), weights=w[:300]) / w[:300].sum()
    np.testing.assert_allclose(refs["trivial"], np.tile(priors, (100, 1)))
    for name in ("linear", "default_xgboost"):
        assert refs[name].shape == (100, 3) and np.allclose(refs[name].sum(axis=1), 1, atol=1e-5)
    report = evaluate_model("multiclass", y[400:], refs["default_xgboost"], refs, frame[400:][["island"]],
                            frame[:300][["island"]], frame[["island"]], classes=SPECIES, weights=w[400:])  # fmt: skip
    assert report["primary"] == "log_loss" and report["weighted"] and report["classes"] == SPECIES
    assert report["references"]["linear"]["log_loss"] < report["baseline"]["log_loss"]
    assert report["test"]["log_loss"] == pytest.approx(
        skm.log_loss(
            y[400:], refs["default_xgboost"] / refs["default_xgboost"].sum(axis=1, keepdims=True), sample_weight=w[400:]
        )  # fmt: skip
    )
    assert {r["value"] for r in report["slices"]["island"]} == set(frame[400:]["island"])
    assert "largest_log_loss_gap" in report["bias"]["island"]


def test_report_draws_the_confusion_matrix_instead_of_roc_and_calibration(tmp_path: Path) -> None:
    y, probs, _ = _probabilities(120, seed=5)
    config = penguins_config()
    frame = penguin_rows(120, seed=5)
    booster, _, _ = fit_small(config, frame, rounds=3)
    metrics = evaluate_model("multiclass", y, probs, {"trivial": np.full((120, 3), 1 / 3)}, frame[["island"]],
                             frame[["island"]], frame[["island"]], classes=SPECIES)  # fmt: skip
    from mlcycle.tasks.train.prepare import LeakageReport

    files = write_report(tmp_path, "mc:1", "multiclass", y, probs, {}, metrics, booster, LeakageReport([], {}))
    names = {p.name for p in files.plots}
    assert "confusion_matrix.png" in names and not names & {"roc.png", "calibration.png"}
    assert "predicted Gentoo" in files.html.read_text()


# --- gate, answers, export, drift ----------------------------------------------------------------------------------


def test_the_bootstrap_on_log_loss_resamples_like_row_by_row_and_counts_weights() -> None:
    y, good, w = _probabilities(200, seed=6)
    flat = np.full_like(good, 1 / 3)
    interval = paired_bootstrap("multiclass", "log_loss", y, good, flat, 300, 0.95, seed=0, weights=w)
    assert interval["low"] > 0 and interval["weighted"]
    assert interval["observed"] == pytest.approx(
        metric_value("multiclass", "log_loss", y, flat, w) - metric_value("multiclass", "log_loss", y, good, w)
    )
    # one resample's counts, vectorised, equal the drawn rows scored directly
    from mlcycle.tasks.registry.gate import _weighted_metric

    rows = np.random.default_rng(1).integers(0, 200, 200)
    counts = np.bincount(rows, minlength=200).astype(float)[None, :] * w
    direct = metric_value("multiclass", "log_loss", y[rows], good[rows], w[rows])
    assert _weighted_metric("log_loss", y, good, counts)[0] == pytest.approx(direct)


def test_gate_promotes_an_informative_multiclass_model_and_rejects_a_shuffled_one() -> None:
    test = penguin_rows(300, seed=8)
    config = penguins_config()
    y = encode_target(test["species"], config, SPECIES)
    trivial = np.tile(np.bincount(y.astype(int)) / len(y), (len(y), 1))
    good = save_small(config, penguin_rows(400, seed=7))
    record = gate_challenger(good, test, y, trivial, config.gate, champion=None)
    assert record.promoted, record.reasons
    assert {c.rule: c for c in record.checks}["baseline"].evidence["metric"] == "log_loss"
    shuffled = save_small(config, penguin_rows(400, seed=7, shuffle=True))
    assert not gate_challenger(shuffled, test, y, trivial, config.gate, champion=None).promoted
    # against a champion: slices judged on log loss too
    from mlcycle.tasks import registry

    registry.promote(good, reason="unit test champion")
    again = gate_challenger(save_small(config, penguin_rows(400, seed=7), rounds=30), test, y, trivial, config.gate,
                            champion=good)  # fmt: skip
    assert {c.rule for c in again.checks if c.passed is not None} >= {"metric", "slices"}


def test_answers_name_the_most_probable_class_with_every_probability() -> None:
    raw = np.array([[0.1, 0.7, 0.2], [0.5, 0.2, 0.3]], dtype=np.float32)
    answers = answer_records("multiclass", SPECIES, raw)
    assert [a["label"] for a in answers] == ["Chinstrap", "Adelie"]
    assert answers[0]["probabilities"] == pytest.approx({"Adelie": 0.1, "Chinstrap": 0.7, "Gentoo": 0.2})
    config = penguins_config()
    tag = save_small(config, penguin_rows(300, seed=9))
    bundle = load_bundle(tag)
    assert bundle.classes == SPECIES
    frame = penguin_rows(20, seed=10)[FEATURES]
    records, _ = bundle.predict_records(frame)
    for record, row in zip(records, bundle.predict_raw(frame), strict=True):
        assert sum(record["probabilities"].values()) == pytest.approx(1, abs=1e-5)
        assert record["label"] == SPECIES[int(np.argmax(row))]


@pytest.mark.parametrize("fmt", ["onnx", "xgboost-json"])
def test_multiclass_export_matches_the_registered_model(tmp_path: Path, fmt: str) -> None:
    config = penguins_config()
    frame = penguin_rows(400, seed=11)
    frame.loc[frame.index[::6], "bill_depth_mm"] = None  # missing values take each tree's default branch
    booster, spec, classes = fit_small(config, frame, rounds=25)
    records = records_of(penguin_rows(60, seed=12), FEATURES)
    expected = offline_predictions(booster, spec, resolve_schema(config.features_schema_ref), records)
    assert expected.shape == (60, 3)
    report = export_booster("mc:1", booster, spec, "multiclass", classes, resolve_schema(config.features_schema_ref), fmt,  # type: ignore[arg-type]
                            tmp_path / fmt, records, expected, latency_calls=5)  # fmt: skip
    assert report.parity_max_abs_diff <= 1e-5
    from mlcycle.tasks.registry.export import load_predictor

    answers = load_predictor(tmp_path / fmt).answer(records)
    assert [a["label"] for a in answers] == [classes[i] for i in expected.argmax(axis=1)]


def test_prediction_drift_of_a_multiclass_model_is_the_psi_of_the_predicted_class() -> None:
    rng = np.random.default_rng(0)
    reference = np.eye(3)[rng.choice(3, 2000, p=[0.5, 0.3, 0.2])] * 0.8 + 0.2 / 3
    same = np.eye(3)[rng.choice(3, 2000, p=[0.5, 0.3, 0.2])] * 0.8 + 0.2 / 3
    moved = np.eye(3)[rng.choice(3, 2000, p=[0.1, 0.3, 0.6])] * 0.8 + 0.2 / 3
    assert prediction_drift(reference, same, bins=10, classes=SPECIES).psi < 0.01
    drift = prediction_drift(reference, moved, bins=10, classes=SPECIES)
    shares_ref, shares_new = np.array([0.5, 0.3, 0.2]), np.array([0.1, 0.3, 0.6])
    assert drift.psi == pytest.approx(np.sum((shares_new - shares_ref) * np.log(shares_new / shares_ref)), abs=0.05)
    assert drift.psi > 0.25 and "Gentoo" in drift.detail and drift.kind == "prediction"
