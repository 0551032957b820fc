"""Categorical features with thousands of values keep the frequent ones and one `other` level, decided in the
fitted preprocessing, so the pandas path, the service's records path and an exported predictor map alike."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mlcycle.schemas.config import DerivedFeature, PreprocessConfig
from mlcycle.tasks.preprocess import OTHER, apply_preprocessor, encode_records, fit_preprocessor, unseen_categories
from mlcycle.tasks.registry.export_predictor import prepare as exported_prepare

CITIES = [f"city{i:03d}" for i in range(300)]


def city_frame() -> pd.DataFrame:
    # city000 appears 300 times, city001 299 times, ... city299 once: a long tail
    cities = [c for i, c in enumerate(CITIES) for _ in range(300 - i)]
    return pd.DataFrame({"city": cities, "code": [i % 7 for i in range(len(cities))]})


def test_a_long_tail_keeps_the_most_frequent_values_and_one_other_level() -> None:
    config = PreprocessConfig(max_categories=50, min_category_rows=10)
    spec = fit_preprocessor(city_frame(), ["city"], config)
    (feature,) = spec.features
    assert feature.other and feature.categories is not None
    assert len(feature.categories) == 50 and feature.categories[-1] == OTHER
    assert set(feature.categories[:-1]) == set(CITIES[:49])  # the 49 most frequent


def test_rare_values_go_to_other_even_when_fewer_than_the_cap() -> None:
    spec = fit_preprocessor(city_frame(), ["city"], PreprocessConfig(max_categories=290, min_category_rows=200))
    kept = spec.features[0].categories
    assert kept is not None and kept[-1] == OTHER
    assert kept[:-1] == sorted(CITIES[:101])  # 300 - i >= 200: the first 101


def test_few_values_keep_them_all_and_unseen_stays_missing() -> None:
    spec = fit_preprocessor(city_frame(), ["code"], PreprocessConfig(categorical=["code"]))
    (feature,) = spec.features
    assert feature.kind == "categorical" and not feature.other
    assert feature.categories == [str(i) for i in range(7)]
    frame = pd.DataFrame({"code": [3, 9, None]})
    prepared = apply_preprocessor(spec, frame)
    assert prepared["code"].iloc[0] == "3" and prepared["code"].isna().tolist() == [False, True, True]
    assert unseen_categories(spec, frame, prepared) == {"code": 1}


def test_training_serving_and_export_map_every_value_alike() -> None:
    config = PreprocessConfig(max_categories=50, categorical=["code"],
                              derived=[DerivedFeature(name="days", source="day", kind="days")])  # fmt: skip
    train = city_frame().assign(day="2024-01-02")
    spec = fit_preprocessor(train, ["city", "code", "days"], config)
    records = [{"city": "city000", "code": 3, "day": "1970-01-11"}, {"city": "city299", "code": 6.0, "day": None},
               {"city": "nowhere", "code": None, "day": "2024-02-29"}, {"city": None, "code": 11, "day": "1969-12-31"}]  # fmt: skip
    frame = pd.DataFrame(records)
    prepared = apply_preprocessor(spec, frame)
    pandas_codes = np.column_stack([
        prepared["city"].cat.codes.replace(-1, np.nan).to_numpy(dtype=float),
        prepared["code"].cat.codes.replace(-1, np.nan).to_numpy(dtype=float),
        prepared["days"].to_numpy(dtype=float),
    ])  # fmt: skip
    fast, unseen = encode_records(spec, records)
    exported = exported_prepare(spec.model_dump(), records).astype(np.float64)
    np.testing.assert_array_equal(fast, pandas_codes)
    np.testing.assert_array_equal(exported, pandas_codes)
    other = float(len(spec.features[0].categories or []) - 1)
    assert fast[1, 0] == other and fast[2, 0] == other and np.isnan(fast[3, 0])  # the tail and the unknown: other
    assert fast[0, 2] == 10.0 and fast[3, 2] == -1.0 and np.isnan(fast[1, 2])  # days since 1970-01-01
    assert unseen == {"code": 1}  # a capped feature counts nothing as unseen: `other` is its level for them
