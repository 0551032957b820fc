"""The `mlcycle` command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

app = typer.Typer(help="mlcycle: the whole ML cycle for tabular data as Prefect flows.", no_args_is_help=True)

ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="Dataset config YAML.", exists=True, dir_okay=False)]
SetOption = Annotated[
    list[str] | None, typer.Option("--set", help="Override a config value: --set tune.num_samples=4 (repeatable).")
]


@app.callback()
def _setup() -> None:
    # Before Prefect, Ray or BentoML are imported: they read these at import time.
    from tasks.paths import configure_environment

    configure_environment()


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """`key.path=value` pairs; values are read as YAML (numbers, booleans, lists)."""
    overrides = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--set")
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides


@app.command()
def train(config: ConfigOption = Path("configs/adult.yaml"), set_: SetOption = None) -> None:
    """Run the training flow: ingest, validate, split, preprocess, tune, evaluate, package."""
    from pydantic import ValidationError

    from schemas import load_config

    try:
        pipeline = load_config(config, parse_overrides(set_))
    except (ValidationError, ValueError) as exc:
        typer.echo(f"error: {config}: {exc}", err=True)
        raise typer.Exit(2) from None
    from flows.training import train_flow

    result = train_flow(pipeline)
    typer.echo(json.dumps(result.model_dump(), indent=2))




@app.command()
def serve(
    tag: Annotated[str, typer.Argument(help="Model tag, or a name for its newest version.")] = "adult",
    port: int = 3000,
    host: Annotated[str, typer.Option(help="Bind address; 0.0.0.0 only when you mean it.")] = "127.0.0.1",
) -> None:
    """Serve a model bundle over HTTP with BentoML."""
    env = {**os.environ, "MLCYCLE_MODEL_TAG": tag}
    root = Path(__file__).resolve().parent.parent
    cmd = [sys.executable, "-m", "bentoml", "serve", "serving.service:MLCycleService", "--host", host, "--port", str(port)]
    raise typer.Exit(subprocess.call(cmd, env=env, cwd=root))


def main() -> None:
    app()
