"""Rollback for real: the target must load and answer the golden requests through `bentoml serve`."""

from __future__ import annotations

from pathlib import Path

import bentoml
import pytest
from typer.testing import CliRunner

from mlcycle.flows.cli import app
from mlcycle.flows.models import RollbackError, rollback_flow
from mlcycle.tasks import registry
from mlcycle.tasks.registry.bundle import BOOSTER_FILE, load_bundle, save_bundle

pytestmark = pytest.mark.integration


def _copy(tag: str) -> str:
    bundle = load_bundle(tag)
    return save_bundle(bundle.booster, bundle.preprocessor, bundle.config, bundle.classes, bundle.metrics,
                       bundle.lineage)  # fmt: skip


def test_rollback_returns_to_the_previous_champion_and_logs_who_when_why(adult_run) -> None:  # type: ignore[no-untyped-def]
    _, result = adult_run
    if registry.champion("adult") is None:
        registry.promote(result.tag, reason="test: a champion to roll back to")
    before = registry.champion("adult")
    newer = _copy(result.tag)
    registry.promote(newer, reason="test: promoted by hand, as a gate would")

    rolled = rollback_flow("adult", reason="test: the new model misbehaves")
    assert (rolled.from_tag, rolled.to_tag) == (newer, before)
    assert registry.champion("adult") == before
    assert {v.tag: v.status for v in registry.versions("adult")}[newer] == "retired"
    last = registry.history("adult")[-1]
    assert (last.action, last.from_tag, last.to_tag) == ("rollback", newer, before)
    assert last.reason == "test: the new model misbehaves" and last.actor and last.flow_run_id and last.at
    assert last.evidence["smoke"]["passed"] is True and last.evidence["smoke"]["served_model"] == before


def test_rollback_refuses_a_target_that_does_not_load(adult_run) -> None:  # type: ignore[no-untyped-def]
    _, result = adult_run
    if registry.champion("adult") is None:
        registry.promote(result.tag, reason="test: a champion to keep")
    champion = registry.champion("adult")
    broken = _copy(result.tag)
    (Path(bentoml.models.get(broken).path) / BOOSTER_FILE).unlink()
    # its booster gone: the digest check refuses it before the smoke test would
    with pytest.raises(RollbackError, match=r"failed its integrity check.*booster\.ubj is missing"):
        rollback_flow("adult", to=broken, reason="test")
    assert registry.champion("adult") == champion
    assert all(e.to_tag != broken for e in registry.history("adult"))

    runner = CliRunner()
    unknown = runner.invoke(app, ["rollback", "adult", "--to", "doesnotexist"])
    assert unknown.exit_code == 1 and "not in the model registry" in unknown.output
    history = runner.invoke(app, ["models", "history", "adult"])
    assert history.exit_code == 0 and "| at | action | from | to |" in history.output
    listing = runner.invoke(app, ["models", "list", "adult"])
    assert listing.exit_code == 0 and champion in listing.output and "champion" in listing.output
