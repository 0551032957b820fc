"""Evaluate: test-set metrics by task next to reference models, per slice, calibration, and a bias report."""

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

from schemas.config import TaskType
from tasks.train.boost import TrainingData, dmatrix, xgb_params

PRIMARY_METRIC = {"binary": "roc_auc", "regression": "rmse"}
MIN_GROUP_ROWS = 30  # groups smaller than this are shown but left out of the largest-gap figures


def score(task: TaskType, y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Metrics of predictions (probabilities of the positive class, or values) against the truth."""
    if task == "binary":
        labels = (y_pred >= 0.5).astype(int)
        both = len(np.unique(y_true)) == 2
        return {
            "roc_auc": float(skm.roc_auc_score(y_true, y_pred)) if both else float("nan"),
            "pr_auc": float(skm.average_precision_score(y_true, y_pred)) if both else float("nan"),
            "log_loss": float(skm.log_loss(y_true, np.clip(y_pred, 1e-7, 1 - 1e-7), labels=[0, 1])),
            "accuracy": float(skm.accuracy_score(y_true, labels)),
            "f1": float(skm.f1_score(y_true, labels, zero_division=0)),
            "brier": float(skm.brier_score_loss(y_true, y_pred)),
        }
    result = {
        "rmse": float(np.sqrt(skm.mean_squared_error(y_true, y_pred))),
        "mae": float(skm.mean_absolute_error(y_true, y_pred)),
        "r2": float(skm.r2_score(y_true, y_pred)) if len(y_true) > 1 else float("nan"),
    }
    if (y_true >= 0).all():
        result["rmsle"] = float(np.sqrt(skm.mean_squared_log_error(y_true, np.clip(y_pred, 0, None))))
    return result


REFERENCE_ROWS = 100_000  # training rows the linear and default-XGBoost references are fitted on, at most


def reference_training_rows(rows: int) -> int:
    """How many training rows the references are fitted on: all of them, or a seeded sample of `REFERENCE_ROWS`
    (a reference shows what the data gives without tuning; past this many rows it costs more than it tells)."""
    return min(rows, REFERENCE_ROWS)


def reference_predictions(task: TaskType, data: TrainingData, x_test: pd.DataFrame, seed: int) -> dict[str, np.ndarray]:
    """Test predictions of the models a tuned one must beat: the trivial model (base rate or mean) on the training
    split, and a linear model and XGBoost with its default parameters on it or on a seeded sample of it
    (`reference_training_rows`)."""
    trivial = np.full(len(x_test), float(np.mean(data.y_train)))
    keep = reference_training_rows(len(data.x_train))
    if keep < len(data.x_train):
        rows = np.sort(np.random.default_rng(seed).choice(len(data.x_train), keep, replace=False))
        data = TrainingData(data.x_train.iloc[rows], data.y_train[rows], data.x_valid, data.y_valid)
    categorical = [c for c in data.x_train.columns if isinstance(data.x_train[c].dtype, pd.CategoricalDtype)]
    numeric = [c for c in data.x_train.columns if c not in categorical]
    encode = ColumnTransformer([
        ("num", make_pipeline(SimpleImputer(strategy="median", keep_empty_features=True), StandardScaler()), numeric),
        ("cat", make_pipeline(SimpleImputer(strategy="constant", fill_value="<missing>", keep_empty_features=True),
                              OneHotEncoder(handle_unknown="ignore")), categorical),
    ])  # fmt: skip

    def as_objects(x: pd.DataFrame) -> pd.DataFrame:
        return x.assign(**{c: x[c].astype("object").where(x[c].notna(), None) for c in categorical})

    if task == "binary":
        linear = make_pipeline(encode, LogisticRegression(max_iter=2000))
        linear.fit(as_objects(data.x_train), data.y_train)
        linear_pred = linear.predict_proba(as_objects(x_test))[:, 1]
    else:
        linear = make_pipeline(encode, Ridge(alpha=1.0))
        linear.fit(as_objects(data.x_train), data.y_train)
        linear_pred = linear.predict(as_objects(x_test))
    # XGBoost's own defaults (100 rounds, eta 0.3, depth 6), as `XGBClassifier()` / `XGBRegressor()` would use.
    default = xgb.train(xgb_params(task, {}, nthread=0, seed=seed), dmatrix(data.x_train, data.y_train, 0), 100)
    return {"linear": linear_pred, "default_xgboost": default.predict(dmatrix(x_test, None, 0)), "trivial": trivial}


def calibration_table(y_true: np.ndarray, y_pred: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    """Predicted probability against the observed rate in equal-width bins."""
    edges = np.linspace(0, 1, bins + 1)
    index = np.clip(np.digitize(y_pred, edges[1:-1]), 0, bins - 1)
    table = []
    for b in range(bins):
        mask = index == b
        if mask.any():
            table.append({"bin": f"{edges[b]:.1f}-{edges[b + 1]:.1f}", "rows": int(mask.sum()),
                          "predicted": float(y_pred[mask].mean()), "observed": float(y_true[mask].mean())})  # fmt: skip
    return table


def slice_metrics(
    task: TaskType, y_true: np.ndarray, y_pred: np.ndarray, groups: pd.DataFrame
) -> dict[str, list[dict[str, Any]]]:
    """Per slice column and value: rows, share of the test set, and the model's metrics on those rows."""
    slices: dict[str, list[dict[str, Any]]] = {}
    for column in groups.columns:
        values = _group_values(groups[column])
        rows = []
        for value in pd.unique(values):
            mask = values == value
            rows.append({"value": str(value), "rows": int(mask.sum()), "share": float(mask.mean()),
                         **score(task, y_true[mask], y_pred[mask])})  # fmt: skip
        slices[column] = sorted(rows, key=lambda r: -int(r["rows"]))
    return slices


def bias_report(
    task: TaskType,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    test_groups: pd.DataFrame,
    train_groups: pd.DataFrame,
    all_groups: pd.DataFrame,
) -> dict[str, dict[str, Any]]:
    """Per slice column: each group's share of the training data against the whole; for binary tasks the
    demographic-parity and equal-opportunity differences; and the largest primary-metric gap between groups."""
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
                group[primary] = score(task, y_true[mask], y_pred[mask])[primary]
                if task == "binary":
                    group["positive_rate"] = float((y_pred[mask] >= 0.5).mean())
                    positives = mask & (y_true == 1)
                    group["true_positive_rate"] = float((y_pred[positives] >= 0.5).mean()) if positives.any() else None
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
) -> dict[str, Any]:
    """Everything known about the model on the test set, in one plain-data report."""
    report: dict[str, Any] = {
        "primary": PRIMARY_METRIC[task],
        "test": score(task, y_test, predictions),
        "references": {name: score(task, y_test, pred) for name, pred in references.items()},
        "rows": len(y_test),
        "slices": slice_metrics(task, y_test, predictions, test_groups),
        "bias": bias_report(task, y_test, predictions, test_groups, train_groups, all_groups),
    }
    report["baseline"] = report["references"]["trivial"]
    if reference_rows is not None:
        report["references_fitted_on_rows"] = reference_rows
    if task == "binary":
        report["calibration"] = calibration_table(y_test, predictions)
    return report
