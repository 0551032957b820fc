"""Drift measures on tiny frames: PSI per numeric and categorical feature, predictions, the request log."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlcycle.tasks.monitor.drift import (
    MISSING,
    UNSEEN,
    category_shares,
    feature_drift,
    numeric_shares,
    prediction_drift,
    psi_categorical,
    psi_numeric,
    quantile_edges,
    read_request_log,
)


def test_same_distribution_has_near_zero_psi_and_a_shift_crosses_the_threshold() -> None:
    rng = np.random.default_rng(0)
    reference = pd.Series(rng.normal(20, 5, 5000), name="temp")
    assert psi_numeric(reference, pd.Series(rng.normal(20, 5, 2000)), 10).psi < 0.02
    shifted = psi_numeric(reference, pd.Series(rng.normal(28, 5, 2000)), 10)
    assert shifted.psi > 0.25 and shifted.drifted(0.25)
    assert shifted.kind == "numeric" and shifted.feature == "temp"
    assert "[" in shifted.detail  # names the bins that moved


def test_numeric_bins_are_reference_quantiles_with_open_ends_and_a_missing_bin() -> None:
    reference = pd.Series(np.arange(100, dtype=float))
    edges = quantile_edges(reference, 4)
    assert np.allclose(edges, [24.75, 49.5, 74.25])
    shares = numeric_shares(pd.Series([-1000.0, 30.0, 1e9, None]), edges)
    assert shares.tolist() == [0.25, 0.25, 0.0, 0.25, 0.25]  # below, 2nd bin, above, missing
    assert numeric_shares(reference, edges)[:-1].tolist() == [0.25] * 4


def test_categorical_psi_counts_unseen_and_missing_categories() -> None:
    reference = pd.Series(["a"] * 50 + ["b"] * 50)
    shares = category_shares(pd.Series(["a", "c", None, "b"]), ["a", "b"])
    assert shares.tolist() == [0.25, 0.25, 0.25, 0.25]
    same = psi_categorical(reference, pd.Series(["a", "b"] * 20), "color")
    assert same.psi == pytest.approx(0.0, abs=1e-9)
    novel = psi_categorical(reference, pd.Series(["a", "c", "c", None] * 10), "color")
    assert novel.psi > 1 and (UNSEEN in novel.detail or MISSING in novel.detail)


def test_feature_drift_picks_the_measure_by_dtype_and_flags_only_the_moved_feature() -> None:
    rng = np.random.default_rng(1)
    reference = pd.DataFrame({"x": rng.uniform(0, 1, 1000), "c": rng.choice(["u", "v"], 1000)})
    recent = pd.DataFrame({"x": rng.uniform(0, 1, 500), "c": ["u"] * 450 + ["v"] * 50})
    found = {d.feature: d for d in feature_drift(reference, recent, ["x", "c", "not_there"], 10)}
    assert set(found) == {"x", "c"}
    assert found["x"].kind == "numeric" and not found["x"].drifted(0.25)
    assert found["c"].kind == "categorical" and found["c"].drifted(0.25)


def test_prediction_drift_reports_the_mean_move() -> None:
    rng = np.random.default_rng(2)
    drift = prediction_drift(rng.normal(100, 10, 1000), rng.normal(160, 10, 1000), 10)
    assert drift.kind == "prediction" and drift.psi > 1
    assert drift.detail.startswith("mean 99.78 → 159.1")


def test_request_log_reads_every_parquet_file_and_keeps_the_window(tmp_path: Path) -> None:
    assert read_request_log(tmp_path / "absent").empty
    now = pd.Timestamp.now(tz="UTC")
    for i, age in enumerate([pd.Timedelta(days=30), pd.Timedelta(hours=1)]):
        pd.DataFrame({"temp": [1.0, 2.0], "_ts": [now - age] * 2, "_model": "bike:x", "_request_id": f"r{i}",
                      "_prediction": [3.0, 4.0]}).to_parquet(tmp_path / f"part-{i}.parquet")  # fmt: skip
    assert len(read_request_log(tmp_path)) == 4
    recent = read_request_log(tmp_path, now - pd.Timedelta(days=7))
    assert recent["_request_id"].tolist() == ["r1", "r1"]
