"""The options and config loading every `mlcycle` command shares."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

ConfigOption = Annotated[
    Path, typer.Option("--config", "-c", help="Dataset config YAML, or a built-in demo's name (adult, bike, penguins).")
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print the result as JSON (for scripts) instead of a summary.")
]
SetOption = Annotated[
    list[str] | None, typer.Option("--set", help="Override a config value: --set tune.num_samples=4 (repeatable).")
]


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """`key.path=value` pairs; values are read as YAML (numbers, booleans, lists)."""
    overrides = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--set")
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides


def load_pipeline(config: Path, overrides: list[str] | None) -> Any:
    """The dataset config with `--set` overrides applied; a bad one ends the command with its reasons (exit 2)."""
    from pydantic import ValidationError

    from mlcycle.flows.exits import USAGE
    from mlcycle.schemas import load_config

    try:
        return load_config(config, parse_overrides(overrides))
    except FileNotFoundError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(USAGE) from None
    except (ValidationError, ValueError) as exc:
        typer.echo(f"error: {config}: {exc}", err=True)
        raise typer.Exit(USAGE) from None
