"""Chunked ingest: a file read, validated and written a chunk at a time gives the batch, the accounting, the ledger
and the curated rows that reading it in one piece gives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlcycle.schemas.config import SourceConfig
from mlcycle.tasks.ingest.read import FileInput, iter_batch, parse_batch
from mlcycle.tasks.ingest.store import (
    DatasetStore,
    list_batches,
    read_curated_batch,
    read_ledger,
    read_quarantined_rows,
)
from tests.ingest_fixtures import HEADER, admit_file, tiny_config


def _tricky_lines(n: int, seed: int) -> list[str]:
    """Rows with every irregularity a chunk boundary could cut badly: quoted line breaks (one spanning blank
    lines), doubled quotes, blank lines, rows with too few or too many fields, bad values."""
    rng = np.random.default_rng(seed)
    lines = [f"{i},{['red', 'green', 'blue'][i % 3]},{(i % 60) * 1.5}" for i in range(1, n + 1)]
    odd = {
        "quoted": lambda i: f'{i},"red\nstill red",1.0',
        "blank_inside": lambda i: f'{i},"gre\n\n\nen",2.0',
        "doubled": lambda i: f'{i},"say ""blue""",3.0',
        "blank": lambda i: "",
        "short": lambda i: f"{i},red",
        "long": lambda i: f"{i},red,1,2",
        "bad": lambda i: f"{i},pink,500",
    }
    kinds = list(odd)
    for position in rng.choice(n, size=n // 15, replace=False):
        lines[position] = odd[kinds[rng.integers(len(kinds))]](position + 1)
    return lines


def _as_lists(frame: pd.DataFrame) -> list[list[object]]:
    return frame.astype(object).where(frame.notna(), None).reset_index().values.tolist()


@pytest.mark.parametrize(
    ("csv", "prefix", "line_end"),
    [({}, HEADER, "\n"), ({}, HEADER, "\r\n"), ({"skiprows": 2}, "a note\nanother\n" + HEADER, "\n"),
     ({"header": False, "names": ["id", "color", "score"]}, "", "\n"), ({"sep": ", "}, HEADER.replace(",", ", "), "\n")],
)  # fmt: skip
def test_a_file_read_in_chunks_reads_as_in_one_piece(
    tmp_path: Path, csv: dict[str, object], prefix: str, line_end: str
) -> None:
    lines = _tricky_lines(3000, seed=len(prefix) + len(line_end))
    if csv.get("sep") == ", ":
        lines = [line.replace(",", ", ") if '"' not in line else line for line in lines]
    path = tmp_path / "tricky.csv"
    path.write_bytes((prefix.replace("\n", line_end) + line_end.join(lines) + line_end + line_end).encode())
    source = SourceConfig(kind="files", files=[{"path": str(path)}], csv=csv)
    whole = parse_batch(path.read_bytes(), FileInput(str(path)), source)
    chunks = list(iter_batch(path, FileInput(str(path)), source, chunk_bytes=3000))

    assert len(chunks) > 10
    assert sum(c.rows_read for c in chunks) == whole.rows_read
    assert _as_lists(pd.concat([c.frame for c in chunks])) == _as_lists(whole.frame)
    rejected = pd.concat([c.rejected_rows for c in chunks], ignore_index=True)
    assert rejected.values.tolist() == whole.rejected_rows.values.tolist()
    assert len(whole.rejected_rows) > 10  # the file has rows the reader sets aside, in several chunks


def _big_file(path: Path, rows: int) -> None:
    colors = ["red", "green", "blue", "pink"]
    rng = np.random.default_rng(0)
    lines = [
        f"{i},{colors[i % 4] if rng.random() < 0.3 else colors[i % 3]},{(i % 60) * 1.5}" for i in range(1, rows + 1)
    ]
    for position in rng.choice(rows, size=rows // 200, replace=False):
        lines[position] = f"{position + 1},red" if position % 2 else f"{position + 1},blue,{-position}"
    path.write_text(HEADER + "\n".join(lines) + "\n")


def test_a_batch_ingested_in_chunks_is_the_batch_ingested_in_one_piece(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    _big_file(path, 250_000)
    assert path.stat().st_size > 3 << 20
    whole_store, chunked_store = DatasetStore(tmp_path / "whole"), DatasetStore(tmp_path / "chunked")
    whole = admit_file(path, whole_store, tiny_config(chunk_mb=64))
    chunked = admit_file(path, chunked_store, tiny_config(chunk_mb=1))

    assert whole.outcome == chunked.outcome == "accepted"
    assert whole.record is not None and chunked.record is not None
    counts = ("rows_read", "rows_accepted", "rows_quarantined", "reasons", "content_hash")
    assert [getattr(chunked.record, c) for c in counts] == [getattr(whole.record, c) for c in counts]
    assert chunked.record.rows_read == 250_000 and chunked.record.rows_quarantined > 10_000
    assert len(chunked_store.curated_files(chunked.record.batch_id)) >= 3
    assert len(whole_store.curated_files(whole.record.batch_id)) == 1

    def rows(store: DatasetStore, batch_id: str) -> list[list[object]]:
        return read_curated_batch(store, batch_id).values.tolist()

    assert rows(chunked_store, chunked.record.batch_id) == rows(whole_store, whole.record.batch_id)
    ledger_columns = ["row", "column", "check", "value"]
    assert (read_ledger(chunked_store)[ledger_columns].values.tolist() ==
            read_ledger(whole_store)[ledger_columns].values.tolist())  # fmt: skip
    assert _as_lists(read_quarantined_rows(chunked_store, chunked.record.batch_id)) == _as_lists(
        read_quarantined_rows(whole_store, whole.record.batch_id)
    )


def test_a_batch_rejected_in_a_later_chunk_leaves_nothing_behind(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    _big_file(path, 250_000)
    with path.open("ab") as fh:
        fh.write(b"250001,red,\xff\xfe\n")  # not UTF-8, in the last chunk
    store = DatasetStore(tmp_path / "store")
    result = admit_file(path, store, tiny_config(chunk_mb=1))
    assert result.outcome == "rejected"
    assert "byte 0xff on line 250002" in result.message  # the line in the whole file, not in its chunk
    assert [b.status for b in list_batches(store)] == ["rejected"]
    assert not store.curated_dir.exists() or list(store.curated_dir.iterdir()) == []
    assert not store.quarantine_dir.exists() or list(store.quarantine_dir.iterdir()) == []
