"""The cycle's commands (`mlcycle deploy`, `undeploy`, `watch`, `retrain`, `drift`, `simulate`), registered on the
main CLI by `flows.cli`.

No `from __future__ import annotations` here: typer reads the annotations, and the option types are local to
`register`.
"""

import json
from pathlib import Path
from typing import Annotated, Literal

import typer

from mlcycle.flows import exits
from mlcycle.flows.options import ConfigOption, JsonOption, SetOption, load_pipeline

ConfigsOption = Annotated[
    list[Path] | None,
    typer.Option("--config", "-c", help="Dataset configs to deploy (repeatable); default: every configs/*.yaml."),
]


def register(app: typer.Typer) -> None:
    @app.command()
    def deploy(
        config: ConfigsOption = None,
        set_: SetOption = None,
        name: Annotated[
            list[str] | None,
            typer.Option(help="Deploy only these: entrypoint function/deployment name, e.g. `train_flow/bike`."),
        ] = None,
        print_prefect_yaml: Annotated[
            bool,
            typer.Option("--print-prefect-yaml", help="Print the deployments as a prefect.yaml and start nothing."),
        ] = False,
        git_repo: Annotated[
            str | None,
            typer.Option(help="The project's git repository, for workers on other machines: each run clones it."),
        ] = None,
        git_branch: Annotated[str | None, typer.Option(help="The branch workers clone (with --git-repo).")] = None,
        git_token_secret: Annotated[
            str | None,
            typer.Option(help="A Prefect Secret block holding the token for a private --git-repo (its name)."),
        ] = None,
    ) -> None:
        """Bring up the local production setup: Prefect server on loopback (unless PREFECT_API_URL names one),
        the `mlcycle` process work pool and a worker, and the same nine deployments for every config."""
        from mlcycle.flows.deploy import GitSource, deploy, render_prefect_yaml, summary

        files = config or sorted(Path("configs").glob("*.yaml"))
        if not files:
            typer.echo("error: no configs/*.yaml here: run `mlcycle deploy` in a project folder, or pass --config",
                       err=True)  # fmt: skip
            raise typer.Exit(exits.USAGE)
        configs = [load_pipeline(f, set_) for f in files]
        git = GitSource(git_repo, git_branch, git_token_secret) if git_repo else None
        if print_prefect_yaml:
            typer.echo(render_prefect_yaml(configs, git), nl=False)
            return
        result = deploy(configs, name, git=git)
        typer.echo(summary(result))
        typer.echo(f"export PREFECT_API_URL={result.api_url}   # then e.g. prefect deployment run 'train/bike'")
        typer.echo("stop with: mlcycle undeploy (or make undeploy)")

    @app.command()
    def undeploy() -> None:
        """Stop the worker and the Prefect server that `mlcycle deploy` started (nothing else)."""
        from mlcycle.flows.deploy import undeploy as stop

        stopped = stop()
        typer.echo("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))

    @app.command()
    def watch(config: ConfigOption = Path("configs/bike.yaml"), set_: SetOption = None) -> None:
        """Ingest new files from the dataset's landing folder once (what the watch-landing deployment runs)."""
        from mlcycle.flows.watch import watch_flow

        typer.echo(json.dumps(watch_flow(load_pipeline(config, set_)).model_dump(), indent=2))

    @app.command(epilog=exits.HELP)
    def retrain(
        config: ConfigOption = Path("configs/bike.yaml"),
        mode: Annotated[str | None, typer.Option(help="full or refresh; default: the config's retrain.mode.")] = None,
        set_: SetOption = None,
        json_: JsonOption = False,
    ) -> None:
        """Retrain now: a full re-tune or an incremental refresh of the champion.

        Exits 0 when the new model was promoted (or there was nothing to retrain on), 3 when the gate rejected it."""
        from mlcycle.flows.retrain import retrain_flow
        from mlcycle.tasks import registry

        chosen: Literal["full", "refresh"] | None = mode  # type: ignore[assignment]
        result = retrain_flow(load_pipeline(config, set_), "manual", chosen)
        status = registry.version(result.tag).status if result.tag else None
        if json_:
            typer.echo(json.dumps({**result.model_dump(), "status": status}, indent=2))
        else:
            typer.echo(f"{result.dataset} ({result.mode}): {result.reason}; new model {result.tag or 'none'}"
                       + (f", {status}" if status else ""))  # fmt: skip
        raise typer.Exit(exits.REJECTED if status == "rejected" else exits.OK)

    @app.command()
    def drift(config: ConfigOption = Path("configs/bike.yaml"), set_: SetOption = None) -> None:
        """Check recent batches and served requests for drift against the champion's training data."""
        from mlcycle.flows.drift import drift_flow

        typer.echo(json.dumps(drift_flow(load_pipeline(config, set_)).model_dump(), indent=2))

    @app.command()
    def simulate(
        dataset: Annotated[str, typer.Argument(help="Only `bike`: the replay needs dated rows.")] = "bike",
        config: ConfigOption = Path("configs/bike.yaml"),
        set_: SetOption = None,
    ) -> None:
        """Replay the bike-sharing history hour by hour, the counts arriving later as labels; RMSE per month of 2012
        for scheduled retraining, degradation-triggered retraining and shadow-gated promotion."""
        if dataset != "bike":
            raise typer.BadParameter(
                "only `bike` can be replayed: it is the dataset with dated rows", param_hint="DATASET"
            )
        from mlcycle.flows.simulate import simulate

        simulate(load_pipeline(config, set_), echo=typer.echo)
