"""The watch-landing flow: ingest the files dropped into a dataset's landing folder since the last look.

Each accepted batch emits `mlcycle.batch.ingested` on `mlcycle.dataset.<name>` with its row counts (the ingest
flow's `publish_batch` task does it); the `retrain-on-new-data` deployment trigger reacts to those events.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from mlcycle.flows.ingest import IngestResult, ingest_flow
from mlcycle.schemas import PipelineConfig
from mlcycle.schemas.config import LandingConfig
from mlcycle.tasks.paths import mlcycle_home


def landing_folder(config: PipelineConfig) -> Path:
    """`retrain.landing`, or `$MLCYCLE_HOME/landing/<name>`; a landing source's own folder wins."""
    if config.source.kind == "landing" and config.source.landing is not None:
        return Path(config.source.landing.path)
    return Path(config.retrain.landing) if config.retrain.landing else mlcycle_home() / "landing" / config.name


def landing_config(config: PipelineConfig) -> PipelineConfig:
    """The dataset's config reading its landing folder (same CSV options and value rewrites as its source)."""
    if config.source.kind == "landing":
        return config
    landing = LandingConfig(path=str(landing_folder(config)))
    source = config.source.model_copy(update={"kind": "landing", "landing": landing, "files": [], "package": None,
                                              "version": None, "sha256": None, "sample_rows": None})  # fmt: skip
    return config.model_copy(update={"source": source})


@flow(name="watch-landing", log_prints=True)
def watch_flow(config: PipelineConfig) -> IngestResult:
    """Ingest the landing folder's new, settled files; each accepted batch emits `mlcycle.batch.ingested`."""
    folder = landing_folder(config)
    folder.mkdir(parents=True, exist_ok=True)
    result = ingest_flow(landing_config(config))
    accepted = [b for b in result.batches if b.outcome == "accepted"]
    lines = [f"# Landing folder `{folder}`", "", f"{len(accepted)} new batch(es), "
             f"{sum(b.rows_accepted for b in accepted)} accepted rows.", ""]  # fmt: skip
    lines += [f"- {b.message}" for b in result.batches] + [f"- {note}" for note in result.notes]
    create_markdown_artifact(key=f"watch-{config.name}".replace("_", "-"), markdown="\n".join(lines),
                             description="What watch-landing ingested")  # fmt: skip
    return result
