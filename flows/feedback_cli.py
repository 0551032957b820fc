"""The feedback commands (`mlcycle performance`, `mlcycle trace`, `mlcycle shadow start|stop|show`), registered on the
main CLI by `flows.cli`.

No `from __future__ import annotations` here: typer reads the annotations.
"""

import json
from pathlib import Path
from typing import Annotated

import typer

from mlcycle.flows.options import ConfigOption, SetOption, load_pipeline


def register(app: typer.Typer) -> None:
    @app.command()
    def performance(config: ConfigOption = Path("configs/bike.yaml"), set_: SetOption = None) -> None:
        """Run the performance check now: ingest label files, join labels to logged predictions, live metrics per
        window and slice; emits mlcycle.performance.degraded, and decides a challenger in shadow."""
        from mlcycle.flows.performance import performance_flow

        typer.echo(json.dumps(performance_flow(load_pipeline(config, set_)).model_dump(), indent=2))

    @app.command()
    def trace(
        name: Annotated[str, typer.Argument(help="Model name, e.g. bike.")],
        request_id: Annotated[str, typer.Argument(help="The request_id of an answer.")],
    ) -> None:
        """One answer's lineage: its records and predictions, the model and its training snapshot, the labels that
        came back, and the live metrics they counted towards."""
        from mlcycle.tasks.monitor.feedback import trace_request

        found = trace_request(name, request_id)
        typer.echo(json.dumps(found, indent=2, default=str))
        if not found["found"]:
            raise typer.Exit(1)

    shadow_app = typer.Typer(help="Score a challenger beside the champion on live traffic before it may serve.")
    app.add_typer(shadow_app, name="shadow")

    @shadow_app.command("start")
    def shadow_start(
        tag: Annotated[str, typer.Argument(help="Full tag of a challenger (status challenger).")],
        reason: Annotated[str, typer.Option(help="Why, for the promotion log.")] = "put in shadow by hand",
    ) -> None:
        """Put a challenger in shadow: the service scores every logged request with it too (within its reload
        poll); the performance check promotes or rejects it on the labelled requests both models scored."""
        from mlcycle.tasks import registry

        try:
            event = registry.put_in_shadow(tag, reason=reason)
        except registry.RegistryError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        typer.echo(f"{tag} in shadow beside {event.from_tag or 'no champion'} since {event.at}")

    @shadow_app.command("stop")
    def shadow_stop(name: Annotated[str, typer.Argument(help="Model name.")]) -> None:
        """Stop shadowing (the challenger keeps its status; nothing is promoted or rejected)."""
        from mlcycle.tasks import registry

        stopped = registry.end_shadow(name)
        typer.echo(f"{stopped} no longer in shadow" if stopped else f"{name} has no challenger in shadow")

    @shadow_app.command("show")
    def shadow_show(name: Annotated[str, typer.Argument(help="Model name.")]) -> None:
        """The challenger in shadow and the newest live evidence on it."""
        from mlcycle.tasks import registry
        from mlcycle.tasks.monitor.feedback import latest_report

        tag = registry.shadow(name)
        report = latest_report(name)
        evidence = report.shadow_check if report and report.shadow == tag else None
        typer.echo(json.dumps({"shadow": tag, "since": registry.shadow_since(name), "champion": registry.champion(name),
                               "live": evidence}, indent=2, default=str))  # fmt: skip
