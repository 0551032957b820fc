"""The gate inside the real training flow, and a challenger that the real service refuses to serve."""

from __future__ import annotations

import json
from pathlib import Path

import bentoml
import numpy as np
import pytest

from mlcycle.flows.models import GATE_FILE
from mlcycle.tasks import registry
from mlcycle.tasks.registry.bundle import load_bundle, save_bundle
from mlcycle.tasks.registry.gate import gate_challenger
from mlcycle.tasks.registry.reproduce import rebuild_splits
from mlcycle.tasks.train.prepare import encode_target

pytestmark = pytest.mark.integration


def test_the_first_adult_model_is_promoted_after_a_real_smoke_test(adult_run) -> None:  # type: ignore[no-untyped-def]
    config, result = adult_run
    assert result.decision == "promote", result.gate_reasons
    record = json.loads((Path(bentoml.models.get(result.tag).path) / GATE_FILE).read_text())
    assert record["decision"] == "promote" and record["champion"] is None  # judged against the trivial baseline
    checks = {c["rule"]: c for c in record["checks"]}
    assert checks["baseline"]["passed"] and checks["baseline"]["evidence"]["low"] > config.gate.margin
    smoke = checks["smoke"]
    assert smoke["passed"] is True, smoke["detail"]
    assert smoke["evidence"]["served_model"] == result.tag and smoke["evidence"]["max_abs_diff"] <= 1e-6
    assert smoke["evidence"]["records"] == len(json.loads(Path("serving/examples/adult.json").read_text()))
    event = next(e for e in registry.history("adult") if e.to_tag == result.tag and e.action == "promote")
    assert event.flow_run_id and event.evidence["decision"] == "promote" and event.reason.startswith(result.tag)
    assert registry.version(result.tag).status in ("champion", "retired")  # later tests may replace it


def test_a_challenger_the_real_service_cannot_start_is_rejected(adult_run, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                               monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    config, result = adult_run
    # The challenger's request schema lives in a module only this process can import, as if it had not been
    # shipped with the service: offline predictions work, the served model does not start.
    (tmp_path / "private_adult_schema.py").write_text(
        "from mlcycle.schemas.adult import AdultFeatures\n\n\nclass PrivateFeatures(AdultFeatures):\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    base = load_bundle(result.tag)
    broken = base.config.model_copy(update={"name": "adultprivate",
                                            "features_schema_ref": "private_adult_schema:PrivateFeatures"})  # fmt: skip
    tag = save_bundle(base.booster, base.preprocessor, broken, base.classes, base.metrics, base.lineage)
    test = rebuild_splits(base).test
    y = encode_target(test[config.target], config)
    rules = config.gate.model_copy(update={"smoke_test": True, "smoke_timeout_s": 120})
    record = gate_challenger(tag, test, y, np.full(len(y), y.mean()), rules, champion=None)
    assert record.decision == "reject"
    assert [c.rule for c in record.checks if c.passed is False] == ["smoke"], record.reasons
    smoke = next(c for c in record.checks if c.rule == "smoke")
    assert "could not start" in smoke.detail or "exited with code" in smoke.detail
    assert "private_adult_schema" in smoke.detail  # the reason, from the service's own output
