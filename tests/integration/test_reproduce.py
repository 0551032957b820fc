"""Reproduce: a registered model refitted from its recorded snapshot, config and seed predicts the same."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from mlcycle.flows.cli import app
from mlcycle.tasks.registry.reproduce import reproduce

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("dataset", ["adult", "bike"])
def test_refit_from_the_lineage_gives_the_same_predictions(request, dataset: str) -> None:  # type: ignore[no-untyped-def]
    _, result = request.getfixturevalue(f"{dataset}_run")
    again = reproduce(result.tag)
    assert again.same_preprocessor and again.same_rounds
    assert again.rows == result.rows["test"]
    assert again.max_abs_diff <= 1e-6, again
    print(f"{dataset}: max |registered - refit| {again.max_abs_diff:.3g} on {again.rows} test rows")


def test_reproduce_command_reports_and_fails_on_what_it_cannot_rebuild(adult_run) -> None:  # type: ignore[no-untyped-def]
    runner = CliRunner()
    ok = runner.invoke(app, ["reproduce", adult_run[1].tag])
    assert ok.exit_code == 0 and "reproduced" in ok.output and "identical" in ok.output
    missing = runner.invoke(app, ["reproduce", "adult:doesnotexist"])
    assert missing.exit_code == 1 and "error" in missing.output
