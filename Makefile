# mlcycle: every target creates .venv and installs the pinned dependencies first, if needed.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
CONFIG ?= configs/adult.yaml

.PHONY: install run test test-fast serve deploy undeploy simulate lock bench bench-small docs lint clean

install: $(VENV)/.installed

# --compile-bytecode: uv, unlike pip, writes no .pyc at install, and where PYTHONDONTWRITEBYTECODE is set (as on
# this machine) none is ever written, so every process compiled what it imported: `import ray.tune` took 3.8 s
# instead of 1.4 s, xgboost 4.4 s instead of 1.6 s, prefect 2.6 s instead of 1.3 s.
$(VENV)/.installed: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet uv
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -r requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	touch $@

RUN_SET ?= --set tune.time_budget_s=60

# Exit 3 (trained, the gate kept the champion) is an outcome of a demo run, not a failure of it.
run: install           ## train on the embedded defaults (Adult census income), a 60 s search; RUN_SET= for the full one
	$(BIN)/mlcycle train --config $(CONFIG) $(RUN_SET) || [ $$? -eq 3 ]

test: install          ## the whole suite: unit tests and real Prefect, Ray Tune and bentoml serve
	$(BIN)/python -m pytest

test-fast: install     ## unit tests only
	$(BIN)/python -m pytest -m "not integration"

serve: install         ## serve the Adult champion on http://127.0.0.1:3000 (loopback only)
	$(BIN)/mlcycle serve adult

deploy: install        ## Prefect server on loopback (unless PREFECT_API_URL is set), work pool, worker, deployments
	$(BIN)/mlcycle deploy

undeploy: install      ## stop the worker and the server that `make deploy` started (pids in .mlcycle/deploy/)
	$(BIN)/mlcycle undeploy

simulate: install      ## replay the bike-sharing history month by month through the cycle
	$(BIN)/mlcycle simulate bike

bench: install
	$(BIN)/python benchmarks/predict.py
	$(BIN)/python benchmarks/ingest.py
	$(BIN)/python benchmarks/tune.py

bench-small: install   ## every benchmark's small mode: tiny data, a few minutes (tests/integration/test_benchmarks.py)
	$(BIN)/python benchmarks/predict.py --small
	$(BIN)/python benchmarks/ingest.py --small
	$(BIN)/python benchmarks/tune.py --small
	$(BIN)/python benchmarks/cli.py --small
	$(BIN)/python benchmarks/own_data.py --small
	$(BIN)/python benchmarks/scale.py --small
	$(BIN)/python benchmarks/serve.py --small

docs: install          ## the documentation site, strict, into build/site/ (reference pages generated from the code)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

lint: install          ## ruff lint and format check (ruff runs through uv, pinned here)
	$(BIN)/uv tool run ruff@0.17.6 check flows tasks schemas serving tests benchmarks docs
	$(BIN)/uv tool run ruff@0.17.6 format --check flows tasks schemas serving tests benchmarks docs

lock:                  ## re-pin requirements.lock from requirements.in (records no download addresses)
	$(BIN)/uv pip compile requirements.in --python-version 3.11 --no-header --no-annotate -o requirements.lock

clean:
	rm -rf $(VENV) .mlcycle
