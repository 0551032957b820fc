"""Every config gets the same nine deployments, rendered from the config alone; the committed prefect.yaml is that
rendering for the shipped configs."""

from __future__ import annotations

import subprocess

import yaml

from mlcycle.flows.deploy import render_prefect_yaml
from mlcycle.schemas import load_config
from tests.conftest import ROOT

KINDS = ["mlcycle.flows.training:train_flow", "mlcycle.flows.retrain:retrain_flow", "mlcycle.flows.watch:watch_flow",
         "mlcycle.flows.retrain:retrain_flow", "mlcycle.flows.drift:drift_flow", "mlcycle.flows.retrain:retrain_flow",
         "mlcycle.flows.performance:performance_flow", "mlcycle.flows.retrain:retrain_flow", "mlcycle.flows.models:rollback_flow"]  # fmt: skip


def shipped() -> list:  # type: ignore[type-arg]
    """The configs the repository holds (a user's own config, not yet committed, is not the demo's)."""
    listed = subprocess.run(["git", "ls-files", "configs/*.yaml"], cwd=ROOT, capture_output=True, text=True)
    paths = [ROOT / p for p in listed.stdout.split()] if listed.returncode == 0 and listed.stdout.strip() else []
    return [load_config(path) for path in sorted(paths or (ROOT / "configs").glob("*.yaml"))]


def test_the_committed_prefect_yaml_is_the_rendering_of_the_shipped_configs() -> None:
    assert (ROOT / "prefect.yaml").read_text() == render_prefect_yaml(shipped()), (
        "prefect.yaml is stale: run `mlcycle deploy --print-prefect-yaml > prefect.yaml`"
    )


def test_a_new_config_gets_the_nine_deployments_with_its_own_variables() -> None:
    adult = load_config(ROOT / "configs" / "adult.yaml")
    loans = adult.model_copy(update={"name": "loans-2024"})
    document = yaml.safe_load(render_prefect_yaml([loans]))
    deployments = document["deployments"]
    assert [d["entrypoint"] for d in deployments] == KINDS
    assert {d["name"] for d in deployments} == {"loans-2024", "loans-2024-scheduled", "loans-2024-on-new-data",
                                                "loans-2024-on-drift", "loans-2024-on-degradation"}  # fmt: skip
    degradation = next(d for d in deployments if d["name"] == "loans-2024-on-degradation")
    assert degradation["triggers"][0]["expect"] == ["mlcycle.performance.degraded"]
    assert degradation["parameters"]["cause"] == "degradation"
    text = yaml.safe_dump(deployments)
    assert "mlcycle_loans_2024_config" in text and "mlcycle_adult" not in text
    triggers = [t for d in deployments for t in d.get("triggers", [])]
    assert {t["match"]["prefect.resource.id"] for t in triggers} == {"mlcycle.dataset.loans-2024"}


def test_every_shipped_config_passes_the_deployments_parameter_validation() -> None:
    # Prefect's server validates a run's parameters against the flow's schema; a config field it misreads (one
    # named `required`, say) makes `prefect deploy` fail with a 422.
    from prefect.utilities.callables import parameter_schema
    from prefect.utilities.schema_tools.validation import validate

    from mlcycle.flows.training import train_flow

    schema = parameter_schema(train_flow.fn).model_dump_for_openapi()
    for config in shipped():
        validate({"config": config.model_dump(mode="json")}, schema, raise_on_error=True, ignore_required=True)


def test_workers_elsewhere_clone_the_project_and_a_token_is_only_named() -> None:
    """`--git-repo`: each run clones the project's repository and runs in the clone; a private repository's token
    is a Prefect Secret block named in the file, resolved by the worker, never the token itself."""
    from mlcycle.flows.deploy import GitSource

    adult = load_config(ROOT / "configs" / "adult.yaml")
    git = GitSource("https://example.org/team/models.git", branch="release", token_secret="models-repo-token")
    document = yaml.safe_load(render_prefect_yaml([adult], git))
    clone, chdir = document["pull"]
    assert clone["prefect.deployments.steps.git_clone"] == {
        "id": "clone-project", "repository": "https://example.org/team/models.git", "branch": "release",
        "access_token": "{{ prefect.blocks.secret.models-repo-token }}"}  # fmt: skip
    assert chdir["prefect.deployments.steps.set_working_directory"]["directory"] == "{{ clone-project.directory }}"
    local = yaml.safe_load(render_prefect_yaml([adult]))["pull"]
    assert local == [{"prefect.deployments.steps.set_working_directory": {"directory": "{{ $MLCYCLE_PROJECT_DIR }}"}}]
