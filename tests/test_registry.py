"""The registry's invariants: one champion per name, every change logged, unknown tags refused."""

import pytest

from mlcycle.tasks import registry


def test_promotion_retires_the_previous_champion_and_logs_both(tmp_path, monkeypatch):
    monkeypatch.setenv("MLCYCLE_HOME", str(tmp_path))
    for tag in ("m:1", "m:2", "other:1"):
        registry.register(tag, primary_metric="roc_auc", metric=0.9, data_hash="abc")
    assert registry.champion("m") is None
    registry.promote("m:1", reason="first model beats the trivial baseline", evidence={"delta": 0.4})
    registry.promote("m:2", reason="better", flow_run_id="run-2")
    registry.reject("other:1", reason="slower than budget")

    statuses = {v.tag: v.status for v in registry.versions()}
    assert statuses == {"m:1": "retired", "m:2": "champion", "other:1": "rejected"}
    assert registry.champion("m") == "m:2"
    assert registry.resolve("m") == "m:2"
    log = registry.history("m")
    assert [(e.action, e.from_tag, e.to_tag) for e in log] == [("promote", None, "m:1"), ("promote", "m:1", "m:2")]
    assert log[0].evidence == {"delta": 0.4} and log[1].flow_run_id == "run-2"


def test_unknown_tags_and_rejecting_the_champion_are_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("MLCYCLE_HOME", str(tmp_path))
    with pytest.raises(registry.RegistryError, match="not in the model registry"):
        registry.promote("m:missing", reason="x")
    registry.register("m:1")
    registry.promote("m:1", reason="x")
    with pytest.raises(registry.RegistryError, match="is the champion"):
        registry.reject("m:1", reason="y")
    assert registry.champion("m") == "m:1"
    assert [e.action for e in registry.history("m")] == ["promote"]
