"""The `mlcycle` command line."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperGroup

from mlcycle.flows import exits
from mlcycle.flows.options import ConfigOption, JsonOption, SetOption, load_pipeline

if TYPE_CHECKING:
    from mlcycle.flows.training import TrainResult


class _Commands(TyperGroup):
    """Every command: a user's mistake (`tasks.errors.UserError`, raised anywhere below, flows included) ends it with
    one `error:` line and the error's exit code, not a traceback (`--debug` lets the traceback through)."""

    def invoke(self, ctx: Any) -> Any:
        from mlcycle.tasks.errors import UserError

        try:
            return super().invoke(ctx)
        except UserError as exc:
            if exits.debug():
                raise
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None


app = typer.Typer(help="mlcycle: the whole ML cycle for tabular data as Prefect flows.", no_args_is_help=True,
                  epilog=exits.HELP, cls=_Commands)  # fmt: skip
# Commands that run no Prefect flow and leave no process of theirs running: they need neither Prefect's console
# quieted nor a supervising parent (`main`), and the quick ones among them stay quick.
_NO_FLOWS = {"models", "schema", "serve", "export", "reproduce", "undeploy", "init", "quarantine", "build"}


@app.callback()
def _setup(
    ctx: typer.Context,
    debug: Annotated[
        bool, typer.Option("--debug", help="Print the traceback of an error too (the Prefect run keeps it anyway).")
    ] = False,
) -> None:
    # Before Prefect, Ray or BentoML are imported: they read these at import time.
    from mlcycle.tasks.paths import configure_environment

    configure_environment()
    if debug:
        os.environ[exits.DEBUG_ENV] = "1"
    if ctx.invoked_subcommand not in _NO_FLOWS and "--help" not in sys.argv:
        exits.hide_user_error_tracebacks()


@app.command(epilog=exits.HELP)
def train(
    config: ConfigOption = Path("configs/adult.yaml"),
    set_: SetOption = None,
    json_: JsonOption = False,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Compute every step again, even those whose inputs did not change.")
    ] = False,
) -> None:
    """Run the training flow: ingest, validate, split, preprocess, tune, evaluate, package, gate.

    A step whose inputs (data, schema, the config it reads, code) did not change since a run computed it is
    reused: the same config on the same data is the same model. Exits 0 when the model was promoted (or is the
    champion), 3 when the gate rejected it, 1 when training failed."""
    pipeline = load_pipeline(config, set_)
    from mlcycle.flows.training import prestart_ray, train_flow

    prestart_ray(pipeline, cache=not no_cache)  # Ray starts while Prefect does
    _trained(train_flow(pipeline, cache=not no_cache), json_, config)


@app.command(epilog=exits.HELP)
def refresh(
    config: ConfigOption = Path("configs/adult.yaml"),
    base: Annotated[str | None, typer.Option(help="Model to continue; default: the dataset's champion.")] = None,
    set_: SetOption = None,
    json_: JsonOption = False,
) -> None:
    """Incremental refresh: continue boosting the model on batches that arrived after its snapshot.

    Exits 0 when the refreshed model was promoted (or nothing was new), 3 when the gate rejected it, 1 on failure."""
    pipeline = load_pipeline(config, set_)
    from mlcycle.flows.training import refresh_flow

    result = refresh_flow(pipeline, base)
    if result is None:
        typer.echo(json.dumps({"refreshed": False}) if json_ else "nothing new since the base model's snapshot")
        return
    _trained(result, json_, config)


def _trained(result: TrainResult, as_json: bool, config: Path | None = None) -> None:
    """Print a training result (a summary, or JSON) and end with its exit code: 0 promoted, 3 rejected. `config`:
    the `--config` given, for the command that lists the quarantined rows."""
    if as_json:
        typer.echo(json.dumps(result.model_dump(), indent=2))
    else:
        primary = result.primary_metric
        verdict = ("promoted: the champion now" if result.decision == "promote" else
                   f"REJECTED by the promotion gate; the champion is {result.champion or 'none'}")  # fmt: skip
        if "model" in result.reused:
            verdict = f"reused from run {result.reused['model']}; " + (
                "the champion" if result.decision == "promote" else f"{result.decision}, the champion is "
                f"{result.champion or 'none'}")  # fmt: skip
        typer.echo(f"{result.tag}: test {primary} {result.test[primary]:.4f} (trivial baseline "
                   f"{result.baseline[primary]:.4f}); {verdict}")  # fmt: skip
        for reason in result.gate_reasons:
            typer.echo(f"  {reason}")
        if "search" in result.reused:
            typer.echo(f"reused: the search of run {result.reused['search']} (--no-cache to search again)")
        if result.quarantined:
            no_target = result.quarantined_no_target
            typer.echo(f"quarantined at ingest: {result.quarantined:,} row(s)"
                       + (f", {no_target:,} of them without a target" if no_target else "")
                       + f"; list them: mlcycle quarantine show --config {config or result.tag.split(':')[0]}")  # fmt: skip
        if result.report:
            typer.echo(f"report: {result.report}")
        from mlcycle.tasks.tracking import OFF

        if result.tracking != OFF:
            typer.echo(f"mlflow: {result.tracking}")
    raise typer.Exit(exits.OK if result.decision == "promote" else exits.REJECTED)


@app.command()
def ingest(
    config: Annotated[Path, typer.Option("--config", "-c", help="Dataset config YAML, or a built-in demo's name.")],
    paths: Annotated[
        list[str] | None, typer.Argument(help="Files, globs or folders to ingest instead of the config's source.")
    ] = None,
    set_: SetOption = None,
    json_: JsonOption = False,
) -> None:
    """Ingest new batches into the curated store: validate, quarantine bad rows, reject bad batches.

    Ends with a table of what happened to each input; exits 1 when a batch was rejected."""
    pipeline = load_pipeline(config, set_)
    from mlcycle.flows.ingest import IngestRejected, ingest_flow

    try:
        result = ingest_flow(pipeline, paths or None)
    except IngestRejected as exc:
        if exc.summary is not None:
            typer.echo(json.dumps(exc.summary.model_dump(), indent=2) if json_ else exc.summary.table())
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exits.FAILED) from None
    typer.echo(json.dumps(result.model_dump(), indent=2) if json_ else result.table())


schema_app = typer.Typer(help="Review schemas: draft one from data, or see how a batch departs from one.")
app.add_typer(schema_app, name="schema")


@schema_app.command("infer")
def schema_infer(
    path: Annotated[Path, typer.Argument(help="A CSV (any separator) or Parquet file of the new dataset.")],
    name: Annotated[str, typer.Option(help="Dataset name; the classes are <Name>Features and <Name>Schema.")],
    target: Annotated[str | None, typer.Option(help="The column to predict: kept out of the features schema.")] = None,
    out: Annotated[Path | None, typer.Option(help="Write the module here instead of printing it.")] = None,
    sep: Annotated[str, typer.Option(help="Field separator, any length, e.g. ';' or ', '.")] = ",",
    names: Annotated[
        str | None, typer.Option(help="Column names, comma-separated, for a file without a header line.")
    ] = None,
    no_header: Annotated[bool, typer.Option("--no-header", help="The file has no header line.")] = False,
) -> None:
    """Draft the pandera schema module of a file (as `mlcycle init` does, without a config), for a person to review."""
    from mlcycle.flows.init_cli import csv_options
    from mlcycle.tasks.ingest.draft import DraftError, draft_dataset, schema_module

    try:
        draft = draft_dataset(path, target, name=name, csv=csv_options(path, sep, names, no_header))
    except (DraftError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exits.USAGE) from None
    module = schema_module(draft)
    if out is None:
        typer.echo(module)
    else:
        out.write_text(module)
        typer.echo(f"wrote {out}: review every field before using it", err=True)


@schema_app.command("diff")
def schema_diff(
    config: ConfigOption,
    paths: Annotated[
        list[str] | None, typer.Argument(help="Files to compare; default: the newest rejected batch.")
    ] = None,
    batch: Annotated[str | None, typer.Option(help="Compare the raw copy of this batch.")] = None,
) -> None:
    """Show how data departs from the dataset's schema: new or missing columns, new categories, types, ranges."""
    from mlcycle.schemas import load_config, resolve_schema
    from mlcycle.tasks.ingest.read import FileInput, SourceError, parse_batch, read_input_bytes
    from mlcycle.tasks.ingest.schema_review import diff_frame
    from mlcycle.tasks.ingest.store import DatasetStore, StoreError, get_batch, list_batches

    pipeline = load_config(config)
    schema = resolve_schema(pipeline.schema_ref)
    store = DatasetStore.for_dataset(pipeline.name)
    try:
        if paths:
            items = [(p, FileInput(p, format=pipeline.source.format)) for p in paths]
        else:
            records = [get_batch(store, batch)] if batch else list_batches(store, status="rejected")[-1:]
            if not records or not records[-1].raw_path:
                message = f"error: {pipeline.name}: no rejected batch with a raw copy; name files to compare"
                typer.echo(message, err=True)
                raise typer.Exit(1)
            record = records[-1]
            fmt = "parquet" if str(record.raw_path).endswith(".parquet") else "csv"
            items = [(f"{record.source} (batch {record.batch_id})", FileInput(str(record.raw_path), format=fmt))]
        for title, item in items:
            parsed = parse_batch(read_input_bytes(item), item, pipeline.source)
            diff = diff_frame(parsed.frame, schema, parsed.rejected_rows)
            typer.echo(diff.to_markdown(f"Schema diff: {title}") + "\n")
    except (SourceError, StoreError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


quarantine_app = typer.Typer(help="The quarantine ledger: rows that failed validation, with their reasons.")
app.add_typer(quarantine_app, name="quarantine")


@quarantine_app.command("replay")
def quarantine_replay(config: ConfigOption, set_: SetOption = None) -> None:
    """Validate quarantined rows again under the current schema and admit those that now pass."""
    pipeline = load_pipeline(config, set_)
    exits.hide_user_error_tracebacks()  # the only flow of its group (`quarantine show` need not import Prefect)
    from mlcycle.flows.ingest import replay_flow

    typer.echo(json.dumps(replay_flow(pipeline).model_dump(), indent=2))


@quarantine_app.command("show")
def quarantine_show(
    config: ConfigOption,
    batch: Annotated[str | None, typer.Option(help="Only this batch; default: every batch, newest first.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Rows to show at most.")] = 50,
    json_: JsonOption = False,
) -> None:
    """The quarantined rows of a dataset, with their batch, source, row number, reasons and values as read."""
    pipeline = load_pipeline(config, None)
    from mlcycle.tasks.ingest.store import DatasetStore, quarantine_report
    from mlcycle.tasks.tables import markdown_table

    rows = quarantine_report(DatasetStore.for_dataset(pipeline.name), batch)
    if json_:
        typer.echo(json.dumps(rows[:limit], indent=2, default=str))
        return
    shown = [{**r, "values": ", ".join(f"{k}={v}" for k, v in r["values"].items())} for r in rows[:limit]]
    typer.echo(markdown_table(shown, ["batch", "batch status", "source", "row", "reasons", "values"]))
    if len(rows) > limit:
        typer.echo(f"… {len(rows) - limit} more quarantined row(s); --limit or --json for all", err=True)


@app.command()
def serve(
    tag: Annotated[
        str, typer.Argument(help="A model name (serves its champion, following promotions) or a full tag.")
    ] = "adult",
    port: int = 3000,
    host: Annotated[str, typer.Option(help="Bind address (default loopback only).")] = "127.0.0.1",
    public: Annotated[bool, typer.Option("--public", help="Listen on all interfaces (0.0.0.0).")] = False,
    batching: Annotated[
        bool | None, typer.Option("--batching/--no-batching", help="Override serving.batching.enabled.")
    ] = None,
) -> None:
    """Serve a model over HTTP with BentoML (set MLCYCLE_API_KEY to require a Bearer token for predictions).

    A name is served through its champion only: a name with no champion is refused (exit 1). A version the gate
    rejected is served only when named by its full tag, with a warning. The command becomes the server (exec):
    SIGTERM and SIGINT reach `bentoml serve` itself, which stops its workers and frees the port."""
    from mlcycle.tasks import registry

    if ":" in tag:
        status = registry.version(tag).status  # an unknown tag ends here, with its reason (exit 1)
        if status == "rejected":
            typer.echo(f"warning: {tag} was REJECTED by the promotion gate (mlcycle models show {tag}); serving it "
                       f"because its full tag was named", err=True)  # fmt: skip
    else:
        registry.serving_tag(tag)  # refuses a name without a champion, naming the fix (exit 1)
    if public:
        host = "0.0.0.0"
    if host not in ("127.0.0.1", "localhost", "::1") and not os.environ.get("MLCYCLE_API_KEY"):
        typer.echo(
            f"warning: listening on {host} without MLCYCLE_API_KEY: anyone who can reach it can predict", err=True
        )
    env = {**os.environ, "MLCYCLE_MODEL_TAG": tag}
    if batching is not None:
        overrides = json.loads(env.get("MLCYCLE_SERVING") or "{}")
        overrides.setdefault("batching", {})["enabled"] = batching
        env["MLCYCLE_SERVING"] = json.dumps(overrides)
    from mlcycle.schemas.config import ServingConfig

    cmd = [sys.executable, "-m", "bentoml", "serve", "mlcycle.serving.service:MLCycleService", "--host", host,
           "--port", str(port), "--timeout-keep-alive", str(ServingConfig().keep_alive_s)]  # fmt: skip
    sys.stdout.flush()
    sys.stderr.flush()
    # exec, not a child: a supervisor's SIGTERM or a Ctrl-C reaches the server, and nothing is left behind holding
    # the port.
    os.execve(sys.executable, cmd, env)


models_app = typer.Typer(help="The model registry: versions, champion and promotion log.")
app.add_typer(models_app, name="models")


@models_app.command("list")
def models_list(name: Annotated[str | None, typer.Argument(help="Model name; default: all.")] = None) -> None:
    """Versions with creation time, primary metric, data snapshot and status, newest first."""
    from mlcycle.flows.model_views import versions_table

    typer.echo(versions_table(name))


@models_app.command("show")
def models_show(tag: Annotated[str, typer.Argument(help="Full tag, or a name for its champion.")]) -> None:
    """Everything recorded for one version: metrics, lineage, config, gate decision, events."""
    from mlcycle.flows.model_views import describe

    try:
        typer.echo(json.dumps(describe(tag), indent=2, default=str))
    except FileNotFoundError as exc:
        typer.echo(f"error: {tag}: its files are missing from the model store ({exc.filename})", err=True)
        raise typer.Exit(exits.FAILED) from None


@models_app.command("history")
def models_history(name: str) -> None:
    """The promotion log of a model name: promotions, rejections and rollbacks, oldest first."""
    from mlcycle.flows.model_views import history_table

    typer.echo(history_table(name))


@app.command()
def rollback(
    name: str,
    to: Annotated[
        str | None, typer.Option("--to", help="Version to go back to; default: the previous champion.")
    ] = None,
    reason: Annotated[str, typer.Option(help="Why, for the promotion log.")] = "manual rollback",
) -> None:
    """Make an earlier version champion again once it has passed a smoke test with the real service."""
    from mlcycle.flows.models import RollbackError, rollback_flow, rollback_target

    try:
        rollback_target(name, to)  # a target that cannot be named fails here, before a flow run is started
        result = rollback_flow(name, to, reason)
    except RollbackError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(json.dumps(result.model_dump(), indent=2))


@app.command()
def export(
    tag: Annotated[str, typer.Argument(help="Full tag, or a name for its champion.")],
    format_: Annotated[str, typer.Option("--format", help="onnx or xgboost-json.")] = "onnx",
    out: Annotated[Path | None, typer.Option(help="Folder to write; default under MLCYCLE_HOME/exports.")] = None,
    compact: Annotated[bool, typer.Option(help="Refit with at most --max-trees trees of --max-depth.")] = False,
    max_trees: Annotated[int, typer.Option(min=1)] = 50,
    max_depth: Annotated[int, typer.Option(min=1)] = 4,
) -> None:
    """Export a model for client devices, checked against the registered model on the golden rows."""
    from bentoml.exceptions import NotFound

    from mlcycle.tasks.registry.export import ExportError, export_model
    from mlcycle.tasks.registry.reproduce import ReproduceError

    if format_ not in ("onnx", "xgboost-json"):
        typer.echo(f"error: --format must be onnx or xgboost-json, got {format_!r}", err=True)
        raise typer.Exit(2)
    try:
        report = export_model(tag, format_, out, compact, max_trees, max_depth)  # type: ignore[arg-type]
    except (ExportError, ReproduceError, FileNotFoundError, NotFound) as exc:
        typer.echo(f"error: export failed: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(json.dumps(report.as_dict(), indent=2))
    typer.echo(f"{report.folder}: {report.folder_bytes / 1e3:.1f} kB ({report.model_file} {report.model_bytes / 1e3:.1f}"
               f" kB, {report.trees} trees); parity max |diff| {report.parity_max_abs_diff:.3g} on "
               f"{report.parity_rows} golden rows; single-row p50 {report.latency_p50_ms:.3f} ms, "
               f"p99 {report.latency_p99_ms:.3f} ms", err=True)  # fmt: skip
    if report.compact:
        c = report.compact
        typer.echo(f"compact: {c['trees_before']} → {c['trees']} trees of depth ≤ {c['max_depth']}; test {c['metric']} "
                   f"{c['full']:.4f} → {c['compact']:.4f} (costs {c['cost']:.4f})", err=True)  # fmt: skip


@app.command()
def build(tag: Annotated[str, typer.Argument(help="Full tag, or a name for its champion.")]) -> None:
    """Build a Bento of one model: the installed mlcycle, the model (with its project's schema) and the exact
    versions of what the service imports. Serve it with `bentoml serve`, or `bentoml containerize` it."""
    from mlcycle.tasks import registry
    from mlcycle.tasks.registry.bento import build_bento

    built = build_bento(tag if ":" in tag else registry.serving_tag(tag))
    typer.echo(f"built {built.tag} serving {built.model}")
    typer.echo(f"  bentoml serve {built.tag}        # or: bentoml containerize {built.tag}")


@app.command()
def reproduce(
    tag: Annotated[str, typer.Argument(help="Full tag, or a name for its champion.")],
    tolerance: Annotated[float, typer.Option(help="Largest prediction difference accepted.")] = 1e-6,
) -> None:
    """Refit a model from its recorded snapshot, config and seed; check its test-set predictions match."""
    from bentoml.exceptions import NotFound

    from mlcycle.tasks.registry.reproduce import ReproduceError, reproduce

    try:
        result = reproduce(tag, tolerance)
    except (ReproduceError, NotFound) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    verdict = "reproduced" if result.matches else "NOT reproduced"
    typer.echo(f"{result.tag} {verdict}: {result.rows} test rows of snapshot {result.data_hash}, max |registered - "
               f"refit| = {result.max_abs_diff:.3g} (tolerance {tolerance:g}); preprocessing "
               f"{'identical' if result.same_preprocessor else 'DIFFERENT'}, "
               f"{'same' if result.same_rounds else 'different'} number of trees")  # fmt: skip
    raise typer.Exit(0 if result.matches else 1)


def main() -> None:
    command = next((arg for arg in sys.argv[1:] if not arg.startswith("-")), None)
    if command in _NO_FLOWS or command is None or "--help" in sys.argv or os.environ.get(exits.SUPERVISED_ENV):
        app()
    else:  # a command that starts processes: run it in a child that a SIGTERM cannot leave anything behind of
        sys.exit(exits.supervise(sys.argv[1:]))


def _register_cycle() -> None:
    from mlcycle.flows import cycle_cli, feedback_cli, init_cli, tracking_cli

    init_cli.register(app)
    cycle_cli.register(app)
    feedback_cli.register(app)
    tracking_cli.register(app)


_register_cycle()
