"""Steps that skip themselves: a second run of an unchanged config on unchanged data is the same model (no second
registry entry, no second decision), a changed gate judges that model again, a changed slice reuses the search, a
new row trains again, and `cache=False` computes everything. Real Prefect flows, real Ray Tune searches."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlcycle.schemas import PipelineConfig, load_config
from mlcycle.tasks import registry
from mlcycle.tasks.paths import mlcycle_home
from tests.conftest import ADULT_RECORD
from tests.integration.conftest import SMALL_RUN

pytestmark = pytest.mark.integration

NAME = "adult_steps"  # a dataset of its own in the session's home: its registry entries are this test's alone
SETTINGS = {**SMALL_RUN, "name": NAME, "gate.smoke_test": False}


def config(**changes: object) -> PipelineConfig:
    return load_config("adult", {**SETTINGS, **changes})


def train(settings: PipelineConfig, cache: bool = True):  # type: ignore[no-untyped-def]
    from mlcycle.flows.training import train_flow

    return train_flow(settings, cache=cache)


def events() -> list[str]:
    return [f"{e.action} {e.to_tag}" for e in registry.history(NAME)]


def test_steps_are_reused_only_while_their_inputs_are_unchanged(prefect_server: None, local_ray: None,
                                                                 tmp_path: Path) -> None:  # fmt: skip
    first = train(config())
    assert first.reused == {} and first.decision == "promote"
    entries, decisions = len(registry.versions(NAME)), events()

    # (a) the same command again: the same model, nothing registered, nothing decided, no row read
    again = train(config())
    assert again.tag == first.tag and set(again.reused) == {"model"}
    assert again.test == first.test and again.decision == "promote" and again.champion == first.tag
    assert len(registry.versions(NAME)) == entries and events() == decisions
    assert any("not judged again" in reason for reason in again.gate_reasons)

    # a slice changed: the search is reused, the model evaluated again (a new entry: its report differs)
    sliced = train(config(slices=["sex"]))
    assert set(sliced.reused) == {"search"} and sliced.tag != first.tag
    assert sliced.test == first.test  # the same booster on the same test rows

    # (c) one more row landed: new data is new data, the search runs again
    from mlcycle.flows.ingest import ingest_flow

    names = config().source.csv.names
    values = {**ADULT_RECORD, "income": ">50K"}
    row = tmp_path / "one-more.data"
    row.write_text(", ".join(str(values[n]) for n in names) + "\n")
    ingest_flow(config(), [str(row)])
    fresh = train(config())
    assert fresh.reused == {} and fresh.tag not in {first.tag, sliced.tag}
    assert len(registry.versions(NAME)) == entries + 2

    # --no-cache: every step again, a new entry although nothing changed
    forced = train(config(), cache=False)
    assert forced.reused == {} and forced.tag != fresh.tag
    assert len(registry.versions(NAME)) == entries + 3


def test_a_rejected_model_is_judged_again_when_its_gate_changes(prefect_server: None, local_ray: None) -> None:
    name = "adult_regate"
    strict = {**SETTINGS, "name": name, "gate.max_size_mb": 1e-6}  # no bundle fits: rejected
    rejected = train(load_config("adult", strict))
    assert rejected.decision == "reject" and registry.champion(name) is None
    again = train(load_config("adult", strict))  # same rules, same champion: the decision stands, not made again
    assert again.tag == rejected.tag and again.decision == "reject" and set(again.reused) == {"model"}
    assert [e.action for e in registry.history(name)] == ["reject"]

    relaxed = train(load_config("adult", {**strict, "gate.max_size_mb": 50}))
    assert relaxed.tag == rejected.tag and set(relaxed.reused) == {"model"}
    assert relaxed.decision == "promote" and registry.champion(name) == rejected.tag
    assert len(registry.versions(name)) == 1
    assert [e.action for e in registry.history(name)] == ["reject", "promote"]


def test_a_stored_result_that_changed_on_disk_is_computed_again(prefect_server: None, local_ray: None) -> None:
    name = "adult_tampered_steps"
    settings = load_config("adult", {**SETTINGS, "name": name})
    first = train(settings)
    (booster,) = (mlcycle_home() / "steps" / name).glob("search-*.booster.ubj")
    booster.write_bytes(booster.read_bytes()[:-8])  # a truncated copy: its SHA-256 no longer matches
    (record,) = (mlcycle_home() / "steps" / name).glob("model-*.json")
    record.unlink()  # the model step forgotten: the search step is the one asked
    second = train(settings)
    assert "search" not in second.reused and second.tag != first.tag
