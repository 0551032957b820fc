"""Where mlcycle keeps its state: one home folder, `MLCYCLE_HOME` (default `./.mlcycle`)."""

from __future__ import annotations

import logging
import os
from pathlib import Path


def mlcycle_home() -> Path:
    """The home folder; read from the environment at call time, never at import."""
    return Path(os.environ.get("MLCYCLE_HOME", ".mlcycle")).resolve()


def configure_environment() -> Path:
    """Point BentoML and Ray below the home folder and switch telemetry off; entry points call this first."""
    home = mlcycle_home()
    os.environ["MLCYCLE_HOME"] = str(home)
    os.environ.setdefault("BENTOML_HOME", str(home / "bentoml"))
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # mlflow reads DO_NOT_TRACK only as "true"
    # The temporary Prefect server takes 16-18 s to start on a fresh home; its default 20 s wait is too tight.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    # mlcycle's own loggers go to the terminal and, inside a run, to the Prefect UI.
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "mlcycle")
    # ...and outside a run (the service, a notebook) they only go to the terminal.
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
    logging.getLogger("mlcycle").setLevel(logging.INFO)
    return home
