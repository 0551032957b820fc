"""`mlcycle tracking sync`: replay the queue of the MLflow mirror, registered on the main CLI by `flows.cli`.

No `from __future__ import annotations` here: typer reads the annotations at run time.
"""

import math
from typing import Annotated

import typer

tracking_app = typer.Typer(help="The mirror of runs and model versions to MLflow (`tracking.mlflow_uri`).")


def register(app: typer.Typer) -> None:
    app.add_typer(tracking_app, name="tracking")


@tracking_app.command("sync")
def sync(
    uri: Annotated[
        str | None, typer.Option(help="Push every queued record to this server instead of the one it was meant for.")
    ] = None,
    timeout_s: Annotated[float, typer.Option(min=0.1, help="How long to wait for the server's health page.")] = 10.0,
) -> None:
    """Push what waits in the queue to MLflow, oldest first (runs, trials, model versions, the `champion` alias);
    what is already there is not written twice."""
    from mlcycle.flows.exits import FAILED
    from mlcycle.tasks.tracking import pending, push_pending, queue_dir

    if not pending():
        typer.echo(f"nothing queued in {queue_dir()}: MLflow is up to date")
        return
    outcome = push_pending(timeout_s, math.inf, uri=uri, patient=True)
    if not outcome.complete:
        typer.echo(f"error: {outcome.summary()}", err=True)
        raise typer.Exit(FAILED)
    typer.echo(outcome.summary())
