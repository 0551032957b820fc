"""Bring your own table: a messy export through `mlcycle init`, the real training flow with the config exactly as
init wrote it (only the search made small), and a real `bentoml serve` answering requests in the drafted contract."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pandas as pd
import pytest

from mlcycle.schemas import load_config
from tests.conftest import ROOT
from tests.integration.conftest import SMALL_RUN
from tests.test_draft import loans_file

NAME = "owndata_it"


@pytest.fixture(scope="module")
def drafted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`mlcycle init` on a 1,500-row export with a few values no rule can read; the files it wrote are removed."""
    folder = tmp_path_factory.mktemp("export")
    path = loans_file(folder, rows=1500)
    lines = path.read_text().splitlines()
    lines[10] = lines[10].replace("%,", "x%,", 1)  # a rate that is not a percentage
    lines[20] = lines[20].replace("-", "/", 1)  # a date in no format the rule reads
    path.write_text("\n".join(lines) + "\n")
    proc = subprocess.run([sys.executable, "-c", "from mlcycle.flows.cli import main; main()", "init", str(path),
                           "--target", "default", "--name", NAME, "--weight", "survey_weight"],
                          cwd=folder, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "charged_off" in proc.stdout and "dropped: likely target leak" in proc.stdout
    assert (folder / "schemas" / f"{NAME}.py").is_file() and not (folder / "schemas" / "__init__.py").exists()
    return folder / "configs" / f"{NAME}.yaml"


@pytest.fixture(scope="module")
def trained(drafted: Path, prefect_server: None, local_ray: None):  # type: ignore[no-untyped-def]
    from mlcycle.flows.training import train_flow

    small = {k: v for k, v in SMALL_RUN.items() if k != "source.sample_rows"}
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(drafted.parent.parent)  # the project folder: the config names its schema file from there
        config = load_config(drafted, {**small, "tune.searcher": "random"})
        return config, train_flow(config)


def test_the_drafted_config_trains_with_no_edits(trained) -> None:  # type: ignore[no-untyped-def]
    config, result = trained
    assert result.decision in ("promote", "reject") and result.gate_reasons
    assert result.test["roc_auc"] > 0.6  # segment and amount drive the label; the model found them
    from mlcycle.tasks.registry.bundle import load_bundle

    bundle = load_bundle(result.tag)
    features = set(bundle.preprocessor.feature_names)
    assert {"amount", "rate", "zip", "segment", "region", "origin", "opened_days"} <= features
    assert not features & {"loan_id", "customer", "charged_off", "country", "survey_weight", "default", "opened"}
    zip_code = next(f for f in bundle.preprocessor.features if f.name == "zip")
    assert zip_code.kind == "categorical" and "02134" in (zip_code.categories or [])


def test_the_final_model_is_the_best_trials_own_and_reproduces(trained) -> None:  # type: ignore[no-untyped-def]
    from mlcycle.tasks.registry.bundle import load_bundle
    from mlcycle.tasks.registry.reproduce import reproduce

    _, result = trained
    lineage = load_bundle(result.tag).lineage
    assert lineage["final_model"] == "best trial's booster"
    assert lineage["best_boosted"] >= lineage["best_rounds"] > 0
    again = reproduce(result.tag)
    assert again.matches and again.same_rounds, again


def test_unreadable_values_are_quarantined_under_their_rule(trained) -> None:  # type: ignore[no-untyped-def]
    from mlcycle.tasks.ingest.store import DatasetStore, read_ledger

    config, _ = trained
    ledger = read_ledger(DatasetStore.for_dataset(config.name))
    checks = {(row.column, row.check) for row in ledger.itertuples()}
    assert ("rate", "parse_percent") in checks
    assert ("opened", "parse_date('%d-%b-%y')") in checks


def test_the_service_takes_requests_in_the_drafted_contract(trained) -> None:  # type: ignore[no-untyped-def]
    from mlcycle.tasks.registry.bundle import load_bundle
    from mlcycle.tasks.registry.smoke import ServeError, serving_model

    config, result = trained
    fields = list(load_bundle(result.tag).features_schema.to_schema().columns)
    record = {"amount": 180000.0, "rate": 12.5, "opened": "1997-02-28", "zip": "02134", "segment": "3",
              "region": None, "origin": "NA"}  # fmt: skip
    assert sorted(record) == sorted(fields)
    offline = load_bundle(result.tag).predict_raw(pd.DataFrame([record]))[0]
    try:
        with serving_model(result.tag, timeout_s=120) as url:
            answer = httpx.post(f"{url}/predict", json={"records": [record]}, timeout=30)
            assert answer.status_code == 200, answer.text
            assert answer.json()["predictions"][0]["probability"] == pytest.approx(float(offline), abs=1e-6)
            refused = httpx.post(f"{url}/predict", json={"records": [{**record, "opened": "28-Feb-97"}]}, timeout=30)
            assert refused.status_code == 422 and "opened" in refused.text
    except ServeError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="module")
def penguins_drafted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`mlcycle init` on the CSV of the pinned palmerpenguins wheel, as a user would point it at the file."""
    import zipfile

    from mlcycle.tasks.ingest.read import fetch_wheel
    from mlcycle.tasks.paths import mlcycle_home

    source = load_config(ROOT / "configs" / "penguins.yaml").source
    wheel = fetch_wheel(source, mlcycle_home() / "cache" / "wheels")
    csv = tmp_path_factory.mktemp("penguins") / "penguins.csv"
    with zipfile.ZipFile(wheel) as archive:
        csv.write_bytes(archive.read(source.files[0].path))
    name = "penguins_init_it"
    proc = subprocess.run([sys.executable, "-c", "from mlcycle.flows.cli import main; main()", "init", str(csv),
                           "--target", "species", "--name", name],
                          cwd=csv.parent, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "target — the target: multiclass" in proc.stdout
    return csv.parent / "configs" / f"{name}.yaml"


def test_a_multiclass_table_goes_through_init_train_and_serve(penguins_drafted: Path, prefect_server: None,
                                                              local_ray: None) -> None:  # fmt: skip
    from mlcycle.flows.training import train_flow
    from mlcycle.tasks.registry import champion
    from mlcycle.tasks.registry.smoke import ServeError, serving_model

    small = {k: v for k, v in SMALL_RUN.items() if k != "source.sample_rows"}
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(penguins_drafted.parent.parent)
        config = load_config(penguins_drafted, {**small, "tune.searcher": "random"})
        result = train_flow(config)
    assert result.task == "multiclass" and result.test["accuracy"] > 0.8
    assert result.decision == "promote" and champion(config.name) == result.tag
    record = {"island": "Biscoe", "bill_length_mm": 48.6, "bill_depth_mm": 16.0, "flipper_length_mm": 230,
              "body_mass_g": 5800, "sex": "male", "year": "2009"}  # fmt: skip
    try:
        with serving_model(config.name, timeout_s=120) as url:
            answer = httpx.post(f"{url}/predict", json={"records": [record]}, timeout=30)
    except ServeError as exc:
        pytest.fail(str(exc))
    assert answer.status_code == 200, answer.text
    (prediction,) = answer.json()["predictions"]
    assert set(prediction["probabilities"]) == {"Adelie", "Chinstrap", "Gentoo"}
    assert prediction["label"] == "Gentoo" and sum(prediction["probabilities"].values()) == pytest.approx(1.0)
