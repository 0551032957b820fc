"""The pandas-free encoding of the service equals `apply_preprocessor` on the same records, feature by feature, and so
does the frame encoding of the Python API."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mlcycle.schemas import load_config
from mlcycle.schemas.adult import AdultFeatures
from mlcycle.schemas.api import record_model
from mlcycle.schemas.bike import BikeFeatures
from mlcycle.schemas.config import DerivedFeature, PreprocessConfig
from mlcycle.tasks.preprocess import (
    apply_preprocessor,
    encode_frame,
    encode_records,
    fit_preprocessor,
    unseen_categories,
)
from mlcycle.tasks.records import check_records
from mlcycle.tasks.train.prepare import feature_columns
from tests.conftest import ROOT, adult_rows
from tests.service_models import bike_rows


def _both(dataset: str, config: PreprocessConfig, records: list[dict], train: pd.DataFrame):  # type: ignore[no-untyped-def]
    schema = AdultFeatures if dataset == "adult" else BikeFeatures
    pipeline = load_config(ROOT / "configs" / f"{dataset}.yaml").model_copy(update={"preprocess": config})
    spec = fit_preprocessor(train, feature_columns(list(train.columns), pipeline), config)
    frame, errors = check_records(records, schema, 10_000)
    assert frame is not None, errors
    prepared = apply_preprocessor(spec, frame)
    rows, errors = record_model(schema).validate_python(records)
    assert not errors
    fast, unseen = encode_records(spec, rows)
    slow = np.column_stack([prepared[c].cat.codes.where(prepared[c].notna(), np.nan).astype("float64")
                            if isinstance(prepared[c].dtype, pd.CategoricalDtype) else prepared[c].to_numpy("float64")
                            for c in prepared.columns])  # fmt: skip
    # The frame path of the Python API (`mlcycle.load(...).predict`): the same numbers for a whole frame at once.
    framed, framed_unseen = encode_frame(spec, frame)
    np.testing.assert_array_equal(framed, slow)
    assert framed_unseen == unseen
    return fast, slow, unseen, unseen_categories(spec, frame, prepared)


@pytest.mark.parametrize("config", [PreprocessConfig(), PreprocessConfig(impute="median", scale="standard"),
                                    PreprocessConfig(scale="robust"), PreprocessConfig(impute="median", scale="minmax")])  # fmt: skip
def test_adult_fast_encoding_equals_pandas(config: PreprocessConfig) -> None:
    golden = json.loads((ROOT / "serving/examples/adult.json").read_text())
    fast, slow, unseen, expected_unseen = _both("adult", config, golden, adult_rows(200))
    np.testing.assert_array_equal(fast, slow)  # NaN in the same places, codes and scaled numbers bit-equal
    assert unseen == expected_unseen and unseen  # the tiny training set lacks some golden categories


def test_bike_fast_encoding_with_derived_features_equals_pandas() -> None:
    golden = json.loads((ROOT / "serving/examples/bike.json").read_text())
    pipeline = load_config(ROOT / "configs/bike.yaml")
    extra = [DerivedFeature(name=f"date_{k}", source="dteday", kind=k) for k in ("dayofweek", "hour")]  # type: ignore[arg-type]
    config = pipeline.preprocess.model_copy(update={"derived": [*pipeline.preprocess.derived, *extra],
                                                    "impute": "median"})  # fmt: skip
    train = bike_rows(300)
    fast, slow, unseen, expected_unseen = _both("bike", config, golden, train)
    assert fast.shape[1] == 9 + 6  # nine request columns kept, six derived (clock hour and five date parts)
    np.testing.assert_array_equal(fast, slow)
    assert unseen == expected_unseen


def test_a_derived_hour_as_a_category_encodes_alike_and_a_missing_time_is_missing_not_unseen() -> None:
    """An hour of the day is a category (as `init` drafts it): its levels are the hours training saw; a record
    without a time has no hour, which is missing, as in the frame, and not an unseen value."""
    derived = [DerivedFeature(name="t_hour", source="t", kind="hour"), DerivedFeature(name="h", source="hr",
                                                                                      kind="clock_hour")]  # fmt: skip
    config = PreprocessConfig(derived=derived, categorical=["t_hour", "h"])
    train = pd.DataFrame({"t": ["2021-03-04T06:00:00", "2021-03-04T17:30:00Z"], "hr": ["6am", "5pm"]})
    spec = fit_preprocessor(train, ["t_hour", "h"], config)
    assert [f.categories for f in spec.features] == [["17", "6"], ["17", "6"]]
    values = [("2021-03-05T06:10:00", "6 AM"), ("2021-03-05T09:00:00", "9am"), (None, None)]
    frame = pd.DataFrame(values, columns=["t", "hr"])
    prepared = apply_preprocessor(spec, frame)
    fast, unseen = encode_records(spec, [{"t": t, "hr": h} for t, h in values])
    slow = np.column_stack([prepared[c].cat.codes.where(prepared[c].notna(), np.nan).astype("float64")
                            for c in prepared.columns])  # fmt: skip
    np.testing.assert_array_equal(fast, slow)
    assert fast[0].tolist() == [1.0, 1.0] and np.isnan(fast[1:]).all()
    assert unseen == unseen_categories(spec, frame, prepared) == {"t_hour": 1, "h": 1}  # 9 o'clock only


def test_iso_timestamps_with_zones_encode_alike_record_by_record_and_as_a_frame() -> None:
    """ISO 8601 timestamps (`Z`, offsets, a space, fractions) give the service's records the numbers training's
    frames give: days since 1970, month, day of week and hour, all read in UTC."""
    values = ["2021-03-04T10:00:00Z", "2021-03-04T10:00:00+02:00", "2021-03-04 23:30:00-05:00",
              "2021-03-04T10:00:00.123456", "2021-03-04T10:00", "2021-03-04T10:00:00+0530", "1969-12-31T23:59:59.5Z",
              "2024-02-29T00:00:00.25+01:00", "2021-03-04", None]  # fmt: skip
    derived = [DerivedFeature(name=f"t_{k}", source="t", kind=k) for k in ("days", "month", "dayofweek", "hour")]  # type: ignore[arg-type]
    frame = pd.DataFrame({"t": values})
    spec = fit_preprocessor(frame, [d.name for d in derived], PreprocessConfig(derived=derived))
    prepared = apply_preprocessor(spec, frame)
    fast, _ = encode_records(spec, [{"t": v} for v in values])
    np.testing.assert_array_equal(fast, prepared.to_numpy("float64"))  # bit-equal, NaN in the same places
    assert prepared["t_hour"].tolist()[:3] == [10.0, 8.0, 4.0]  # 23:30 at -05:00 is 04:30 UTC
    assert prepared["t_dayofweek"].tolist()[2] == 4.0  # ... on the Friday
