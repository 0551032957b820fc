"""The reference pages, generated from the code so they cannot drift from it.

- `reference/config.md`: every field of `PipelineConfig` (`mlcycle.schemas.config`), at any depth, with its type,
  constraints, default and description. A field without a description stops the generation, naming the field.
- `reference/cli.md`: every `mlcycle` command and option, from the Typer app (`mlcycle.flows.cli`).

Both pages are committed under docs/reference/, so that they read where the README is read (on the repository's
web page, in an editor); `tests/test_docs.py` fails, naming the command to run, when they differ from what this
file generates. MkDocs runs this file as a hook (`hooks:` in mkdocs.yml) and builds the site's two pages from the
code it is built with, not from the committed files. As a script:

    .venv/bin/python docs/gen_reference.py --write     # rewrite docs/reference/*.md from the code
    .venv/bin/python docs/gen_reference.py config      # print a page (or: cli)
    .venv/bin/python docs/gen_reference.py check       # list the config fields that lack a description
"""

from __future__ import annotations

import json
import re
import sys
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

CONFIG_PAGE = "reference/config.md"
CLI_PAGE = "reference/cli.md"
DOCS = Path(__file__).resolve().parent
WRITE_COMMAND = ".venv/bin/python docs/gen_reference.py --write"
# The first line of a committed page: hidden where the Markdown is rendered, read where it is edited.
GENERATED = f"<!-- Generated from the code by docs/gen_reference.py: do not edit; run `{WRITE_COMMAND}`. -->\n"


class MissingDescriptions(ValueError):
    """Fields of the pipeline config that have no `description=`: the reference would have nothing to say."""


@dataclass(frozen=True)
class Section:
    """One model of the config tree, at the dotted key where it appears (`source.csv`, `preprocess.derived[]`)."""

    key: str
    model: type[BaseModel]
    about: str

    @property
    def anchor(self) -> str:
        return self.key.replace("[]", "").replace(".<column>", "").replace(".", "-") or "top-level"

    @property
    def title(self) -> str:
        return f"`{self.key}`" if self.key else "Top level"


def heading_id(title: str) -> str:
    """The id MkDocs and the repository's web page both give a heading: lower case, punctuation dropped."""
    return re.sub(r"\s+", "-", re.sub(r"[^\w\s-]", "", title).strip().lower())


def nested_models(annotation: Any) -> Iterator[tuple[str, type[BaseModel]]]:
    """The config models inside a field's type, each with how its key continues: `''`, `[]` or `.<column>`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield "", annotation
        return
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is list:
        yield from ((f"[]{rest}", model) for rest, model in nested_models(args[0]))
    elif origin is dict:
        yield from ((f".<column>{rest}", model) for rest, model in nested_models(args[1]))
    elif origin in (typing.Union, types.UnionType):
        for arg in args:
            yield from nested_models(arg)


def sections(model: type[BaseModel] | None = None, key: str = "") -> list[Section]:
    """The config's models, depth first in field order, starting with the top level; each introduced by its
    docstring, or else by the description of the field that holds it."""
    if model is None:
        from mlcycle.schemas.config import PipelineConfig

        model = PipelineConfig
    found = [Section(key, model, first_paragraph(model.__doc__))]
    for name, field in model.model_fields.items():
        for rest, inner in nested_models(field.annotation):
            child = f"{key}.{name}{rest}" if key else f"{name}{rest}"
            found += [
                replace(s, about=s.about or (field.description or "")) if s.key == child else s
                for s in sections(inner, child)
            ]
    return found


def missing_descriptions(model: type[BaseModel] | None = None) -> list[str]:
    """The dotted keys of every field, at any depth, that has no description."""
    return [
        f"{section.key}.{name}" if section.key else name
        for section in sections(model)
        for name, field in section.model.model_fields.items()
        if not (field.description or "").strip()
    ]


def first_paragraph(doc: str | None) -> str:
    return " ".join((doc or "").strip().split("\n\n")[0].split())


def type_text(annotation: Any) -> str:
    """A field's type as a reader of the YAML thinks of it: `int`, `list[str]`, `"train" | "test"`, `str | null`."""
    if annotation is type(None):
        return "null"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation.__name__
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Literal:
        return " | ".join(json.dumps(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_text(a) for a in args)
    if origin in (list, dict):
        return f"{origin.__name__}[{', '.join(type_text(a) for a in args)}]"
    return getattr(annotation, "__name__", str(annotation))


def constraints_text(field: FieldInfo) -> str:
    """Bounds and patterns pydantic enforces: `≥ 1`, `> 0, < 0.5`, `matches ^[a-z]…`."""
    symbols = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}
    parts = []
    for item in field.metadata:
        for attr, symbol in symbols.items():
            if getattr(item, attr, None) is not None:
                parts.append(f"{symbol} {getattr(item, attr)}")
        if getattr(item, "min_length", None) is not None:
            parts.append(f"length ≥ {item.min_length}")
        if getattr(item, "pattern", None):
            parts.append(f"matches {code(item.pattern)}")
    return ", ".join(parts)


def default_text(field: FieldInfo, by_model: dict[type[BaseModel], Section]) -> str:
    if field.is_required():
        return "required"
    value = field.default_factory() if field.default_factory is not None else field.default  # type: ignore[call-arg]
    if value is PydanticUndefined:
        return "required"
    if isinstance(value, BaseModel):
        section = by_model.get(type(value))
        return f"[see below](#{section.anchor})" if section else "defaults"
    return code(json.dumps(value, ensure_ascii=False))


def code(text: str) -> str:
    """A code span that survives a table cell (Python-Markdown splits cells on `|` even inside backticks)."""
    return "<code>" + text.replace("&", "&amp;").replace("<", "&lt;").replace("|", "&#124;") + "</code>"


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def config_reference() -> str:
    """The configuration reference page, in Markdown."""
    missing = missing_descriptions()
    if missing:
        raise MissingDescriptions(
            "schemas/config.py: give these fields a description=... (the configuration reference is generated from "
            "them): " + ", ".join(missing)
        )
    found = sections()
    by_model = {}
    for section in found:  # a model used at two keys links to its first
        by_model.setdefault(section.model, section)
    lines = [
        "# Configuration reference",
        "",
        "Every setting of a dataset's YAML file (`configs/<name>.yaml`), generated from `PipelineConfig` in",
        "`mlcycle.schemas.config` (`schemas/config.py`), the one place defaults live. Any of them can be overridden",
        "for one run with `--set KEY=VALUE` (the value is read as YAML: `--set tune.num_samples=4`,",
        "`--set slices=[sex]`) or, from Python, `mlcycle.train(config, tune={...})`; the same model is the parameter",
        "form of the `train/<name>` deployment in the Prefect UI.",
        "",
        "A key ending in `[]` is an item of a list; `<column>` stands for a column name used as a mapping key.",
        "",
    ]
    for section in found:
        # A plain anchor, not `{#id}`: the page reads as committed Markdown too, where `{#id}` would show as text.
        if heading_id(section.title) != section.anchor:
            lines += [f'<a id="{section.anchor}"></a>', ""]
        lines += [f"## {section.title}", ""]
        if section.about:
            lines += [section.about, ""]
        lines += ["| key | type | default | description |", "|---|---|---|---|"]
        for name, field in section.model.model_fields.items():
            key = f"{section.key}.{name}" if section.key else name
            kind = code(type_text(field.annotation))
            inner = [by_model[m] for _, m in nested_models(field.annotation) if m in by_model]
            if inner:
                kind = f"[{kind}](#{inner[0].anchor})"
            bounds = constraints_text(field)
            if bounds:
                kind += f", {bounds}"
            lines.append(f"| `{key}` | {kind} | {default_text(field, by_model)} | {cell(field.description or '')} |")
        lines.append("")
    return "\n".join(lines)


def cli_reference() -> str:
    """The command-line reference page, in Markdown, from the Typer app."""
    import typer
    from typer.cli import get_docs_for_click
    from typer.core import MARKUP_MODE_KEY
    from typer.main import get_command

    from mlcycle.flows.cli import app

    command = get_command(app)
    ctx = typer.Context(command, info_name="mlcycle", obj={MARKUP_MODE_KEY: app.rich_markup_mode})
    body = get_docs_for_click(obj=command, ctx=ctx, name="mlcycle", title="CLI reference")
    intro = (
        "Every `mlcycle` command, generated from the Typer app in `mlcycle.flows.cli` (`flows/cli.py`). "
        "`mlcycle COMMAND --help` prints the same in the terminal.\n\n"
    )
    title, _, rest = body.partition("\n\n")
    return f"{title}\n\n{intro}{rest.strip()}\n"


def pages() -> dict[str, str]:
    """Every generated page by its path under docs/, as committed (the generated-file notice first)."""
    return {CONFIG_PAGE: GENERATED + config_reference().rstrip("\n") + "\n",
            CLI_PAGE: GENERATED + cli_reference().rstrip("\n") + "\n"}  # fmt: skip


def stale_pages(docs: Path = DOCS, generated: dict[str, str] | None = None) -> list[str]:
    """The committed pages under `docs` that are missing or differ from what the code generates now."""
    generated = pages() if generated is None else generated
    committed = {uri: docs / uri for uri in generated}
    return [uri for uri, path in committed.items() if not path.is_file() or path.read_text("utf-8") != generated[uri]]


def write_pages(docs: Path = DOCS) -> list[str]:
    """Rewrite the committed pages that differ from the code; returns the ones written."""
    generated = pages()
    written = stale_pages(docs, generated)
    for uri in written:
        (docs / uri).parent.mkdir(parents=True, exist_ok=True)
        (docs / uri).write_text(generated[uri], encoding="utf-8")
    return written


def on_files(files: Any, config: Any) -> Any:
    """MkDocs hook: the site's reference pages, generated from the code the site is built with (they replace the
    committed copies, which may lag behind a change until `--write` is run)."""
    from mkdocs.exceptions import PluginError
    from mkdocs.structure.files import File

    try:
        generated = pages()
    except MissingDescriptions as exc:
        raise PluginError(str(exc)) from None
    for uri, content in generated.items():
        existing = files.get_file_from_path(uri)
        if existing is not None:
            files.remove(existing)
        files.append(File.generated(config, uri, content=content))
    return files


def main(argv: list[str]) -> int:
    what = argv[0] if argv else "check"
    if what == "check":
        missing = missing_descriptions()
        for key in missing:
            print(f"no description: {key}")
        return 1 if missing else 0
    if what == "--write":
        written = write_pages()
        print("\n".join(f"wrote docs/{uri}" for uri in written) or "docs/reference/ is up to date")
        return 0
    printers = {"config": config_reference, "cli": cli_reference}
    if what not in printers:
        print("usage: gen_reference.py [--write | config | cli | check]", file=sys.stderr)
        return 2
    print(printers[what]())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
