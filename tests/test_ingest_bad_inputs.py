"""The bad-input suite: malformed files are rejected with an error naming the file and the problem; malformed rows
are quarantined with their line, column, check and value; no accepted row is lost or duplicated."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import pandas as pd
import pytest

from mlcycle.tasks.ingest.store import DatasetStore, list_batches, read_ledger
from tests.ingest_fixtures import (
    HEADER,
    admit_file,
    assert_accounted,
    curated_rows,
    good_rows,
    reasons,
    tiny_config,
)


def _parquet_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


WHOLE_FILE_CASES: list[tuple[str, str, bytes, str]] = [
    ("empty", "a.csv", b"", r"a\.csv: the file is empty"),
    ("blank lines only", "a.csv", b"\n \n\n", r"a\.csv: the file is empty"),
    ("header only", "a.csv", HEADER.encode(), r"a\.csv: no data rows \(header only\)"),
    ("header and blank lines", "a.csv", (HEADER + "\n\n").encode(), r"a\.csv: no data rows \(header only\)"),
    ("semicolon delimited", "a.csv", b"id;color;score\n1;red;2.0\n",
     r"a\.csv: every line is one field: the file looks delimited by ';', not ','"),
    ("tab delimited", "a.csv", b"id\tcolor\tscore\n1\tred\t2.0\n", r"a\.csv: .*delimited by '\\t', not ','"),
    ("latin-1 encoded", "a.csv", (HEADER + "1,red,2\n2,gr\xfcn,3\n").encode("latin-1"),
     r"a\.csv: not valid utf-8 text \(byte 0xfc on line 3\); set source\.csv\.encoding"),
    ("binary garbage", "a.csv", bytes(range(256)) * 4,
     r"a\.csv: binary data, not delimited text \(NUL byte at offset 0\)"),
    ("gzip file named .csv", "a.csv", b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + b"\x00" * 20,
     r"a\.csv: binary data"),
    ("missing required column", "a.csv", b"id,color\n1,red\n2,blue\n",
     r"a\.csv: missing required column\(s\) \['score'\] \(schema TinySchema\)"),
    ("unexpected column", "a.csv", b"id,color,score,extra\n1,red,2,x\n", r"a\.csv: unexpected column\(s\) \['extra'\]"),
    ("duplicated column names", "a.csv", b"id,color,color\n1,red,blue\n",
     r"a\.csv: duplicated column name\(s\) \['color'\] in the header"),
    ("wrong type throughout", "a.csv", (HEADER + "one,red,1\ntwo,blue,2\nthree,green,3\n").encode(),
     r"a\.csv: column 'id' cannot be read as coerce_dtype\('int64'\) in any row \(e\.g\. one, two, three\)"),
    ("parquet named .csv", "a.csv", _parquet_bytes(pd.DataFrame({"id": [1], "color": ["red"], "score": [1.0]})),
     r"a\.csv: is a Parquet file, not CSV"),
    ("corrupt parquet", "a.parquet", b"PAR1 this is not really parquet PAR1",
     r"a\.parquet: not a readable Parquet file"),
    ("csv named .parquet", "a.parquet", (HEADER + "1,red,2\n").encode(), r"a\.parquet: not a Parquet file \(no PAR1"),
    ("parquet without rows", "a.parquet",
     _parquet_bytes(pd.DataFrame({"id": pd.Series([], dtype="int64"), "color": pd.Series([], dtype="str"),
                                  "score": pd.Series([], dtype="float64")})),
     r"a\.parquet: no data rows \(columns only\)"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "content", "error"), [c[1:] for c in WHOLE_FILE_CASES],
                         ids=[c[0] for c in WHOLE_FILE_CASES])  # fmt: skip
def test_whole_file_problems_reject_the_batch_naming_file_and_problem(
    tmp_path: Path, store: DatasetStore, name: str, content: bytes, error: str
) -> None:
    earlier = admit_file(_write(tmp_path / "ok.csv", (HEADER + good_rows(3)).encode()), store)
    path = _write(tmp_path / name, content)
    result = admit_file(path, store)
    assert result.outcome == "rejected"
    assert result.message.startswith(str(path))
    assert re.search(error, result.message), result.message
    assert result.record is not None and result.record.status == "rejected"
    assert result.record.reasons == [result.message]
    assert result.record.rows_accepted == 0
    assert not store.curated_file(result.record.batch_id).exists()
    # Everything else is untouched: the earlier batch is still accepted with all its rows.
    assert earlier.record is not None
    assert [b.batch_id for b in list_batches(store, status="accepted")] == [earlier.record.batch_id]
    assert len(curated_rows(store, earlier.record.batch_id)) == 3


def test_missing_file_is_recorded_as_rejected(tmp_path: Path, store: DatasetStore) -> None:
    result = admit_file(tmp_path / "gone.csv", store)
    assert result.outcome == "rejected"
    assert result.message == f"{tmp_path / 'gone.csv'}: no such file"
    assert [b.status for b in list_batches(store)] == ["rejected"]


def test_folder_given_as_a_file_is_rejected(tmp_path: Path, store: DatasetStore) -> None:
    (tmp_path / "dir.csv").mkdir()
    result = admit_file(tmp_path / "dir.csv", store)
    assert result.outcome == "rejected"
    assert "dir.csv: is a folder, not a file" in result.message


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file_is_rejected(tmp_path: Path, store: DatasetStore) -> None:
    path = _write(tmp_path / "a.csv", (HEADER + good_rows(2)).encode())
    path.chmod(0)
    result = admit_file(path, store)
    assert "a.csv: cannot be read (permission denied)" in result.message


# (content after the header, accepted line numbers, {line: reasons}); the header is line 1.
ROW_CASES: list[tuple[str, str, list[int], dict[int, list[str]]]] = [
    ("value above range", "1,red,1\n2,red,150\n3,blue,3\n", [2, 4],
     {3: ["score: less_than_or_equal_to(100) (150.0)"]}),
    ("value below range", "1,red,1\n-4,red,2\n", [2], {3: ["id: greater_than_or_equal_to(1) (-4)"]}),
    ("unknown category", "1,purple,1\n2,red,2\n", [3], {2: ["color: isin(['red', 'green', 'blue']) (purple)"]}),
    ("text in an integer column", "1,red,1\nx,red,2\n3,red,3\n", [2, 4], {3: ["id: coerce_dtype('int64') (x)"]}),
    ("fraction in an integer column", "1,red,1\n2.5,red,2\n3,red,3\n", [2, 4], {3: ["id: is_integer (2.5)"]}),
    ("missing required value", "1,,1\n2,red,2\n", [3], {2: ["color: not_nullable (<missing>)"]}),
    ("missing optional value", "1,red,\n2,red,2\n", [2, 3], {}),
    ("infinite value", "1,red,inf\n2,red,2\n", [3], {2: ["score: less_than_or_equal_to(100) (inf)"]}),
    ("two failures in one row", "-1,purple,1\n2,red,2\n", [3],
     {2: ["id: greater_than_or_equal_to(1) (-1)", "color: isin(['red', 'green', 'blue']) (purple)"]}),
    ("too many fields", "1,red,1\n2,red,2,9\n3,red,3\n", [2, 4], {3: ["<row>: field_count(3) (4 fields: 2,red,2,9)"]}),
    ("too few fields", "1,red,1\n2,red\n3,red,3\n", [2, 4], {3: ["<row>: field_count(3) (2 fields: 2,red)"]}),
    ("first row too many fields", "1,red,1,7\n2,red,2\n3,red,3\n", [3, 4],
     {2: ["<row>: field_count(3) (4 fields: 1,red,1,7)"]}),
    ("row of empty fields", "1,red,1\n,,\n3,red,3\n", [2, 4],
     {3: ["id: not_nullable (<missing>)", "color: not_nullable (<missing>)"]}),
    ("blank lines between rows", "1,red,1\n\n\n2,red,2\nx,red,3\n", [2, 5], {6: ["id: coerce_dtype('int64') (x)"]}),
    ("quoted line break", '1,red,1\n2,"re\nd",2\n3,red,3\nx,red,4\n', [2, 5],
     {3: ["color: isin(['red', 'green', 'blue']) (re\nd)"], 6: ["id: coerce_dtype('int64') (x)"]}),
    ("quoted delimiter", '1,"red",1\n2,"r,ed",2\n', [2], {3: ["color: isin(['red', 'green', 'blue']) (r,ed)"]}),
    ("windows line endings", "1,red,1\r\n2,blue,2\r\n3,pink,3\r\n", [2, 3],
     {4: ["color: isin(['red', 'green', 'blue']) (pink)"]}),
    ("no newline at the end", "1,red,1\n2,blue,2", [2, 3], {}),
]  # fmt: skip


@pytest.mark.parametrize(("body", "accepted", "expected"), [c[1:] for c in ROW_CASES], ids=[c[0] for c in ROW_CASES])
def test_bad_rows_are_quarantined_with_line_column_check_and_value(
    tmp_path: Path, store: DatasetStore, body: str, accepted: list[int], expected: dict[int, list[str]]
) -> None:
    path = _write(tmp_path / "a.csv", (HEADER + body).encode())
    result = admit_file(path, store)
    assert result.outcome == "accepted", result.message
    assert sorted(curated_rows(store, result.record.batch_id)["_row"]) == accepted  # type: ignore[union-attr]
    assert {row: sorted(r) for row, r in reasons(store, result).items()} == {
        row: sorted(r) for row, r in expected.items()
    }
    assert_accounted(store, result)


def test_utf8_byte_order_mark_is_not_part_of_the_first_column(tmp_path: Path, store: DatasetStore) -> None:
    result = admit_file(_write(tmp_path / "a.csv", ("\ufeff" + HEADER + good_rows(2)).encode()), store)
    assert result.outcome == "accepted", result.message
    assert result.record is not None and result.record.rows_accepted == 2


def test_accepted_values_arrive_with_the_schema_types(tmp_path: Path, store: DatasetStore) -> None:
    result = admit_file(_write(tmp_path / "a.csv", (HEADER + "1,red,\n2,blue,2.5\n").encode()), store)
    assert result.record is not None
    frame = curated_rows(store, result.record.batch_id)
    assert frame["id"].tolist() == [1, 2] and frame["id"].dtype == "int64"
    assert frame["color"].tolist() == ["red", "blue"]
    assert frame["score"].isna().tolist() == [True, False]


def test_parquet_rows_are_numbered_from_one(tmp_path: Path, store: DatasetStore) -> None:
    frame = pd.DataFrame({"id": [1, 2, 3], "color": ["red", "teal", "blue"], "score": [1.0, 2.0, 300.0]})
    result = admit_file(
        _write(tmp_path / "a.parquet", _parquet_bytes(frame)), store, tiny_config(max_quarantine_rate=1)
    )
    assert result.outcome == "accepted", result.message
    assert reasons(store, result) == {2: ["color: isin(['red', 'green', 'blue']) (teal)"],
                                      3: ["score: less_than_or_equal_to(100) (300.0)"]}  # fmt: skip
    assert curated_rows(store, result.record.batch_id)["_row"].tolist() == [1]  # type: ignore[union-attr]


def test_parquet_with_a_boolean_in_an_integer_column_is_quarantined(tmp_path: Path, store: DatasetStore) -> None:
    frame = pd.DataFrame({"id": pd.Series([1, True, 3], dtype="object"), "color": ["red"] * 3, "score": [1.0] * 3})
    result = admit_file(_write(tmp_path / "a.parquet", _parquet_bytes(frame.astype({"id": "str"}))), store)
    # Written as text, "True" is neither an integer nor coercible to one.
    assert reasons(store, result) == {2: ["id: coerce_dtype('int64') (True)"]}


def test_a_batch_above_the_quarantine_threshold_is_rejected_whole(tmp_path: Path, store: DatasetStore) -> None:
    body = "1,red,1\n2,pink,2\n3,pink,3\n4,red,400\n5,blue,5\n"
    path = _write(tmp_path / "a.csv", (HEADER + body).encode())
    result = admit_file(path, store, tiny_config(max_quarantine_rate=0.5))
    assert result.outcome == "rejected"
    assert result.message.startswith(
        f"{path}: rejected: 3 of 5 rows quarantined (60%), above ingest.max_quarantine_rate 50%; "
        "nothing was added to the curated store; top reasons: color: isin(['red', 'green', 'blue']) ×2 (row 3: pink); "
    )
    assert "score: less_than_or_equal_to(100) ×1 (row 5: 400.0)" in result.message
    record = result.record
    assert record is not None and (record.rows_read, record.rows_accepted, record.rows_quarantined) == (5, 0, 3)
    assert not store.curated_dir.exists() or not any(store.curated_dir.iterdir())
    # The ledger keeps the reasons for whoever fixes the file.
    assert sorted(read_ledger(store, [record.batch_id])["row"]) == [3, 4, 5]


def test_a_batch_at_the_threshold_is_accepted(tmp_path: Path, store: DatasetStore) -> None:
    path = _write(tmp_path / "a.csv", (HEADER + "1,red,1\n2,pink,2\n").encode())
    result = admit_file(path, store, tiny_config(max_quarantine_rate=0.5))
    assert result.outcome == "accepted"
    assert_accounted(store, result)


def _write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def test_fast_and_exact_scans_agree_on_a_well_formed_file() -> None:
    from mlcycle.schemas.config import CsvOptions
    from mlcycle.tasks.ingest.read import _fast_scan, _frame_from_scan, _scan_records

    data = (HEADER + '1,red,1\n2,"blue",\n3,green,3.5\n').encode()
    opts = CsvOptions()
    fast = _fast_scan(data, data.decode(), opts, 0)
    assert fast is not None
    exact = _scan_records(data.decode(), "a.csv", opts, 0)
    via_fast = _frame_from_scan(data, "a.csv", opts, 0, fast, exact=False)
    via_exact = _frame_from_scan(data, "a.csv", opts, 0, exact, exact=True)
    assert via_fast is not None and via_exact is not None
    pd.testing.assert_frame_equal(via_fast.frame, via_exact.frame)
    assert via_fast.frame.index.tolist() == [2, 3, 4]
    # A blank line or a line break inside a value: the fast scan steps aside for the exact one.
    assert _fast_scan(data + b"\n\n", (data + b"\n\n").decode(), opts, 0) is None
    multiline = (HEADER + '1,"re\nd",1\n').encode()
    assert _fast_scan(multiline, multiline.decode(), opts, 0) is None
