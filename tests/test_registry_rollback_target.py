"""Which version a rollback goes back to, and the registry's tables as the CLI prints them."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlcycle.flows.model_views import history_table, versions_table
from mlcycle.flows.models import RollbackError, rollback_target
from mlcycle.tasks import registry


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLCYCLE_HOME", str(tmp_path))
    for i in (1, 2, 3):
        registry.register(f"m:{i}", primary_metric="roc_auc", metric=0.8 + i / 100, data_hash=f"hash{i}")


def test_the_default_target_is_the_champion_before_the_current_one() -> None:
    with pytest.raises(RollbackError, match="no champion yet"):
        rollback_target("m", None)
    registry.promote("m:1", reason="first")
    with pytest.raises(RollbackError, match="only champion it ever had"):
        rollback_target("m", None)
    registry.promote("m:2", reason="better")
    registry.reject("m:3", reason="worse")  # a rejection is not a change of champion
    assert rollback_target("m", None) == "m:1"
    registry.promote("m:1", reason="back", action="rollback")
    assert rollback_target("m", None) == "m:2"  # rolling back a rollback goes forward again


def test_an_explicit_target_is_checked() -> None:
    assert rollback_target("m", "3") == "m:3"  # the version part alone is enough
    assert rollback_target("m", "m:2") == "m:2"
    with pytest.raises(RollbackError, match="not a version of m"):
        rollback_target("m", "other:1")
    with pytest.raises(RollbackError, match="not in the model registry"):
        rollback_target("m", "m:9")


def test_tables_show_status_metric_snapshot_and_the_log() -> None:
    registry.promote("m:1", reason="first | model")
    registry.reject("m:2", reason="x" * 500)
    listing = versions_table("m")
    assert listing.splitlines()[0] == "| tag | created | metric | value | data snapshot | status |"
    assert "| m:1 |" in listing and "champion" in listing and "rejected" in listing and "hash2" in listing
    log = history_table("m").splitlines()
    assert len(log) == 2 + 2 and "| promote |" in log[2] and "first / model" in log[2]  # a pipe cannot break the table
    assert "| reject |" in log[3] and "…" in log[3] and len(log[3]) < 400
