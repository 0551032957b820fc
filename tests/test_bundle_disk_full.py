"""A model store on a full disk: the save ends with one line that says so, the half-copied version is gone, and
nothing is registered (benchmarks/faults.py fills a real tmpfs; here the copy into the store fails file by file, as
it does on a full disk)."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from mlcycle.tasks import registry
from mlcycle.tasks.registry.bundle import BundleSaveError
from tests.service_models import save_small_model


def _copy_into_store_failing(monkeypatch: pytest.MonkeyPatch, error: int, text: str) -> None:
    """BentoML stages a model in a temporary folder, then copies it into the store with shutil.copytree."""
    copytree = shutil.copytree

    def fail(src: str, dst: str, **kwargs: Any) -> Any:
        raise OSError(error, text, dst)

    monkeypatch.setattr(shutil, "copytree", lambda src, dst, **kw: copytree(src, dst, **{**kw, "copy_function": fail}))


def _versions_in_store(name: str) -> list[str]:
    folder = Path(os.environ["BENTOML_HOME"]) / "models" / name
    return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def test_a_full_disk_during_the_save_leaves_nothing_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    _copy_into_store_failing(monkeypatch, errno.ENOSPC, "No space left on device")
    with pytest.raises(BundleSaveError) as refused:
        save_small_model("adult", name="disk-full")
    monkeypatch.undo()

    message = str(refused.value)
    assert message.startswith("disk-full: the model could not be saved in the model store: [Errno 28] No space left")
    assert "nothing was registered" in message and "\n" not in message
    assert registry.versions("disk-full") == []
    assert _versions_in_store("disk-full") == []  # BentoML removed the half-copied version


def test_other_errors_of_the_save_are_not_called_a_full_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    _copy_into_store_failing(monkeypatch, errno.EACCES, "Permission denied")
    with pytest.raises(shutil.Error, match="Permission denied"):
        save_small_model("adult", name="disk-denied")
