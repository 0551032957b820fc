"""The command line as a user meets it: the real `mlcycle` in a subprocess. A mistake gets one `error:` line naming
the thing and the fix, a documented exit code (flows/exits.py, docs/cli-exit-codes.md) and never a traceback; the
quick commands need none of Prefect, BentoML or XGBoost."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from mlcycle.flows import exits
from mlcycle.tasks import registry
from tests.conftest import ROOT
from tests.ingest_fixtures import HEADER, good_rows, tiny_config
from tests.service_models import save_small_model


def mlcycle(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`mlcycle ARGS` as a user runs it (the session's MLCYCLE_HOME and BENTOML_HOME are inherited)."""
    return subprocess.run([sys.executable, "-c", "from mlcycle.flows.cli import main; main()", *args], cwd=ROOT,
                          env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=300)  # fmt: skip


def refused(run: subprocess.CompletedProcess[str], code: int, message: str) -> None:
    """Exit code `code`, stderr one `error:` line holding `message`, no traceback anywhere."""
    assert run.returncode == code, (run.returncode, run.stdout[-2000:], run.stderr[-3000:])
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], run.stderr[-3000:]
    assert "Traceback" not in run.stdout + run.stderr, run.stderr[-3000:]


def test_help_names_the_exit_codes() -> None:
    run = mlcycle("--help")
    assert run.returncode == exits.OK
    assert "3 trained, but the gate rejected the model" in " ".join(run.stdout.split())
    assert "--debug" in run.stdout


def test_a_separator_of_two_characters_is_read_and_a_wrong_one_is_named(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("a, b\n1, x\n2, y\n")
    run = mlcycle("schema", "infer", str(tmp_path / "a.csv"), "--name", "demo", "--sep", ", ")
    assert run.returncode == exits.OK, run.stderr
    assert "b: Series[str]" in run.stdout
    wrong = mlcycle("schema", "infer", str(tmp_path / "a.csv"), "--name", "demo", "--sep", ";")
    refused(wrong, exits.USAGE, "only one column")
    assert wrong.stdout == ""


def test_a_file_that_cannot_be_read_is_named(tmp_path: Path) -> None:
    refused(mlcycle("schema", "infer", str(tmp_path / "gone.csv"), "--name", "demo"), exits.USAGE, "gone.csv")


def test_a_bad_config_value_is_a_usage_error() -> None:
    run = mlcycle("train", "--config", "configs/adult.yaml", "--set", "tune.num_samples=-1")
    refused(run, exits.USAGE, "configs/adult.yaml")
    assert "num_samples" in run.stderr


def test_unknown_versions_are_named() -> None:
    refused(
        mlcycle("models", "show", "adult:nosuchversion"), exits.FAILED, "adult:nosuchversion: not in the model registry"
    )
    refused(mlcycle("serve", "adult:nosuchversion"), exits.FAILED, "adult:nosuchversion: not in the model registry")
    refused(mlcycle("rollback", "nosuchmodel"), exits.FAILED, "nosuchmodel has no champion yet")


def test_serve_refuses_a_name_without_a_champion() -> None:
    name = "cli-no-champion"
    tag = save_small_model("adult", rounds=5, name=name)
    registry.reject(tag, reason="test: the gate said no")
    run = mlcycle("serve", name, "--port", "1")  # refused before anything listens
    refused(run, exits.FAILED, f"{name} has no champion (its 1 version(s) are not promoted")
    assert f"serve one version by its full tag, e.g. {tag}" in run.stderr


def test_quarantine_show_lists_rows_with_reasons_and_values(tmp_path: Path) -> None:
    from mlcycle.tasks.ingest.store import DatasetStore
    from tests.ingest_fixtures import admit_file

    config = tiny_config(max_quarantine_rate=0.5).model_copy(update={"name": "cli-quarantine"})
    (tmp_path / "a.csv").write_text(HEADER + good_rows(3) + "4,pink,1\n5,red,500\n")
    result = admit_file(tmp_path / "a.csv", DatasetStore.for_dataset("cli-quarantine"), config)
    assert result.record is not None
    config_file = tmp_path / "tiny.yaml"
    config_file.write_text(yaml.safe_dump(config.model_dump(mode="json")))

    run = mlcycle("quarantine", "show", "--config", str(config_file))
    assert run.returncode == exits.OK, run.stderr
    lines = [line for line in run.stdout.splitlines() if line.startswith(f"| {result.record.batch_id}")]
    assert len(lines) == 2
    assert "| 5 | color: isin(['red', 'green', 'blue']) (pink) | id=4, color=pink, score=1.0 |" in lines[0]
    assert "| 6 | score: less_than_or_equal_to(100) (500.0) |" in lines[1]
    as_json = yaml.safe_load(mlcycle("quarantine", "show", "--config", str(config_file), "--json").stdout)
    assert [(r["row"], r["values"]["color"]) for r in as_json] == [(5, "pink"), (6, "red")]
    refused(mlcycle("quarantine", "show", "--config", str(config_file), "--batch", "nope"), exits.FAILED,
            "no batch 'nope'")  # fmt: skip


def test_quick_commands_import_no_heavy_library() -> None:
    """`models list/show/history`, `schema infer` and `--help` answer without importing Prefect, BentoML, XGBoost
    or Ray (what made `models list` take 4-6 s); benchmarks/cli.py times them."""
    tag = save_small_model("adult", rounds=5, name="cli-quick")
    probe = ("import sys; from mlcycle.flows.cli import main\n"
             "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\n"
             "heavy = sorted(m for m in ('prefect', 'bentoml', 'xgboost', 'ray', 'sklearn') if m in sys.modules)\n"
             "print('HEAVY', heavy, code)")  # fmt: skip
    for args in (["models", "list"], ["models", "show", tag], ["models", "history", "cli-quick"], ["--help"]):
        run = subprocess.run([sys.executable, "-c", probe, *args], cwd=ROOT, capture_output=True, text=True,
                             timeout=120)  # fmt: skip
        assert run.stdout.splitlines()[-1] == "HEAVY [] 0", (args, run.stdout[-500:], run.stderr[-2000:])
