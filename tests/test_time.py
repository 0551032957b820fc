"""Time as people write it: ISO timestamps with `Z` and offsets, numeric periods as time columns, a time split cut
at a date, and codes that a time split makes useless. Small files written in each test."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest
import yaml

from mlcycle.schemas import load_schema_file
from mlcycle.schemas.config import DerivedFeature, ParseRule, PipelineConfig, SplitConfig
from mlcycle.tasks.ingest.draft import Column, DraftError, config_yaml, draft_dataset, schema_module, summary_lines
from mlcycle.tasks.ingest.read import parse_column
from mlcycle.tasks.preprocess import derive_features, parse_times
from mlcycle.tasks.train.prepare import LeakageError, Splits, find_leaks, split_frame, time_key

TODAY = datetime(2026, 12, 4, tzinfo=UTC)
# one moment written four ways: 08:00 UTC
SAME_MOMENT = ["2021-03-04T08:00:00Z", "2021-03-04T10:00:00+02:00", "2021-03-04 03:00:00-05:00",
               "2021-03-04T08:00:00.000Z"]  # fmt: skip


def _config(draft, tmp_path: Path) -> PipelineConfig:  # type: ignore[no-untyped-def]
    return PipelineConfig.model_validate(yaml.safe_load(config_yaml(draft, f"schemas/{draft.name}.py")))


def _import(path: Path, source: str) -> ModuleType:
    """A drafted schema module, written and loaded as the training flow loads a project's schema file."""
    path.write_text(source)
    return load_schema_file(path)


def _column(draft, name: str) -> Column:  # type: ignore[no-untyped-def]
    return next(c for c in draft.columns if c.name == name)


def trips_file(folder: Path, rows: int = 400) -> Path:
    """Trips of 2021 with ISO timestamps as exports write them: `Z`, offsets, a space, fractions of a second."""
    rng = random.Random(3)
    start = datetime(2021, 1, 1, tzinfo=UTC)
    lines = ["departure,distance,delay"]
    for i in range(rows):
        moment = start + timedelta(hours=i * 21 + rng.randint(0, 5))
        forms = [moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
                 moment.astimezone(tz=__import__("datetime").timezone(timedelta(hours=2))).isoformat(),
                 moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "+00:00"]  # fmt: skip
        lines.append(f"{forms[i % 3]},{rng.randint(1, 300)},{rng.randint(0, 90)}")
    path = folder / "trips.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_iso_timestamps_with_zones_are_read_as_one_utc_moment() -> None:
    when = parse_times(pd.Series([*SAME_MOMENT, None, "not a time"], dtype=object))
    assert when.iloc[:4].tolist() == [pd.Timestamp("2021-03-04 08:00:00")] * 4
    assert when.iloc[4:].isna().all()
    parts = derive_features(pd.DataFrame({"t": SAME_MOMENT}), [DerivedFeature(name="h", source="t", kind="hour")])
    assert parts["h"].tolist() == [8.0] * 4


def test_a_parse_rule_writes_a_zoned_time_as_utc() -> None:
    iso, failed = parse_column(
        pd.Series([*SAME_MOMENT[:2], "2021-13-01T00:00Z"]), ParseRule(kind="date", format="ISO8601")
    )
    assert iso.tolist()[:2] == ["2021-03-04T08:00:00"] * 2 and failed.tolist() == [False, False, True]
    offset, _ = parse_column(pd.Series(["04/03/2021 10:00 +0200"]), ParseRule(kind="date", format="%d/%m/%Y %H:%M %z"))
    assert offset.tolist() == ["2021-03-04T08:00:00"]


def test_init_types_iso_timestamps_as_dates_with_an_hour(tmp_path: Path) -> None:
    draft = draft_dataset(trips_file(tmp_path), "delay", task="regression", today=TODAY)
    departure = _column(draft, "departure")
    assert departure.kind == "date" and departure.has_time and departure.unreadable == 0
    assert {d["kind"] for d in draft.derived if d["source"] == "departure"} == {"days", "month", "dayofweek", "hour"}
    assert _config(draft, tmp_path).preprocess.categorical == ["departure_hour"]  # the hour of the day: a category
    # the drafted schema accepts every form the file writes, and refuses what is no moment
    module = _import(tmp_path / "trips_schema.py", schema_module(draft))
    rows = pd.DataFrame({"departure": SAME_MOMENT, "distance": [5] * 4, "delay": [1] * 4})
    assert len(module.TripsSchema.validate(rows)) == 4
    with pytest.raises(Exception, match="departure"):
        module.TripsSchema.validate(rows.assign(departure=["2021-03-04T25:00:00Z"] * 4))


def test_time_column_on_iso_timestamps_splits_by_utc_time(tmp_path: Path) -> None:
    draft = draft_dataset(trips_file(tmp_path), "delay", task="regression", time_column="departure", today=TODAY)
    assert draft.split["time_columns"] == ["departure"] and draft.split["strategy"] == "time"
    frame = pd.read_csv(trips_file(tmp_path), dtype={"departure": str})
    splits = split_frame(frame, pd.Series("", index=frame.index), _config(draft, tmp_path))
    key = time_key(frame, ["departure"])
    assert key[splits.train.index].max() < key[splits.valid.index].min() <= key[splits.valid.index].max()
    assert key[splits.valid.index].max() < key[splits.test.index].min()


def _monthly_file(folder: Path, years: tuple[int, ...] = (2019, 2020, 2021), per_month: int = 25) -> Path:
    rng = random.Random(5)
    lines = ["year,month,price,sales"]
    for year in years:
        for month in range(1, 13):
            lines += [f"{year},{month},{rng.randint(5, 50)},{rng.randint(0, 900)}" for _ in range(per_month)]
    path = folder / "monthly.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_time_column_month_uses_the_year_beside_it_and_becomes_a_number(tmp_path: Path) -> None:
    path = _monthly_file(tmp_path)
    plain = draft_dataset(path, "sales", task="regression", today=TODAY)
    assert _column(plain, "month").kind == "code"  # 12 values, each seen often: a code, without a time split
    draft = draft_dataset(path, "sales", task="regression", time_column="month", today=TODAY)
    assert draft.split["time_columns"] == ["year", "month"]
    assert _column(draft, "month").kind == "integer" and _column(draft, "year").kind == "integer"
    config = _config(draft, tmp_path)
    assert "month" not in config.preprocess.categorical
    frame = pd.read_csv(path)
    key = time_key(frame, config.split.time_columns)
    assert key.iloc[0] == pd.Timestamp("2019-01-01") and key.iloc[-1] == pd.Timestamp("2021-12-01")
    splits = split_frame(frame, pd.Series("", index=frame.index), config)
    # the latest 15% of 36 months: July to December 2021, whole months
    assert splits.test["year"].eq(2021).all() and set(splits.test["month"]) == set(range(7, 13))


def test_time_column_year_and_epoch_seconds_order_the_rows() -> None:
    frame = pd.DataFrame({"year": [2021, 2019, 2020], "epoch": [1_640_995_200, 1_546_300_800, 1_577_836_800]})
    assert time_key(frame, ["year"]).tolist() == [pd.Timestamp(f"{y}-01-01") for y in (2021, 2019, 2020)]
    assert time_key(frame, ["epoch"]).tolist() == [pd.Timestamp(f"{y}-01-01") for y in (2022, 2019, 2020)]
    assert time_key(pd.DataFrame({"period": [3, 1, 2]}), ["period"]).tolist() == [3.0, 1.0, 2.0]


def test_a_time_column_of_text_is_refused_showing_the_text(tmp_path: Path) -> None:
    path = tmp_path / "days.csv"
    path.write_text("weekday,sales\n" + "\n".join(f"{d},{i}" for i, d in enumerate(["Mon", "Tue", "Wed"] * 20)) + "\n")
    with pytest.raises(DraftError, match=r"--time-column 'weekday' holds neither dates nor numbers \(e\.g\. 'Mon'\)"):
        draft_dataset(path, "sales", task="regression", time_column="weekday", today=TODAY)


def _daily_file(folder: Path) -> Path:
    """Every day of 2021, three rows a day, with a month code (as an export writes it) and a weekday number."""
    rng = random.Random(11)
    lines = ["day,month,weekday,temp,sales"]
    for offset in range(365):
        day = date(2021, 1, 1) + timedelta(days=offset)
        lines += [f"{day.isoformat()},{day.month},{day.weekday()},{rng.uniform(-5, 30):.1f},{rng.randint(0, 500)}"
                  for _ in range(3)]  # fmt: skip
    path = folder / "daily.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_test_from_cuts_the_test_part_at_a_date(tmp_path: Path) -> None:
    path = _daily_file(tmp_path)
    draft = draft_dataset(path, "sales", task="regression", time_column="day", test_from="2021-11-01", today=TODAY)
    assert draft.split["test_from"] == "2021-11-01"
    assert any(line.startswith("split: time by ['day']") and "test from 2021-11-01" in line
               for line in summary_lines(draft))  # fmt: skip
    config = _config(draft, tmp_path)
    assert config.split.test_from == "2021-11-01"
    frame = pd.read_csv(path, dtype={"day": str})
    splits = split_frame(frame, pd.Series("", index=frame.index), config)
    assert (splits.test["day"] >= "2021-11-01").all() and len(splits.test) == 61 * 3
    assert not splits.test["day"].str.startswith("2021-10").any()  # no row of the last training month in test
    assert (splits.valid["day"] < "2021-11-01").all() and splits.train["day"].max() < splits.valid["day"].min()
    # the last 15% of the rows before the cut validate
    assert len(splits.valid) == pytest.approx(0.15 * 304 * 3, abs=3)


def test_valid_from_and_test_from_win_over_the_shares() -> None:
    frame = pd.DataFrame({"t": list(range(1, 101)), "y": 0.0})
    split = SplitConfig(strategy="time", time_columns=["t"], valid_from=61, test_from=91)
    config = PipelineConfig.model_validate({"name": "p", "schema_ref": "mlcycle.schemas.adult:AdultSchema",
                                            "features_schema_ref": "mlcycle.schemas.adult:AdultFeatures",
                                            "target": "y", "task": "regression", "split": split.model_dump(),
                                            "source": {"files": [{"path": "unused"}]}})  # fmt: skip
    splits = split_frame(frame, pd.Series("", index=frame.index), config)
    assert splits.sizes() == {"train": 60, "valid": 30, "test": 10}


def test_a_cut_that_empties_a_part_names_the_cut_and_the_range(tmp_path: Path) -> None:
    path = _daily_file(tmp_path)
    with pytest.raises(DraftError, match=r"--test-from 2022-03-01 leaves no test rows: the time columns \['day'\] run "
                                         r"from 2021-01-01 to 2021-12-31"):  # fmt: skip
        draft_dataset(path, "sales", task="regression", time_column="day", test_from="2022-03-01", today=TODAY)
    with pytest.raises(DraftError, match="--valid-from 2021-12-01 is not before --test-from 2021-11-01"):
        draft_dataset(path, "sales", task="regression", time_column="day", test_from="2021-11-01",
                      valid_from="2021-12-01", today=TODAY)  # fmt: skip
    frame = pd.DataFrame({"t": [1, 2, 3], "y": 0.0})
    with pytest.raises(LeakageError, match=r"split.valid_from 1 leaves no training rows: the time columns \['t'\]"):
        from mlcycle.tasks.train.prepare import _time_split

        _time_split(frame, SplitConfig(strategy="time", time_columns=["t"], valid_from=1, test_from=3), False,
                    pd.Series(False, index=frame.index))  # fmt: skip


def test_a_cut_needs_a_time_split_and_keeps_what_yaml_read() -> None:
    with pytest.raises(ValueError, match="split.test_from cuts a time split"):
        SplitConfig(test_from="2021-11-01")
    loaded = yaml.safe_load(
        "strategy: time\ntime_columns: [d]\ntest_from: 2021-11-01\nvalid_from: 2021-09-01T00:00:00Z"
    )
    split = SplitConfig.model_validate(loaded)
    assert split.test_from == "2021-11-01" and split.valid_from == "2021-09-01T00:00:00+00:00"


def test_a_month_code_under_a_time_split_is_typed_as_a_number(tmp_path: Path) -> None:
    path = _daily_file(tmp_path)
    random_split = draft_dataset(path, "sales", task="regression", today=TODAY)
    assert _column(random_split, "month").kind == "code" and _column(random_split, "weekday").kind == "code"
    draft = draft_dataset(path, "sales", task="regression", time_column="day", test_from="2021-11-01", today=TODAY)
    assert _column(draft, "month").kind == "integer" and _column(draft, "weekday").kind == "integer"
    assert not {"month", "weekday"} & set(_config(draft, tmp_path).preprocess.categorical)


def test_training_names_a_category_mostly_unseen_in_training() -> None:
    train = pd.DataFrame({"month": [str(m) for m in range(1, 11)] * 3, "shop": ["a", "b"] * 15, "y": 1.0})
    later = pd.DataFrame({"month": ["11"] * 10 + ["12"] * 10, "shop": ["a", "b"] * 10, "y": 1.0})
    config = PipelineConfig.model_validate({"name": "p", "schema_ref": "mlcycle.schemas.adult:AdultSchema",
                                            "features_schema_ref": "mlcycle.schemas.adult:AdultFeatures",
                                            "target": "y", "task": "regression", "split": {"strategy": "random"},
                                            "source": {"files": [{"path": "unused"}]}})  # fmt: skip
    report = find_leaks(Splits(train=train, valid=later.iloc[:10], test=later.iloc[10:]), ["month", "shop"], config)
    assert [(u["column"], u["part"], u["share"]) for u in report.unseen] == [("month", "validation", 1.0),
                                                                            ("month", "test", 1.0)]  # fmt: skip
    assert any(line.startswith("mostly unseen in training: month") for line in report.lines())


def test_under_a_time_split_a_date_enters_as_its_year_and_clock_hours_as_categories(tmp_path: Path) -> None:
    """Every test day is later than any training day, so `days since 1970` would put them all past the training
    range; the year was seen in training. Hours written `6am` enter as the hour 0-23 (`6 AM` is the same hour), a
    category: one split groups a day's peaks."""
    rows = [f"2021-{1 + i % 12:02d}-{1 + i % 28:02d},{(i % 12) or 12}{'am' if i % 24 < 12 else 'pm'},{i % 7}"
            for i in range(300)]  # fmt: skip
    path = tmp_path / "rides.csv"
    path.write_text("day,hr,rides\n" + "\n".join(rows) + "\n")
    by_time = draft_dataset(path, "rides", time_column="day", task="regression")
    kinds = {d["name"]: d["kind"] for d in by_time.derived}
    assert kinds == {"day_year": "year", "day_month": "month", "day_dayofweek": "dayofweek", "hr_hour": "clock_hour"}
    assert _config(by_time, tmp_path).preprocess.categorical == ["hr_hour"]
    shuffled = draft_dataset(path, "rides", task="regression")
    assert {d["kind"] for d in shuffled.derived if d["source"] == "day"} == {"days", "month", "dayofweek"}
