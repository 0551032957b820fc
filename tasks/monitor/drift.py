"""Drift: how far recent data (new batches, served requests) has moved from the data the champion was trained on.

Population stability index per feature, PSI = sum over bins of (recent% - reference%) * ln(recent% / reference%):
numeric features are binned at the reference's quantiles (so each reference bin holds about the same share), with
open outer bins so recent values outside the reference range still land somewhere; categorical features use one bin
per reference category plus one for categories the reference never had and one for missing values. The same
numeric PSI over the champion's predictions measures how much its output distribution has moved; for a multiclass
model, the PSI over the classes it predicts (the share of rows given each class).
Rule of thumb: below 0.1 stable, 0.1-0.25 moderate, above 0.25 a shift worth acting on.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

# A share of zero would make the log infinite; an empty bin counts as this share instead.
_EPSILON = 1e-4
UNSEEN = "<unseen>"
MISSING = "<missing>"
REQUEST_COLUMNS = ("_ts", "_model", "_request_id", "_record", "_prediction", "_label")


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's (or the predictions') drift between the reference and a recent sample."""

    feature: str
    kind: str  # "numeric", "categorical" or "prediction"
    psi: float
    reference_rows: int
    recent_rows: int
    detail: str  # the bins that moved most, for a person to read

    def drifted(self, threshold: float) -> bool:
        return self.psi >= threshold


def _psi(reference_share: np.ndarray, recent_share: np.ndarray) -> float:
    ref = np.clip(reference_share, _EPSILON, None)
    cur = np.clip(recent_share, _EPSILON, None)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def quantile_edges(reference: pd.Series, bins: int) -> np.ndarray:
    """Inner bin edges at the reference's quantiles (duplicates merged, so a spike is one bin)."""
    values = pd.to_numeric(reference, errors="coerce").dropna().to_numpy(dtype=float)
    if values.size == 0:
        return np.array([])
    return np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1]))


def numeric_shares(values: pd.Series, edges: np.ndarray) -> np.ndarray:
    """Share of values per bin (outer bins open), plus a last bin for missing values."""
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    missing = np.isnan(numbers)
    counts = np.bincount(np.searchsorted(edges, numbers[~missing], side="right"), minlength=len(edges) + 1)
    counts = np.append(counts, missing.sum())
    return counts / max(len(numbers), 1)


def psi_numeric(reference: pd.Series, recent: pd.Series, bins: int = 10, name: str = "") -> FeatureDrift:
    """PSI of a numeric feature over quantile bins of the reference."""
    edges = quantile_edges(reference, bins)
    ref, cur = numeric_shares(reference, edges), numeric_shares(recent, edges)
    labels = [*_bin_labels(edges), MISSING]
    return FeatureDrift(name or str(reference.name), "numeric", _psi(ref, cur), len(reference), len(recent),
                        _top_moves(labels, ref, cur))  # fmt: skip


def category_shares(values: pd.Series, categories: list[str]) -> np.ndarray:
    """Share per reference category, then unseen categories, then missing values."""
    present = values.dropna().astype(str)
    counts = present.value_counts().reindex(categories, fill_value=0).to_numpy(dtype=float)
    unseen = float(len(present) - counts.sum())
    counts = np.append(counts, [unseen, float(values.isna().sum())])
    return counts / max(len(values), 1)


def psi_categorical(reference: pd.Series, recent: pd.Series, name: str = "") -> FeatureDrift:
    """PSI over the reference's categories, plus one bin for unseen categories and one for missing values."""
    categories = sorted(reference.dropna().astype(str).unique())
    ref, cur = category_shares(reference, categories), category_shares(recent, categories)
    labels = [*categories, UNSEEN, MISSING]
    return FeatureDrift(name or str(reference.name), "categorical", _psi(ref, cur), len(reference), len(recent),
                        _top_moves(labels, ref, cur))  # fmt: skip


def is_numeric(values: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)


def feature_drift(reference: pd.DataFrame, recent: pd.DataFrame, features: list[str], bins: int) -> list[FeatureDrift]:
    """PSI per feature present in both frames; a feature missing from the recent frame counts as all missing."""
    rows = []
    for feature in features:
        if feature not in reference.columns:
            continue
        ref = reference[feature]
        cur = recent[feature] if feature in recent.columns else pd.Series([None] * len(recent), dtype="object")
        if is_numeric(ref):
            rows.append(psi_numeric(ref, cur, bins, feature))
        else:
            rows.append(psi_categorical(ref, cur, feature))
    return rows


def prediction_drift(reference: np.ndarray, recent: np.ndarray, bins: int, classes: list[str] | None = None
                     ) -> FeatureDrift:  # fmt: skip
    """PSI of the champion's predictions on the reference against its predictions on recent rows; class
    probabilities (one column per class of `classes`) are compared as the distribution of the predicted class."""
    if reference.ndim == 2:
        names = classes or [str(i) for i in range(reference.shape[1])]
        ref = category_shares(pd.Series(np.asarray(names)[reference.argmax(axis=1)]), names)[: len(names)]
        cur = category_shares(pd.Series(np.asarray(names)[recent.argmax(axis=1)]), names)[: len(names)]
        return FeatureDrift("prediction", "prediction", _psi(ref, cur), len(reference), len(recent),
                            "predicted class " + (_top_moves(names, ref, cur) or "shares unchanged"))  # fmt: skip
    drift = psi_numeric(pd.Series(reference), pd.Series(recent), bins, "prediction")
    moved = f"mean {np.mean(reference):.4g} → {np.mean(recent):.4g}; {drift.detail}"
    return FeatureDrift("prediction", "prediction", drift.psi, len(reference), len(recent), moved)


def read_request_log(folder: Path, since: pd.Timestamp | None = None) -> pd.DataFrame:
    """The service's request log (every `*.parquet` under `folder`), rows at or after `since`; empty if none."""
    files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    if not files:
        return pd.DataFrame()
    frame = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    if since is not None and "_ts" in frame.columns:
        stamps = pd.to_datetime(frame["_ts"], utc=True)
        frame = frame.loc[stamps >= since].reset_index(drop=True)
    return frame


def _bin_labels(edges: np.ndarray) -> list[str]:
    if edges.size == 0:
        return ["all"]
    bounds = ["-inf", *(f"{e:.4g}" for e in edges), "inf"]
    return [f"[{lo}, {hi})" for lo, hi in itertools.pairwise(bounds)]


def _top_moves(labels: list[str], ref: np.ndarray, cur: np.ndarray, n: int = 3) -> str:
    order = np.argsort(-np.abs(cur - ref))[:n]
    return ", ".join(f"{labels[i]} {ref[i]:.1%}→{cur[i]:.1%}" for i in order if abs(cur[i] - ref[i]) >= 0.005)
