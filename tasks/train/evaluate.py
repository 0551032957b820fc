"""Evaluate: test-set metrics by task next to reference models, per slice, per class, calibration, and a bias report."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn import metrics as skm
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from mlcycle.schemas.config import TaskType
from mlcycle.tasks.train.boost import TrainingData, dmatrix, xgb_params

# Multiclass is judged on log loss: a proper scoring rule on every class's probability, what the booster optimises
# and early stopping watches, smooth under resampling (the gate's bootstrap), and defined against the class priors
# of the trivial model; macro F1 moves in steps with each argmax flip and ignores how confident a prediction was.
PRIMARY_METRIC = {"binary": "roc_auc", "multiclass": "log_loss", "regression": "rmse"}
MIN_GROUP_ROWS = 30  # groups smaller than this are shown but left out of the largest-gap figures
_FLOOR = 1e-15  # a probability is never taken as below this in a log loss (as scikit-learn clips)


def class_probabilities(y_pred: np.ndarray) -> np.ndarray:
    """Multiclass predictions as float64 rows that sum to 1 (XGBoost's float32 softmax is off by an ulp or so)."""
    probs = np.asarray(y_pred, dtype=np.float64)
    return probs / probs.sum(axis=1, keepdims=True)


def row_log_loss(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Each row's log loss: -log of the probability given to its true class (binary: to its label)."""
    if y_pred.ndim == 2:
        chosen = class_probabilities(y_pred)[np.arange(len(y_true)), y_true.astype(int)]
    else:
        chosen = np.where(y_true == 1, y_pred, 1 - np.asarray(y_pred, dtype=np.float64))
    return -np.log(np.clip(chosen, _FLOOR, 1.0))


def score(
    task: TaskType, y_true: np.ndarray, y_pred: np.ndarray, weights: np.ndarray | None = None
) -> dict[str, float]:
    """Metrics of predictions (probabilities of the positive class, class probabilities, or values) against the
    truth, each weighted by `weights` (sample weights) when given."""
    w = weights
    if task == "binary":
        labels = (y_pred >= 0.5).astype(int)
        both = len(np.unique(y_true)) == 2
        return {
            "roc_auc": float(skm.roc_auc_score(y_true, y_pred, sample_weight=w)) if both else float("nan"),
            "pr_auc": float(skm.average_precision_score(y_true, y_pred, sample_weight=w)) if both else float("nan"),
            "log_loss": float(skm.log_loss(y_true, np.clip(y_pred, 1e-7, 1 - 1e-7), labels=[0, 1], sample_weight=w)),
            "accuracy": float(skm.accuracy_score(y_true, labels, sample_weight=w)),
            "f1": float(skm.f1_score(y_true, labels, zero_division=0, sample_weight=w)),
            "brier": float(skm.brier_score_loss(y_true, y_pred, sample_weight=w)),
        }
    if task == "multiclass":
        return _multiclass_scores(y_true.astype(int), class_probabilities(y_pred), w)
    result = {
        "rmse": float(np.sqrt(skm.mean_squared_error(y_true, y_pred, sample_weight=w))),
        "mae": float(skm.mean_absolute_error(y_true, y_pred, sample_weight=w)),
        "r2": float(skm.r2_score(y_true, y_pred, sample_weight=w)) if len(y_true) > 1 else float("nan"),
    }
    if (y_true >= 0).all():
        result["rmsle"] = float(np.sqrt(skm.mean_squared_log_error(y_true, np.clip(y_pred, 0, None), sample_weight=w)))
    return result


def _multiclass_scores(y: np.ndarray, probs: np.ndarray, w: np.ndarray | None) -> dict[str, float]:
    k = probs.shape[1]
    labels = np.arange(k)
    predicted = probs.argmax(axis=1)
    onehot = np.eye(k)[y]
    # One-vs-rest ROC AUC needs every class present among the rows scored (a slice may lack one): else undefined.
    every = len(np.unique(y)) == k
    return {
        "log_loss": float(np.average(row_log_loss(y, probs), weights=w)),
        "accuracy": float(skm.accuracy_score(y, predicted, sample_weight=w)),
        "f1_macro": float(skm.f1_score(y, predicted, labels=labels, average="macro", zero_division=0,
                                       sample_weight=w)),
        "f1_weighted": float(skm.f1_score(y, predicted, labels=labels, average="weighted", zero_division=0,
                                          sample_weight=w)),
        "roc_auc_ovr": float(skm.roc_auc_score(y, probs, multi_class="ovr", average="macro", labels=labels,
                                               sample_weight=w)) if every else float("nan"),
        "brier": float(np.average(((probs - onehot) ** 2).sum(axis=1), weights=w)),
    }  # fmt: skip


def per_class_report(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str],
                     weights: np.ndarray | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """Per class: precision, recall and F1 of the predicted class (the most probable), its test rows, and (when
    weighted) the weight of those rows; the metrics count each row by its weight."""
    y = y_true.astype(int)
    predicted = class_probabilities(y_pred).argmax(axis=1)
    labels = list(range(len(classes)))
    precision, recall, f1, _ = skm.precision_recall_fscore_support(y, predicted, labels=labels, zero_division=0,
                                                                   sample_weight=weights)  # fmt: skip
    rows = np.bincount(y, minlength=len(classes))
    report = []
    for i, name in enumerate(classes):
        entry = {"class": name, "precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                 "support": int(rows[i])}  # fmt: skip
        if weights is not None:
            entry["weight"] = float(weights[y == i].sum())
        report.append(entry)
    return report


def confusion(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str],
              weights: np.ndarray | None = None) -> dict[str, Any]:  # fmt: skip
    """The confusion matrix (rows: true class, columns: predicted class), in rows or, when weighted, in weight."""
    matrix = skm.confusion_matrix(y_true.astype(int), class_probabilities(y_pred).argmax(axis=1),
                                  labels=list(range(len(classes))), sample_weight=weights)  # fmt: skip
    return {"classes": classes, "counts": matrix.tolist(), "weighted": weights is not None}


REFERENCE_ROWS = 100_000  # training rows the linear and default-XGBoost references are fitted on, at most


def reference_training_rows(rows: int) -> int:
    """How many training rows the references are fitted on: all of them, or a seeded sample of `REFERENCE_ROWS`
    (a reference shows what the data gives without tuning; past this many rows it costs more than it tells)."""
    return min(rows, REFERENCE_ROWS)


def reference_predictions(task: TaskType, data: TrainingData, x_test: pd.DataFrame, seed: int) -> dict[str, np.ndarray]:
    """Test predictions of the models a tuned one must beat: the trivial model (base rate, class priors or mean) on
    the training split, and a linear model and XGBoost with its default parameters on it or on a seeded sample of it
    (`reference_training_rows`), all weighted by the training rows' sample weights when there are any."""
    if task == "multiclass":
        priors = np.bincount(data.y_train.astype(int), weights=data.w_train, minlength=data.num_class)
        trivial = np.tile(priors / priors.sum(), (len(x_test), 1))
    else:
        trivial = np.full(len(x_test), float(np.average(data.y_train, weights=data.w_train)))
    keep = reference_training_rows(len(data.x_train))
    if keep < len(data.x_train):
        rows = np.sort(np.random.default_rng(seed).choice(len(data.x_train), keep, replace=False))
        data = TrainingData(data.x_train.iloc[rows], data.y_train[rows], data.x_valid, data.y_valid,
                            None if data.w_train is None else data.w_train[rows], None, data.num_class)  # fmt: skip
    categorical = [c for c in data.x_train.columns if isinstance(data.x_train[c].dtype, pd.CategoricalDtype)]
    numeric = [c for c in data.x_train.columns if c not in categorical]
    encode = ColumnTransformer([
        ("num", make_pipeline(SimpleImputer(strategy="median", keep_empty_features=True), StandardScaler()), numeric),
        ("cat", make_pipeline(SimpleImputer(strategy="constant", fill_value="<missing>", keep_empty_features=True),
                              OneHotEncoder(handle_unknown="ignore")), categorical),
    ])  # fmt: skip

    def as_objects(x: pd.DataFrame) -> pd.DataFrame:
        return x.assign(**{c: x[c].astype("object").where(x[c].notna(), None) for c in categorical})

    estimator = Ridge(alpha=1.0) if task == "regression" else LogisticRegression(max_iter=2000)
    linear = make_pipeline(encode, estimator)
    step = linear.steps[-1][0]
    linear.fit(as_objects(data.x_train), data.y_train, **{f"{step}__sample_weight": data.w_train})
    if task == "binary":
        linear_pred = linear.predict_proba(as_objects(x_test))[:, 1]
    elif task == "multiclass":
        # a class with no training rows gets no column from scikit-learn: probability 0 for it
        linear_pred = np.zeros((len(x_test), data.num_class))
        linear_pred[:, estimator.classes_.astype(int)] = linear.predict_proba(as_objects(x_test))
    else:
        linear_pred = linear.predict(as_objects(x_test))
    # XGBoost's own defaults (100 rounds, eta 0.3, depth 6), as `XGBClassifier()` / `XGBRegressor()` would use.
    default = xgb.train(xgb_params(task, {}, nthread=0, seed=seed, num_class=data.num_class),
                        dmatrix(data.x_train, data.y_train, 0, data.w_train), 100)  # fmt: skip
    return {"linear": linear_pred, "default_xgboost": default.predict(dmatrix(x_test, None, 0)), "trivial": trivial}


def calibration_table(y_true: np.ndarray, y_pred: np.ndarray, bins: int = 10,
                      weights: np.ndarray | None = None) -> list[dict[str, float]]:  # fmt: skip
    """Predicted probability against the observed rate in equal-width bins (weighted means when weighted)."""
    edges = np.linspace(0, 1, bins + 1)
    index = np.clip(np.digitize(y_pred, edges[1:-1]), 0, bins - 1)
    table = []
    for b in range(bins):
        mask = index == b
        if mask.any():
            w = None if weights is None else weights[mask]
            if w is not None and w.sum() <= 0:
                continue
            table.append({"bin": f"{edges[b]:.1f}-{edges[b + 1]:.1f}", "rows": int(mask.sum()),
                          "predicted": float(np.average(y_pred[mask], weights=w)),
                          "observed": float(np.average(y_true[mask], weights=w))})  # fmt: skip
    return table


def slice_metrics(
    task: TaskType, y_true: np.ndarray, y_pred: np.ndarray, groups: pd.DataFrame, weights: np.ndarray | None = None
) -> dict[str, list[dict[str, Any]]]:
    """Per slice column and value: rows, share of the test set, and the model's metrics on those rows."""
    slices: dict[str, list[dict[str, Any]]] = {}
    for column in groups.columns:
        values = _group_values(groups[column])
        rows = []
        for value in pd.unique(values):
            mask = values == value
            rows.append({"value": str(value), "rows": int(mask.sum()), "share": float(mask.mean()),
                         **score(task, y_true[mask], y_pred[mask], _part(weights, mask))})  # fmt: skip
        slices[column] = sorted(rows, key=lambda r: -int(r["rows"]))
    return slices


def bias_report(
    task: TaskType,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    test_groups: pd.DataFrame,
    train_groups: pd.DataFrame,
    all_groups: pd.DataFrame,
    weights: np.ndarray | None = None,
) -> dict[str, dict[str, Any]]:
    """Per slice column: each group's share of the training data against the whole; for binary tasks the
    demographic-parity and equal-opportunity differences; and the largest primary-metric gap between groups (rates
    and metrics weighted by the test rows' sample weights when given; shares count rows)."""
    primary = PRIMARY_METRIC[task]
    report: dict[str, dict[str, Any]] = {}
    for column in test_groups.columns:
        test_values = _group_values(test_groups[column])
        train_share = pd.Series(_group_values(train_groups[column])).value_counts(normalize=True)
        all_share = pd.Series(_group_values(all_groups[column])).value_counts(normalize=True)
        groups = []
        for value in sorted(set(all_share.index) | set(pd.unique(test_values)), key=str):
            mask = test_values == value
            group: dict[str, Any] = {"value": str(value), "train_share": float(train_share.get(value, 0.0)),
                                     "all_share": float(all_share.get(value, 0.0)), "test_rows": int(mask.sum())}  # fmt: skip
            if mask.any():
                group[primary] = score(task, y_true[mask], y_pred[mask], _part(weights, mask))[primary]
                if task == "binary":
                    group["positive_rate"] = float(np.average(y_pred[mask] >= 0.5, weights=_part(weights, mask)))
                    positives = mask & (y_true == 1)
                    group["true_positive_rate"] = float(np.average(y_pred[positives] >= 0.5, weights=_part(
                        weights, positives))) if positives.any() else None  # fmt: skip
            groups.append(group)
        sized = [g for g in groups if g["test_rows"] >= MIN_GROUP_ROWS and np.isfinite(g.get(primary, np.nan))]
        entry: dict[str, Any] = {"groups": groups, "max_representation_gap": max(
            (abs(g["train_share"] - g["all_share"]) for g in groups), default=0.0)}  # fmt: skip
        entry[f"largest_{primary}_gap"] = _spread([g[primary] for g in sized])
        if task == "binary":
            entry["demographic_parity_difference"] = _spread([g["positive_rate"] for g in sized])
            entry["equal_opportunity_difference"] = _spread(
                [g["true_positive_rate"] for g in sized if g["true_positive_rate"] is not None]
            )
        report[column] = entry
    return report


def _part(weights: np.ndarray | None, mask: np.ndarray) -> np.ndarray | None:
    return None if weights is None else weights[mask]


def _spread(values: list[float]) -> float | None:
    return float(max(values) - min(values)) if len(values) >= 2 else None


def _group_values(column: pd.Series) -> np.ndarray:
    return column.astype("object").where(column.notna(), "<missing>").to_numpy()


def evaluate_model(
    task: TaskType,
    y_test: np.ndarray,
    predictions: np.ndarray,
    references: dict[str, np.ndarray],
    test_groups: pd.DataFrame,
    train_groups: pd.DataFrame,
    all_groups: pd.DataFrame,
    reference_rows: int | None = None,
    classes: list[str] | None = None,
    weights: np.ndarray | None = None,
) -> dict[str, Any]:
    """Everything known about the model on the test set, in one plain-data report; with `weights` (the test rows'
    sample weights) every metric is weighted, and the report says so (`weighted`)."""
    report: dict[str, Any] = {
        "primary": PRIMARY_METRIC[task],
        "test": score(task, y_test, predictions, weights),
        "references": {name: score(task, y_test, pred, weights) for name, pred in references.items()},
        "rows": len(y_test),
        "weighted": weights is not None,
        "slices": slice_metrics(task, y_test, predictions, test_groups, weights),
        "bias": bias_report(task, y_test, predictions, test_groups, train_groups, all_groups, weights),
    }
    report["baseline"] = report["references"]["trivial"]
    if weights is not None:
        report["test_weight"] = float(weights.sum())
    if reference_rows is not None:
        report["references_fitted_on_rows"] = reference_rows
    if task == "binary":
        report["calibration"] = calibration_table(y_test, predictions, weights=weights)
    if task == "multiclass":
        names = classes or [str(i) for i in range(predictions.shape[1])]
        report["classes"] = names
        report["per_class"] = per_class_report(y_test, predictions, names, weights)
        report["confusion"] = confusion(y_test, predictions, names, weights)
    return report
