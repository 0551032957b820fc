"""The model served is the model that was saved: every bundle file's SHA-256 is recorded at save time, and a file
that no longer matches is refused by `serve`, `/reload`, `reproduce`, `export` and the Python API, naming the file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import bentoml
import httpx
import pytest

from mlcycle.tasks import registry
from mlcycle.tasks.ingest.read import sha256_file
from mlcycle.tasks.registry.bundle import IntegrityError, load_bundle
from mlcycle.tasks.registry.smoke import ServeError, serving_model
from tests.conftest import ADULT_RECORD, ROOT
from tests.service_models import save_small_model

pytestmark = pytest.mark.integration


def flip_one_byte(tag: str, file: str = "booster.ubj") -> Path:
    path = Path(bentoml.models.get(tag).path) / file
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    return path


def test_every_file_is_recorded_in_the_registry_and_the_lineage() -> None:
    tag = save_small_model("adult", name="digests")
    folder = Path(bentoml.models.get(tag).path)
    recorded = registry.digests(tag)
    assert recorded is not None and set(recorded) >= {"booster.ubj", "config.json", "preprocessor.json",
                                                      "metrics.json", "lineage.json"}  # fmt: skip
    assert all(sha256_file(folder / name) == digest for name, digest in recorded.items())
    lineage = json.loads((folder / "lineage.json").read_text())
    assert lineage["files"] == {k: v for k, v in recorded.items() if k != "lineage.json"}
    assert load_bundle(tag).tag == tag


def test_a_flipped_byte_is_refused_by_serve_reload_reproduce_and_load() -> None:
    import mlcycle

    name = "tampered"
    good = save_small_model("adult", name=name, seed=1)
    registry.promote(good, reason="test: the good champion")
    with serving_model(name, timeout_s=120) as url:
        bad = save_small_model("adult", name=name, seed=2)
        flip_one_byte(bad)
        registry.promote(bad, reason="test: a champion whose booster changed on disk")
        reload = httpx.post(f"{url}/reload", timeout=60)
        assert reload.status_code == 409, reload.text
        assert "booster.ubj" in reload.text and bad in reload.text
        answer = httpx.post(f"{url}/predict", json={"records": [ADULT_RECORD]}, timeout=30)
        assert answer.status_code == 200 and answer.json()["model"] == good  # the last good model answers
        metadata = httpx.get(f"{url}/metadata", timeout=30).json()
        assert metadata["model"] == good and "booster.ubj" in (metadata["reload_refused"] or "")
    with pytest.raises(ServeError, match=r"booster\.ubj has sha256 .* not the .* recorded"), serving_model(bad, 120):
        pass
    with pytest.raises(IntegrityError, match="booster.ubj") as refused:
        mlcycle.load(bad)
    assert refused.value.file == "booster.ubj" and refused.value.tag == bad
    reproduce = subprocess.run([sys.executable, "-c", "from mlcycle.flows.cli import main; main()", "reproduce", bad],
                               cwd=ROOT, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert reproduce.returncode != 0 and "booster.ubj" in reproduce.stderr and "Traceback" not in reproduce.stderr
