"""The training rows of a snapshot, read from the curated store in bounded memory.

One streaming pass over the snapshot's Parquet parts (a record batch at a time) keeps, for every row, what the split
and the checks need — its place, the target, the pinned part, the slice and time columns and a hash of its values —
and all the values of a seeded sample of rows (of every row when the snapshot has at most `SAMPLE_ROWS`). The split
is decided on those narrow columns as `split_frame` decides it on a whole frame, so it is the same split. The
sample serves the leakage scan, the preprocessing fit, the reference models, and the test rows that evaluation and
the gate score.

The model-ready training and validation rows then come as a `StreamedData` (tasks.train.boost): Ray Data reads the
curated Parquet on the Ray workers, keeps each split's rows and applies the fitted preprocessing there, so they never
pass through the driver's memory; trials build XGBoost's input from those blocks batch by batch. When every row fits
in the sample and no Ray cluster is configured, the frames are built in the driver as before (`TrainingData`).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa

from mlcycle.schemas import schema_fingerprint
from mlcycle.schemas.config import PipelineConfig
from mlcycle.tasks.ingest.store import ROW_COLUMN, DatasetStore, Snapshot, StoreError, list_batches
from mlcycle.tasks.ingest.validate import Validated, validate_frame
from mlcycle.tasks.preprocess import PreprocessorSpec, apply_preprocessor
from mlcycle.tasks.train.boost import LABEL, WEIGHT, StreamedData, TrainingData
from mlcycle.tasks.train.prepare import Splits, encode_target, sample_weights, split_positions

log = logging.getLogger("mlcycle.dataset")

SAMPLE_ROWS = 1_000_000  # rows whose every value the driver holds; a snapshot of at most this many is held whole
BATCH_ROWS = 262_144  # rows read from a Parquet part at a time
TRAIN, VALID, TEST = 0, 1, 2


@dataclass(frozen=True)
class SnapshotScan:
    """What one pass over a snapshot kept.

    `index`: one line per row that passes the schema, in snapshot order (its position is the row's place in the
    split): `file` (into `files`), `_row`, the target and time columns, and `hash` (of all its values).
    `sample`: every value of the sampled rows, indexed by their position in `index`.
    `validated`: the rows that no longer pass the schema (a schema changed since ingest), as `validate_frame`
    reports them (`row`: the place among all rows read), and `quarantined` their origin and values.
    """

    index: pd.DataFrame
    sample: pd.DataFrame
    files: list[str]
    sources: list[tuple[str, str, str]]  # per file: batch id, source, part
    validated: Validated
    quarantined: pd.DataFrame
    content_hash: str
    whole: bool  # whether the sample holds every row

    @property
    def pinned(self) -> np.ndarray:
        """Whether each row of `index` belongs to a file the source pins to the test split."""
        test_files = np.array([part == "test" for _, _, part in self.sources] + [False])
        return test_files[self.index["file"].to_numpy()]


def snapshot_parts(store: DatasetStore, snapshot: Snapshot) -> tuple[list[str], list[tuple[str, str, str]]]:
    """The Parquet parts of a snapshot's batches in order, each with its batch id, source and part; checked
    against the registry's row counts."""

    records = {b.batch_id: b for b in list_batches(store)}
    files: list[str] = []
    sources: list[tuple[str, str, str]] = []
    for batch_id in snapshot.batch_ids:
        record = records.get(batch_id)
        if record is None or record.status != "accepted":
            raise StoreError(
                f"{store.root.name}: snapshot {snapshot.hash} names batch {batch_id}, which is not accepted"
            )
        parts = store.curated_files(batch_id)
        rows = sum(_part_rows(p, batch_id) for p in parts)
        if rows != record.rows_accepted:
            raise StoreError(f"{store.curated_file(batch_id).parent}: {rows} rows, the registry says "
                             f"{record.rows_accepted}")  # fmt: skip
        files.extend(str(p.resolve()) for p in parts)
        sources.extend((batch_id, record.source, record.part) for _ in parts)
    return files, sources


def _part_rows(path: Path, batch_id: str) -> int:
    """A curated part's row count from its footer; a part that cannot be read (truncated, overwritten) stops the run,
    naming the file: nothing is trained on a damaged store."""
    import pyarrow as pyarrow_lib
    import pyarrow.parquet as pq

    try:
        return int(pq.ParquetFile(path).metadata.num_rows)
    except (OSError, pyarrow_lib.ArrowException) as exc:
        raise StoreError(f"{path}: the curated part of batch {batch_id} cannot be read ({exc}); restore it, or "
                         "ingest its raw copy again (`raw/` keeps every input)") from None  # fmt: skip


def scan_snapshot(
    store: DatasetStore,
    snapshot: Snapshot,
    config: PipelineConfig,
    schema: type[pa.DataFrameModel],
    sample_rows: int | None = None,
) -> SnapshotScan:
    """Read a snapshot once, a record batch at a time (see the module's docstring), the driver holding every value
    of `sample_rows` rows at most (default `SAMPLE_ROWS`). `source.sample_rows` keeps a seeded sample per batch,
    the same rows `read_curated` keeps."""
    import pyarrow.parquet as pq

    sample_rows = SAMPLE_ROWS if sample_rows is None else sample_rows
    files, sources = snapshot_parts(store, snapshot)
    schema_hash = schema_fingerprint(schema)
    current = {b.batch_id: b.schema_hash == schema_hash for b in list_batches(store, status="accepted")}
    narrow = list(dict.fromkeys([config.target, *config.split.time_columns]))
    kept = _per_batch_sample(files, sources, config)
    total = sum(
        int(k.sum()) if k is not None else pq.ParquetFile(f).metadata.num_rows for f, k in zip(files, kept, strict=True)
    )
    share = min(1.0, sample_rows / max(1, total))
    index_parts: list[pd.DataFrame] = []
    sample_parts: list[pd.DataFrame] = []
    failed: list[pd.DataFrame] = []
    ledgers: list[pd.DataFrame] = []
    position = read = 0
    for number, (path, (batch_id, source, part)) in enumerate(zip(files, sources, strict=True)):
        start = 0
        for record_batch in pq.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS):
            frame = record_batch.to_pandas()
            if kept[number] is not None:
                frame = frame[kept[number][start : start + len(frame)]]
            start += record_batch.num_rows
            rows = frame.pop(ROW_COLUMN).to_numpy()
            frame.index = pd.RangeIndex(read, read + len(frame))
            read += len(frame)
            if not current.get(batch_id, False):
                # Curated under another schema: validated again, as a training run always did.
                checked = validate_frame(frame, schema, what=config.name)
                keep = frame.index.isin(checked.valid.index)
                if not checked.quarantine.empty:
                    ledgers.append(checked.quarantine)
                    origin = pd.DataFrame({"file": source, "row": rows, "part": part, "batch_id": batch_id},
                                          index=frame.index)  # fmt: skip
                    failed.append(origin[~keep].join(frame[~keep].astype("string").add_prefix("value_")))
                frame, rows = checked.valid, rows[keep]
            positions = pd.RangeIndex(position, position + len(frame))
            position += len(frame)
            index_parts.append(pd.DataFrame(
                {"file": np.full(len(frame), number, dtype=np.int32), ROW_COLUMN: rows,
                 **{c: frame[c].array for c in narrow}, "hash": pd.util.hash_pandas_object(frame, index=False).array},
                index=positions,
            ))  # fmt: skip
            drawn = _drawn(rows, batch_id, config.seed, share)
            if drawn.any():
                sample_parts.append(frame[drawn].set_axis(positions[drawn]))
    index = pd.concat(index_parts) if index_parts else pd.DataFrame(columns=["file", ROW_COLUMN, *narrow, "hash"])
    sample = pd.concat(sample_parts) if sample_parts else pd.DataFrame()
    columns = ["row", "column", "check", "value"]
    quarantine = pd.concat(ledgers, ignore_index=True) if ledgers else pd.DataFrame(columns=columns)
    validated = Validated(valid=sample.iloc[0:0], quarantine=quarantine, rows_in=read)
    log.info("snapshot %s: %d rows in %d part(s), %d of them held in the driver",
             snapshot.hash, len(index), len(files), len(sample))  # fmt: skip
    return SnapshotScan(index=index, sample=sample, files=files, sources=sources, validated=validated,
                        quarantined=pd.concat(failed) if failed else pd.DataFrame(), content_hash=snapshot.hash,
                        whole=len(sample) == len(index))  # fmt: skip


def _per_batch_sample(
    files: list[str], sources: list[tuple[str, str, str]], config: PipelineConfig
) -> list[np.ndarray | None]:
    """Per file, which rows `source.sample_rows` keeps (None: all): pandas' seeded sample of each batch's rows,
    as `read_curated` draws it."""
    import pyarrow.parquet as pq

    wanted = config.source.sample_rows
    if wanted is None:
        return [None] * len(files)
    sizes = [pq.ParquetFile(f).metadata.num_rows for f in files]
    batches: dict[str, list[int]] = {}
    for number, (batch_id, _, _) in enumerate(sources):
        batches.setdefault(batch_id, []).append(number)
    kept: list[np.ndarray | None] = [None] * len(files)
    for numbers in batches.values():
        rows = sum(sizes[n] for n in numbers)
        if rows <= wanted:
            continue
        chosen = np.zeros(rows, dtype=bool)
        chosen[pd.RangeIndex(rows).to_series().sample(n=wanted, random_state=config.seed).index] = True
        offset = 0
        for n in numbers:
            kept[n] = chosen[offset : offset + sizes[n]]
            offset += sizes[n]
    return kept


def _drawn(rows: np.ndarray, batch_id: str, seed: int, share: float) -> np.ndarray:
    """Whether each row is in the driver's sample: a seeded hash of its batch and row number below `share`."""
    if share >= 1.0:
        return np.ones(len(rows), dtype=bool)
    salt = np.uint64(int(hashlib.sha256(f"{seed}:{batch_id}".encode()).hexdigest()[:16], 16))
    hashed = pd.util.hash_array(rows.astype(np.uint64) ^ salt)
    return hashed < np.uint64(share * 2**64)


def split_codes(scan: SnapshotScan, config: PipelineConfig) -> np.ndarray:
    """TRAIN, VALID or TEST for every row of the scan's index: `split_frame`'s split of the same rows."""
    from mlcycle.tasks.train.prepare import _time_split

    pinned = scan.pinned
    index = scan.index
    codes = np.full(len(index), -1, dtype=np.int8)
    if config.split.strategy == "time":
        frame = index.reset_index(drop=True)
        splits = _time_split(frame, config.split, has_test=bool(pinned.any()), pinned=pd.Series(pinned))
        for code, part in enumerate((splits.train, splits.valid, splits.test)):
            codes[part.index.to_numpy()] = code
    else:
        for code, positions in enumerate(split_positions(index[config.target], pinned, config)):
            codes[positions] = code
    return codes


def scan_splits(scan: SnapshotScan, codes: np.ndarray) -> Splits:
    """The sampled rows of each split (every row of it when the sample holds the snapshot), with the split's full
    size."""
    sample_codes = codes[scan.sample.index.to_numpy()]
    parts = [scan.sample[sample_codes == code] for code in (TRAIN, VALID, TEST)]
    rows = {name: int((codes == code).sum()) for name, code in (("train", TRAIN), ("valid", VALID), ("test", TEST))}
    return Splits(*parts, rows=rows)


@dataclass(frozen=True)
class SplitSnapshot:
    """A scanned snapshot, split: every row's split (`codes`, per row of `scan.index`) and the driver's rows of each
    split. `scan` no longer holds the sample: its rows are in `splits`, once."""

    scan: SnapshotScan
    codes: np.ndarray
    splits: Splits


def split_snapshot(scan: SnapshotScan, config: PipelineConfig) -> SplitSnapshot:
    """`split_codes` and `scan_splits` of a scan, the sample handed over to the splits."""
    codes = split_codes(scan, config)
    return SplitSnapshot(replace(scan, sample=scan.sample.iloc[0:0]), codes, scan_splits(scan, codes))


def train_labels(split: SplitSnapshot, config: PipelineConfig) -> pd.Series:
    """The target of every training row (the index holds it for each row, the sample only for some): the classes a
    multiclass model predicts come from all of them, so a rare class outside the driver's sample is not lost."""
    return split.scan.index[config.target][split.codes == TRAIN]


def duplicated_in_train(scan: SnapshotScan, codes: np.ndarray) -> dict[str, int]:
    """Validation and test rows whose every value also stands in a training row (by the rows' hashes)."""
    hashes = scan.index["hash"].to_numpy()
    seen = hashes[codes == TRAIN]
    return {name: int(np.isin(hashes[codes == code], seen).sum()) for name, code in (("valid", VALID), ("test", TEST))}


def uses_ray_data(scan: SnapshotScan, config: PipelineConfig) -> bool:
    """Whether the model-ready rows come as Ray Data: the snapshot is larger than the driver's sample, or the
    search runs on a Ray cluster (the rows then go to the cluster from the curated store, not through the driver)."""
    return not scan.whole or bool(config.tune.ray_address or os.environ.get("RAY_ADDRESS"))


def frames_data(splits: Splits, preprocessor: PreprocessorSpec, config: PipelineConfig,
                classes: list[str]) -> TrainingData:  # fmt: skip
    """The model-ready training and validation frames, built in the driver: labels encoded by `classes` (a
    validation label outside them stops the run, by name), and the sample weights."""
    return TrainingData(
        x_train=apply_preprocessor(preprocessor, splits.train),
        y_train=encode_target(splits.train[config.target], config, classes),
        x_valid=apply_preprocessor(preprocessor, splits.valid),
        y_valid=encode_target(splits.valid[config.target], config, classes),
        w_train=sample_weights(splits.train, config),
        w_valid=sample_weights(splits.valid, config),
        num_class=len(classes) if config.task == "multiclass" else 0,
    )


def ray_data(
    scan: SnapshotScan, codes: np.ndarray, preprocessor: PreprocessorSpec, config: PipelineConfig, classes: list[str]
) -> StreamedData:
    """The model-ready training and validation rows as Ray Datasets: Ray's workers (on whichever nodes they run)
    read the curated Parquet parts a row group at a time, keep the split's rows and prepare them, and the blocks
    stay in Ray's object store; the driver only hands out the parts' paths and the split of their rows."""
    import ray
    import ray.data

    from mlcycle.tasks.train.tune import ensure_ray

    ensure_ray(config.tune.ray_address)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # one line per run in the logs, not bars
    # The blocks in the order of the files and their rows, as the frames hold them: XGBoost's row subsampling
    # draws by position, so the same rows in another order would grow other trees.
    context.execution_options.preserve_order = True
    lookup = {}
    file_numbers = scan.index["file"].to_numpy()
    rows = scan.index[ROW_COLUMN].to_numpy()
    for number, path in enumerate(scan.files):
        mine = file_numbers == number
        lookup[path] = (rows[mine], codes[mine])
    # In a list, so that Ray hands the tasks the reference, and each task reads the table from the object store.
    table = [ray.put(lookup)]
    # only the columns the preprocessing reads (a snapshot's free text, ids and leaks stay on disk)
    derived = {d.name for d in preprocessor.derived}
    needed = [ROW_COLUMN, config.target, *(f.name for f in preprocessor.features if f.name not in derived),
              *(d.source for d in preprocessor.derived), *([config.weight] if config.weight else [])]  # fmt: skip
    kwargs = {"table": table, "preprocessor": preprocessor, "config": config, "columns": [*dict.fromkeys(needed)],
              "classes": classes}  # fmt: skip
    datasets = []
    for code in (TRAIN, VALID):
        parts = ray.data.from_items([{"path": path} for path in scan.files], override_num_blocks=len(scan.files))
        prepared = parts.map_batches(_prepare_parts, batch_size=1, batch_format="numpy",
                                     fn_kwargs={**kwargs, "code": code})  # fmt: skip
        datasets.append(prepared.materialize())
    sizes = (int((codes == TRAIN).sum()), int((codes == VALID).sum()))
    log.info("prepared %d training and %d validation rows as Ray Data", *sizes)
    categories = {f.name: list(f.categories or []) for f in preprocessor.features if f.kind == "categorical"}
    return StreamedData(train=datasets[0], valid=datasets[1], columns=preprocessor.feature_names,
                        categories=categories, rows=sizes, weighted=config.weight is not None,
                        num_class=len(classes) if config.task == "multiclass" else 0)  # fmt: skip


def _prepare_parts(
    batch: dict[str, np.ndarray],
    table: list[Any],
    code: int,
    preprocessor: PreprocessorSpec,
    config: PipelineConfig,
    columns: list[str],
    classes: list[str],
) -> Iterator[pd.DataFrame]:
    """Curated parts → the rows of split `code`, model-ready, a row group at a time: numbers as float32, categories
    as their codes (int32, -1 missing), the encoded label and, where the config names one, the sample weight."""
    import pyarrow.parquet as pq
    import ray

    lookup = ray.get(table[0])
    for path in batch["path"]:
        known_rows, known_codes = lookup[str(path)]
        for record_batch in pq.ParquetFile(str(path)).iter_batches(batch_size=BATCH_ROWS // 4, columns=columns):
            frame = record_batch.to_pandas()
            rows = frame.pop(ROW_COLUMN).to_numpy()
            at = np.minimum(np.searchsorted(known_rows, rows), max(len(known_rows) - 1, 0))
            keep = (known_rows[at] == rows) & (known_codes[at] == code) if len(known_rows) else rows < 0
            chosen = frame[keep]
            prepared = apply_preprocessor(preprocessor, chosen)
            out = {name: (prepared[name].cat.codes.astype(np.int32) if isinstance(prepared[name].dtype, pd.CategoricalDtype)
                          else prepared[name].astype(np.float32)) for name in prepared.columns}  # fmt: skip
            labels = {LABEL: encode_target(chosen[config.target], config, classes)}
            if config.weight is not None:
                labels[WEIGHT] = sample_weights(chosen, config)
            yield pd.DataFrame({**out, **labels}).reset_index(drop=True)
            del frame, chosen, prepared, out
    release_memory()


def release_memory() -> None:
    """Hand the memory a task freed back to the system. A Ray worker lives on after its task (mlcycle's own Ray never
    stops idle workers, so that trials start warm), and it would otherwise keep the peak of its largest task: Arrow's
    pool and glibc's heap both hold on to freed memory."""
    import ctypes
    import gc

    import pyarrow as pa

    gc.collect()
    pa.default_memory_pool().release_unused()
    with contextlib.suppress(OSError, AttributeError):  # glibc only
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def data_form(data: TrainingData | StreamedData, splits: Splits) -> dict[str, Any]:
    """How the model-ready rows were held, for the lineage: frames in the driver, or Ray Data blocks on the nodes
    named; and how many test rows the driver held for evaluation."""
    held = {"test_rows_evaluated": len(splits.test), "sampled": splits.sampled}
    if isinstance(data, TrainingData):
        return {"form": "frames", **held}
    return {"form": "ray data", "rows": list(data.rows), "block_nodes": data.block_nodes(), **held}
