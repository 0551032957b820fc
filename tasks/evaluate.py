"""Evaluate: test-set metrics by task, always next to a trivial baseline, and per slice."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from schemas.config import TaskType

PRIMARY_METRIC = {"binary": "roc_auc", "regression": "rmse"}


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


def baseline_predictions(task: TaskType, y_train: np.ndarray, n: int) -> np.ndarray:
    """The trivial model: the training base rate (binary) or mean (regression) for every row."""
    return np.full(n, float(np.mean(y_train)))


def evaluate_predictions(
    task: TaskType,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    y_train: np.ndarray,
    groups: pd.DataFrame,
) -> dict[str, object]:
    """Test metrics of the model and of the trivial baseline, and the model's metrics per slice value."""
    slices: dict[str, list[dict[str, object]]] = {}
    for column in groups.columns:
        values = groups[column].astype("object").where(groups[column].notna(), "<missing>").to_numpy()
        rows = []
        for value in pd.unique(values):
            mask = values == value
            rows.append({"value": str(value), "rows": int(mask.sum()), "share": float(mask.mean()),
                         **score(task, y_true[mask], y_pred[mask])})  # fmt: skip
        slices[column] = sorted(rows, key=lambda r: -int(r["rows"]))  # type: ignore[arg-type]
    return {
        "primary": PRIMARY_METRIC[task],
        "test": score(task, y_true, y_pred),
        "baseline": score(task, y_true, baseline_predictions(task, y_train, len(y_true))),
        "rows": int(len(y_true)),
        "slices": slices,
    }
