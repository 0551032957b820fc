"""`mlcycle init`: a new dataset from one raw file, with no code to write.

No `from __future__ import annotations` here: typer reads the annotations at run time.
"""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mlcycle.flows import exits

if TYPE_CHECKING:
    from mlcycle.schemas.config import CsvOptions


def register(app: typer.Typer) -> None:
    @app.command()
    def init(
        path: Annotated[Path, typer.Argument(help="The raw data: a CSV (any separator) or Parquet file.")],
        target: Annotated[str, typer.Option("--target", "-t", help="The column to predict.")],
        name: Annotated[
            str | None, typer.Option(help="Dataset name (lower case); default: from the file name.")
        ] = None,
        task: Annotated[
            str | None, typer.Option(help="binary, multiclass or regression; default: guessed from the target.")
        ] = None,
        positive: Annotated[
            str | None, typer.Option(help="Binary tasks: the class predicted as 1; default: the rarer one.")
        ] = None,
        names: Annotated[
            str | None, typer.Option(help="Column names, comma-separated, for a file without a header line.")
        ] = None,
        no_header: Annotated[
            bool, typer.Option("--no-header", help="The file has no header line (columns named c1, c2, ...).")
        ] = False,
        sep: Annotated[str, typer.Option(help="Field separator, any length, e.g. ';' or ', '.")] = ",",
        weight: Annotated[str | None, typer.Option(help="A column of sample weights (never a feature).")] = None,
        time_column: Annotated[
            str | None,
            typer.Option(
                help="The column that orders the rows: split by time. A date or ISO 8601 timestamp (a zone is read as "
                "UTC), or numbers: a year, a month (its year column beside it is used too), epoch seconds."
            ),
        ] = None,
        test_from: Annotated[
            str | None,
            typer.Option(
                help="Time split: rows at or after this moment are the test set, e.g. 2021-11-01 (or 2021 for a year "
                "column); wins over the 15% test share."
            ),
        ] = None,
        valid_from: Annotated[
            str | None,
            typer.Option(help="Time split: rows from this moment to the test cut are the validation set."),
        ] = None,
        drop: Annotated[
            list[str] | None,
            typer.Option(
                help="Columns to leave out (never features nor request fields): 'A,B' or 'A:the reason' (a reason "
                "holds no comma); may be repeated. Written to the config's drop: with the reason."
            ),
        ] = None,
        test: Annotated[
            Path | None,
            typer.Option(help="An official test file with the same columns: every row of it is the test set."),
        ] = None,
        sample_rows: Annotated[int, typer.Option(min=100, help="Rows read to decide, at most.")] = 200_000,
        force: Annotated[bool, typer.Option(help="Overwrite existing schema and config files.")] = False,
    ) -> None:
        """Draft schemas/<name>.py and configs/<name>.yaml in the current folder (the project) from a raw file,
        printing what was decided per column.

        Then `mlcycle train --config configs/<name>.yaml` trains with no edits.
        """
        from mlcycle.tasks.ingest.draft import (
            DraftError,
            InitDefect,
            draft_dataset,
            parse_drop,
            summary_lines,
            write_project,
        )

        try:
            csv = csv_options(path, sep, names, no_header)
            draft = draft_dataset(path, target, name=name, task=task, positive=positive, csv=csv, weight=weight,
                                  time_column=time_column, test_from=test_from, valid_from=valid_from,
                                  drop=parse_drop(drop), test=test,
                                  max_rows=sample_rows)  # fmt: skip
            files = write_project(draft, Path("."), force=force)
        except (DraftError, ValueError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(exits.USAGE) from None
        except InitDefect as exc:  # init's own defect, not the user's: say so, and what to send
            typer.echo(f"error: {exc}", err=True)
            for line in summary_lines(draft):
                typer.echo(line, err=True)
            raise typer.Exit(exits.FAILED) from None
        for line in summary_lines(draft):
            typer.echo(line)
        typer.echo(f"wrote {files.schema} and {files.config}: review them, then")
        typer.echo(f"  mlcycle train --config {files.config}")


def csv_options(path: Path, sep: str, names: str | None, no_header: bool) -> "CsvOptions":
    """How to read the file, from the command's options: `\\t` for a tab, names for a headerless file (c1 … cN
    when none are given)."""
    from mlcycle.schemas.config import CsvOptions

    sep = sep.encode().decode("unicode_escape") if "\\" in sep else sep
    column_names = [n.strip() for n in names.split(",")] if names else None
    header = not (no_header or column_names)
    if column_names is None and not header:
        column_names = _numbered_columns(path, sep)
    return CsvOptions(header=header, names=column_names, sep=sep)


def _numbered_columns(path: Path, sep: str) -> list[str]:
    """c1 … cN for a headerless file, N counted on its first line."""
    from mlcycle.schemas.config import CsvOptions
    from mlcycle.tasks.ingest.draft import DraftError
    from mlcycle.tasks.ingest.read import single_character_separator

    try:
        with path.open("rb") as fh:
            first = fh.readline()
    except OSError as exc:
        raise DraftError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    opts, data = single_character_separator(CsvOptions(sep=sep), first, str(path))
    count = len(data.decode(errors="replace").rstrip("\r\n").split(opts.sep))
    return [f"c{i}" for i in range(1, count + 1)]
