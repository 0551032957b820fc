"""A landing folder for live data: find the files that are complete and ready to ingest.

A file is ready when its name is not a temporary one (dot files, `~` files, `.tmp`/`.part`/… suffixes that
copy tools and browsers write to) and its size and mtime are unchanged across two looks `settle_s` apart; the
read itself checks again (`FileInput.settled_stat`). Whether a ready file is new is decided by its content hash
when the batch is claimed, so a renamed copy or a re-drop is recognised however it is named.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mlcycle.schemas.config import LandingConfig, SourceConfig
from mlcycle.tasks.ingest.read import FileInput, SourceError

TEMPORARY_SUFFIXES = (".tmp", ".temp", ".part", ".partial", ".crdownload", ".download", ".swp", ".lock", ".filepart")


@dataclass(frozen=True)
class LandingScan:
    """The files ready to ingest, and those left for a later run because they are still changing."""

    ready: list[FileInput]
    still_changing: list[Path]


def is_temporary_name(name: str) -> bool:
    return name.startswith((".", "~")) or name.lower().endswith(TEMPORARY_SUFFIXES)


def scan_landing(source: SourceConfig, sleep: Callable[[float], None] = time.sleep) -> LandingScan:
    """The landing folder's settled files, sorted by name."""
    assert source.landing is not None
    cfg: LandingConfig = source.landing
    folder = Path(cfg.path)
    if not folder.is_dir():
        raise SourceError(f"{folder}: landing folder does not exist")
    first = _look(folder, cfg.pattern)
    if first and cfg.settle_s > 0:
        sleep(cfg.settle_s)
    second = _look(folder, cfg.pattern)
    ready = [
        FileInput(str(path), format=source.format, settled_stat=stat)
        for path, stat in sorted(second.items())
        if first.get(path) == stat
    ]
    changing = sorted(path for path in second if first.get(path) != second[path])
    return LandingScan(ready=ready, still_changing=changing)


def _look(folder: Path, pattern: str) -> dict[Path, tuple[int, int]]:
    found = {}
    for path in folder.glob(pattern):
        if is_temporary_name(path.name):
            continue
        try:
            stat = path.stat()
        except FileNotFoundError:  # renamed or deleted between listing and stat: it will be seen next time
            continue
        if path.is_file():
            found[path] = (stat.st_size, stat.st_mtime_ns)
    return found
