"""The snapshot read in one streaming pass (tasks.train.dataset): the split it decides from narrow columns is the
split `split_frame` makes of the whole frame, the rows the driver holds are a seeded sample when the snapshot is
larger than that, and rows that no longer pass a changed schema are set aside."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlcycle.schemas import load_config
from mlcycle.schemas.config import PipelineConfig
from mlcycle.tasks.ingest.admit import admit_batch
from mlcycle.tasks.ingest.read import FileInput
from mlcycle.tasks.ingest.store import DatasetStore, read_curated, take_snapshot
from mlcycle.tasks.ingest.validate import validate_frame
from mlcycle.tasks.train.dataset import TEST, TRAIN, VALID, duplicated_in_train, scan_snapshot, scan_splits, split_codes
from mlcycle.tasks.train.prepare import _duplicates, split_frame
from tests.conftest import ROOT, adult_rows
from tests.ingest_fixtures import TinySchema, TinySchemaV2, admit_file, tiny_config


def _adult_store(tmp_path: Path, files: int = 3, rows: int = 400) -> tuple[DatasetStore, PipelineConfig]:
    """Adult rows in several batches (the last one pinned to the test part), the last read in 1 MB chunks."""
    from mlcycle.schemas.adult import AdultSchema

    config = load_config(ROOT / "configs/adult.yaml")
    store = DatasetStore(tmp_path / "adult")
    for i in range(files):
        frame = adult_rows(rows).assign(age=lambda f, i=i: 17 + (f.index * (i + 3)) % 70)
        path = tmp_path / f"adult-{i}.csv"
        frame.to_csv(path, index=False)
        result = admit_batch(FileInput(str(path), part="test" if i == files - 1 else ""), config, store, AdultSchema)
        assert result.outcome == "accepted", result.message
    return store, config


def _as_lists(frame: pd.DataFrame) -> list[list[object]]:
    return frame.astype(object).where(frame.notna(), None).values.tolist()


def test_the_scan_splits_the_rows_as_split_frame_splits_the_whole_frame(tmp_path: Path) -> None:
    from mlcycle.schemas.adult import AdultSchema

    store, config = _adult_store(tmp_path)
    snapshot = take_snapshot(store)
    raw = read_curated(store, snapshot.hash)
    before = split_frame(validate_frame(raw.frame, AdultSchema).valid, raw.origin["part"], config)

    scan = scan_snapshot(store, snapshot, config, AdultSchema)
    codes = split_codes(scan, config)
    after = scan_splits(scan, codes)

    assert scan.whole and not after.sampled and after.sizes() == before.sizes()
    assert after.sizes()["test"] == 400  # the pinned file
    for old, new in zip((before.train, before.valid, before.test), (after.train, after.valid, after.test), strict=True):
        assert list(new.index) == list(old.index) and _as_lists(new) == _as_lists(old[new.columns])
    assert duplicated_in_train(scan, codes) == _duplicates(after, list(after.train.columns))


def test_a_snapshot_larger_than_the_driver_holds_is_sampled_and_split_in_full(tmp_path: Path) -> None:
    from mlcycle.schemas.adult import AdultSchema

    store, config = _adult_store(tmp_path, files=2, rows=3000)
    config = config.model_copy(update={"split": config.split.model_copy(update={"strategy": "random"})})
    snapshot = take_snapshot(store)
    whole = scan_snapshot(store, snapshot, config, AdultSchema)
    scan = scan_snapshot(store, snapshot, config, AdultSchema, sample_rows=1000)
    codes = split_codes(scan, config)
    splits = scan_splits(scan, codes)

    assert not scan.whole and 800 < len(scan.sample) < 1200
    assert (split_codes(whole, config) == codes).all()  # the split does not depend on what the driver holds
    assert splits.sampled and splits.sizes() == {"train": int((codes == TRAIN).sum()),
                                                 "valid": int((codes == VALID).sum()), "test": 3000}  # fmt: skip
    assert _as_lists(scan.sample) == _as_lists(whole.sample.loc[scan.sample.index])  # the same values, a subset
    again = scan_snapshot(store, snapshot, config, AdultSchema, sample_rows=1000)
    assert list(again.sample.index) == list(scan.sample.index)  # seeded
    assert set(splits.test.index) <= set(np.flatnonzero(codes == TEST))


def test_source_sample_rows_keeps_the_rows_read_curated_keeps(tmp_path: Path) -> None:
    from mlcycle.schemas.adult import AdultSchema

    store, config = _adult_store(tmp_path, files=2, rows=300)
    config = config.model_copy(update={"source": config.source.model_copy(update={"sample_rows": 120})})
    snapshot = take_snapshot(store)
    raw = read_curated(store, snapshot.hash, sample_rows=120, seed=config.seed)
    scan = scan_snapshot(store, snapshot, config, AdultSchema)
    assert len(scan.index) == len(raw.frame) == 240
    assert _as_lists(scan.sample.reset_index(drop=True)) == _as_lists(raw.frame)


def test_rows_that_no_longer_pass_a_changed_schema_are_set_aside(tmp_path: Path) -> None:
    store = DatasetStore(tmp_path / "tiny")
    path = tmp_path / "tiny.csv"
    path.write_text(
        "id,color,score\n" + "".join(f"{i},{'purple' if i % 5 == 0 else 'red'},1.5\n" for i in range(1, 41))
    )
    config = tiny_config()
    result = admit_file(path, store, config, schema=TinySchemaV2)  # purple was allowed
    assert result.outcome == "accepted" and result.record is not None and result.record.rows_accepted == 40
    scan = scan_snapshot(store, take_snapshot(store), config, TinySchema)  # and is not any more
    assert len(scan.index) == 32 and scan.validated.rows_in == 40 and scan.validated.rows_quarantined == 8
    assert sorted(scan.quarantined["row"]) == [6, 11, 16, 21, 26, 31, 36, 41]  # their lines in the file
    assert (scan.quarantined["value_color"] == "purple").all()


def test_a_time_split_of_the_scan_is_split_frame_s(tmp_path: Path) -> None:
    from mlcycle.schemas.bike import BikeSchema
    from tests.conftest import BIKE_RECORD

    config = load_config(ROOT / "configs/bike.yaml")
    days = pd.date_range("2011-01-01", periods=60, freq="D").strftime("%Y-%m-%d")
    frame = pd.DataFrame([{**BIKE_RECORD, "dteday": d, "hr": h, "casual": 1, "registered": 2, "cnt": 3}
                          for d in days for h in ("6am", "5pm")]).sample(frac=1.0, random_state=0)  # fmt: skip
    store = DatasetStore(tmp_path / "bike")
    path = tmp_path / "bike.csv"
    frame.to_csv(path, index=False)
    assert admit_batch(FileInput(str(path)), config, store, BikeSchema).outcome == "accepted"
    snapshot = take_snapshot(store)
    raw = read_curated(store, snapshot.hash)
    before = split_frame(validate_frame(raw.frame, BikeSchema).valid, raw.origin["part"], config)
    scan = scan_snapshot(store, snapshot, config, BikeSchema)
    codes = split_codes(scan, config)
    after = scan_splits(scan, codes)
    assert (codes >= 0).all()
    for old, new in zip((before.train, before.valid, before.test), (after.train, after.valid, after.test), strict=True):
        assert sorted(new.index) == sorted(old.index) and len(new) > 0


def test_a_truncated_curated_part_stops_training_naming_the_file(tmp_path: Path) -> None:
    """A curated part damaged on disk is refused with its path and batch: nothing is trained on it."""
    from mlcycle.tasks.ingest.store import StoreError
    from mlcycle.tasks.train.dataset import snapshot_parts
    from tests.ingest_fixtures import good_rows

    store = DatasetStore(tmp_path / "store")
    (tmp_path / "a.csv").write_text("id,color,score\n" + good_rows(40))
    batch = admit_file(tmp_path / "a.csv", store).record
    assert batch is not None
    part = store.curated_files(batch.batch_id)[0]
    part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])
    with pytest.raises(StoreError, match=rf"{part.name}.*batch {batch.batch_id} cannot be read"):
        snapshot_parts(store, take_snapshot(store))
