"""The OpenAPI document is the contract the service keeps: schemathesis, with every check it has, against a real
`bentoml serve` of the model the session trained. Requests the document calls valid must be answered 2xx, those it
calls invalid must be refused with a documented 4xx, answers must match their documented schemas, and nothing may
give a 5xx."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration

# Per operation; with its coverage phase (boundaries, each field's wrong types, missing and extra fields) a run of
# the eleven operations takes about 10 s here.
MAX_EXAMPLES = 100


def test_schemathesis_finds_no_failure_and_no_server_error(served_adult: str) -> None:
    # The CLI from the project folder: it reads schemathesis.toml there, as a developer's run does. A failure's
    # output names the check, the request (as curl) and the seed that reproduces it.
    run = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "run", f"{served_adult}/docs.json", "--checks", "all",
         "--max-examples", str(MAX_EXAMPLES), "--workers", "1", "--generation-database", "none", "--no-color",
         "--request-timeout", "60"],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-20000:]
    assert "No issues found" in output, output[-5000:]
    assert "Tested: 11" in output, output[-5000:]  # every operation was exercised, /metadata and the probes too


def test_document_states_refusals_uploads_and_nullable_fields(served_adult: str) -> None:
    document = httpx.get(f"{served_adult}/docs.json", timeout=30).json()
    paths = document["paths"]
    for route in ("/predict", "/explain"):
        assert set(paths[route]["post"]["responses"]) == {"200", "400", "401", "413", "422", "500"}
    batch = paths["/predict_batch"]["post"]
    assert set(batch["requestBody"]["content"]) == {"text/csv", "application/vnd.apache.parquet"}
    assert "415" in batch["responses"] and batch["requestBody"]["required"] is True
    assert "409" in paths["/reload"]["post"]["responses"]
    assert (
        paths["/reload"]["post"]["requestBody"]["content"]["application/json"]["schema"]["additionalProperties"]
        is False
    )
    assert "get" in paths["/metadata"]
    record = document["components"]["schemas"]["AdultFeaturesRecord"]["properties"]
    assert record["workclass"]["nullable"] is True and None in record["workclass"]["enum"]
    assert "anyOf" not in record["workclass"] and "nullable" not in record["sex"]
