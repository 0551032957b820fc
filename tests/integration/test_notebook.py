"""docs/notebook.ipynb runs as a reader runs it: a real Jupyter kernel executes every cell in a fresh project folder
with a home of its own (so the flow starts Prefect's temporary server, its own Ray and a real `bentoml serve` for the
gate), and the outputs show what the notebook promises: species predicted, a plot drawn, the model in the registry."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from nbclient import NotebookClient

from tests.conftest import ROOT

pytestmark = pytest.mark.integration

NOTEBOOK = ROOT / "docs" / "notebook.ipynb"
KERNEL = "python3"
SPECIES = {"Adelie", "Chinstrap", "Gentoo"}
# Run in the kernel after the notebook's own cells: what they left behind, as JSON, to assert on exactly.
PROBE = """import json
print(json.dumps({"tag": result.tag, "decision": result.decision, "columns": list(predictions.columns),
                  "labels": predictions["label"].tolist(), "registry": mlcycle.models("palmer")["tag"].tolist()}))"""


def kernel_name() -> str:
    """The `python3` kernelspec, installed into this venv if it is missing, checked to start this interpreter."""
    try:
        spec = KernelSpecManager().get_kernel_spec(KERNEL)
    except NoSuchKernel:
        subprocess.run([sys.executable, "-m", "ipykernel", "install", "--sys-prefix"], check=True, timeout=120)
        spec = KernelSpecManager().get_kernel_spec(KERNEL)
    # jupyter_client starts a spec's bare `python` as sys.executable; any other interpreter would lack mlcycle.
    interpreter = spec.argv[0]
    assert interpreter in {"python", "python3", sys.executable}, f"{KERNEL} starts {interpreter}, not this venv"
    return KERNEL


def kernel_env(project: Path) -> dict[str, str]:
    """This process's environment without the session's home, BentoML store and Prefect server: the kernel gets fresh
    ones in the project, and with no PREFECT_API_URL the flow starts Prefect's temporary server, as for a reader."""
    env = {k: v for k, v in os.environ.items() if k not in {"MLCYCLE_HOME", "BENTOML_HOME", "PREFECT_API_URL"}}
    return {**env, "MLCYCLE_HOME": str(project / ".mlcycle"), "PREFECT_HOME": str(project / ".prefect"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "BENTOML_DO_NOT_TRACK": "True",
            "RAY_USAGE_STATS_ENABLED": "0"}  # fmt: skip


def cell(notebook: Any, cell_id: str) -> Any:
    return next(c for c in notebook.cells if c.get("id") == cell_id)


def text(cell: Any) -> str:
    """What a code cell showed as text: its printed stream and its result's plain-text form."""
    return "".join(o.get("text", "") or o.get("data", {}).get("text/plain", "") for o in cell.outputs)


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, dict[str, Any]]:
    """The notebook executed top to bottom by a real kernel in a fresh folder; a failing cell fails the test."""
    project = tmp_path_factory.mktemp("notebook")
    shutil.copy(NOTEBOOK, project / NOTEBOOK.name)
    notebook = nbformat.read(project / NOTEBOOK.name, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell(PROBE, id="probe"))
    client = NotebookClient(notebook, kernel_name=kernel_name(), timeout=900,  # the training cell: server, Ray, search, gate
                            resources={"metadata": {"path": str(project)}})  # fmt: skip
    client.execute(env=kernel_env(project))  # CellExecutionError names the cell and its traceback
    nbformat.write(notebook, project / "executed.ipynb")  # kept beside the run's state, to read after a failure
    return notebook, json.loads(text(notebook.cells[-1]))


def test_the_committed_notebook_has_no_outputs() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert code and not any(c.outputs or c.execution_count for c in code)


def test_the_notebook_trains_a_champion_and_predicts_species(executed: tuple[Any, dict[str, Any]]) -> None:
    notebook, state = executed
    assert state["decision"] == "promote", text(cell(notebook, "gate"))  # `load("palmer")` serves the champion
    assert text(cell(notebook, "gate")).startswith("promote\n")
    assert state["columns"] == ["label", *(f"probability_{s}" for s in sorted(SPECIES))]
    assert len(state["labels"]) == 5 and set(state["labels"]) <= SPECIES
    shown = text(cell(notebook, "predict"))
    assert "label" in shown and all(label in shown for label in state["labels"])


def test_the_notebook_plots_contributions_and_lists_the_registry(executed: tuple[Any, dict[str, Any]]) -> None:
    notebook, state = executed
    assert any("image/png" in o.get("data", {}) for o in cell(notebook, "importance").outputs)
    assert state["registry"] == [state["tag"]]
    assert state["tag"] in text(cell(notebook, "models"))
