"""prefect.yaml against the code: every variable it reads is published by `mlcycle deploy`, every entrypoint is a
flow, every trigger reacts to an mlcycle event on the dataset's resource."""

from __future__ import annotations

import importlib
import re

import pytest
import yaml

from mlcycle.flows.deploy import variables_for
from tests.conftest import ROOT
from tests.test_deploy_render import shipped

PROJECT = yaml.safe_load((ROOT / "prefect.yaml").read_text())
CONFIGS = {config.name: config for config in shipped()}  # every config the repository holds


def test_every_variable_prefect_yaml_reads_is_published_by_deploy() -> None:
    used = set(re.findall(r"prefect\.variables\.([a-z0-9_]+)", (ROOT / "prefect.yaml").read_text()))
    published = {name for config in CONFIGS.values() for name in variables_for(config)}
    assert used and used == published


def test_variables_carry_the_config_and_its_schedule_values() -> None:
    config = CONFIGS["bike"]
    values = variables_for(config)
    assert values["mlcycle_bike_config"] == config.model_dump(mode="json")
    assert values["mlcycle_bike_retrain_cron"] == config.schedule.retrain_cron
    assert values["mlcycle_bike_cooldown_s"] == config.retrain.cooldown_s


@pytest.mark.parametrize("deployment", PROJECT["deployments"], ids=lambda d: f"{d['entrypoint']}:{d['name']}")
def test_each_deployment_names_a_flow_and_its_triggers_react_to_mlcycle_events(deployment: dict) -> None:
    module, _, function = deployment["entrypoint"].partition(":")
    flow = getattr(importlib.import_module(module.removesuffix(".py").replace("/", ".")), function)
    assert hasattr(flow, "deploy"), f"{deployment['entrypoint']} is not a Prefect flow"
    dataset = deployment["tags"][-1]
    if function == "rollback_flow":  # rollback acts on the registry by model name, not on a config
        assert deployment["parameters"]["name"] == dataset
    else:
        assert deployment["parameters"]["config"] == f"{{{{ prefect.variables.mlcycle_{dataset}_config }}}}"
    assert deployment["work_pool"]["name"] == "mlcycle"
    for trigger in deployment.get("triggers", []):
        assert trigger["match"]["prefect.resource.id"] == f"mlcycle.dataset.{dataset}"
        assert all(event.startswith("mlcycle.") for event in trigger["expect"])
        assert trigger["posture"] == "Reactive" and trigger["threshold"] == 1


def test_deployments_are_unique_per_flow() -> None:
    names = {(d["entrypoint"], d["name"]) for d in PROJECT["deployments"]}
    # train, retrain x4 (scheduled, new data, drift, degradation), watch, drift check, rollback, performance check
    assert len(names) == len(PROJECT["deployments"]) == 9 * len(CONFIGS)
