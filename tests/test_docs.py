"""The documentation cannot rot: the site builds in strict mode (a broken link, anchor or missing page fails), the
configuration reference names every field of the code's config with its description, and the README is short and
its commands exist as written."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from pydantic import BaseModel, Field

from mlcycle.schemas.config import PipelineConfig
from tests.conftest import ROOT

README = ROOT / "README.md"
BIN = Path(sys.executable).parent
# Commands the README shows that belong to the shell, not to mlcycle: nothing to check.
SHELL_COMMANDS = {"export", "cp", "curl", "cat", "cd", "mkdir"}
# Installers: not run here; installing the wheel with the lock as constraints is tests/integration/test_wheel.py's.
INSTALLERS = {"pip"}
# Commands the README already shows in their final form while they are being built: skipped, not failed, until then.
BEING_BUILT = {"init"}


def load_generator() -> ModuleType:
    """docs/gen_reference.py, loaded from its file as MkDocs loads a hook."""
    spec = importlib.util.spec_from_file_location("gen_reference", ROOT / "docs" / "gen_reference.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def mkdocs(site: Path, prelude: str = "") -> subprocess.CompletedProcess[str]:
    """`mkdocs build --strict` into `site`, in a process of its own; `prelude` runs first (to alter the code)."""
    script = f"{prelude}\nimport sys\nfrom mkdocs.__main__ import cli\nsys.argv = ['mkdocs', *sys.argv[1:]]\ncli()"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run([sys.executable, "-c", script, "build", "--strict", "--site-dir", str(site)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip


def test_the_site_builds_strictly_with_the_generated_references(tmp_path: Path) -> None:
    done = mkdocs(tmp_path / "site")
    assert done.returncode == 0, done.stderr
    config_page = (tmp_path / "site" / "reference" / "config.html").read_text()
    cli_page = (tmp_path / "site" / "reference" / "cli.html").read_text()
    assert "tune.grace_progress" in config_page and "source.parse.&lt;column&gt;.kind" in config_page
    assert "mlcycle train" in cli_page and "--config" in cli_page
    assert not list((tmp_path / "site").rglob("*.py")), "the generator is a hook, not a page"


def test_the_committed_references_are_what_the_code_generates() -> None:
    """docs/reference/*.md are committed, so that the README's links to them lead somewhere in the repository; a
    change to the config or the CLI rewrites them."""
    generator = load_generator()
    stale = [f"docs/{uri}" for uri in generator.stale_pages()]
    assert stale == [], f"{', '.join(stale)}: not what the code generates; run `{generator.WRITE_COMMAND}`"


def test_a_stale_or_missing_reference_page_is_found(tmp_path: Path) -> None:
    generator = load_generator()
    assert sorted(generator.write_pages(tmp_path)) == sorted([generator.CONFIG_PAGE, generator.CLI_PAGE])
    assert generator.stale_pages(tmp_path) == []
    assert generator.write_pages(tmp_path) == []
    cli = tmp_path / generator.CLI_PAGE
    cli.write_text(cli.read_text().replace("## `mlcycle train`", "## `mlcycle trains`"))
    (tmp_path / generator.CONFIG_PAGE).unlink()
    assert generator.stale_pages(tmp_path) == [generator.CONFIG_PAGE, generator.CLI_PAGE]


def test_a_config_field_without_a_description_fails_the_build(tmp_path: Path) -> None:
    """A field added at any depth without `description=` stops `mkdocs build`, naming the field."""
    prelude = (
        "import mlcycle.schemas.config as c\n"
        "class Tune(c.TuneConfig):\n    shiny: int = 3\n"
        "class Config(c.PipelineConfig):\n    tune: Tune = c.Field(default_factory=Tune, description='t')\n"
        "c.PipelineConfig = Config\n"
    )
    done = mkdocs(tmp_path / "site", prelude)
    assert done.returncode != 0
    assert "tune.shiny" in done.stderr


def json_schema_fields(schema: dict[str, Any], defs: dict[str, Any], key: str = "") -> dict[str, str]:
    """Every field of the config as pydantic's JSON schema sees it (another walk than the generator's): key →
    description."""
    found: dict[str, str] = {}
    for name, prop in schema.get("properties", {}).items():
        child = f"{key}.{name}" if key else name
        found[child] = prop.get("description", "")
        for inner, rest in nested_refs(prop):
            found |= json_schema_fields(defs[inner], defs, child + rest)
    return found


def nested_refs(prop: dict[str, Any]) -> list[tuple[str, str]]:
    """The models a property holds, each with how its key continues."""
    if "$ref" in prop:
        return [(prop["$ref"].split("/")[-1], "")]
    refs = [r for option in prop.get("anyOf", []) for r in nested_refs(option)]
    if isinstance(prop.get("items"), dict):
        refs += [(name, f"[]{rest}") for name, rest in nested_refs(prop["items"])]
    if isinstance(prop.get("additionalProperties"), dict):
        refs += [(name, f".<column>{rest}") for name, rest in nested_refs(prop["additionalProperties"])]
    return refs


def test_the_config_reference_has_every_field_with_its_description() -> None:
    schema = PipelineConfig.model_json_schema()
    fields = json_schema_fields(schema, schema["$defs"])
    page = load_generator().config_reference()
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `([^`]+)` \|.*$", page, re.MULTILINE)}
    assert set(rows) == set(fields)
    for key, description in fields.items():
        assert description.replace("|", "\\|") in rows[key], key
    assert "<code>16</code>" in rows["tune.num_samples"] and "≥ 1" in rows["tune.num_samples"]
    assert "required" in rows["source"]


def test_fields_without_descriptions_are_found_at_any_depth() -> None:
    class Inner(BaseModel):
        told: int = Field(default=1, description="described")
        bare: int = 2

    class Outer(BaseModel):
        top: str = "no description"
        inner: Inner = Field(default_factory=Inner, description="one")
        many: list[Inner] = Field(default_factory=list, description="a list")
        keyed: dict[str, Inner | None] = Field(default_factory=dict, description="a mapping")

    generator = load_generator()
    assert generator.missing_descriptions(Outer) == ["top", "inner.bare", "many[].bare", "keyed.<column>.bare"]
    assert generator.missing_descriptions() == []


def test_the_readme_stays_a_front_door() -> None:
    assert len(README.read_text().splitlines()) <= 200


def test_the_readmes_links_lead_somewhere() -> None:
    targets = re.findall(r"\]\(([^)\s]+)\)", README.read_text())
    local = [t.split("#")[0] for t in targets if not re.match(r"[a-z]+:", t)]
    assert local
    assert [t for t in local if not (ROOT / t).exists()] == []


def shell_commands(markdown: str) -> list[list[str]]:
    """The commands of a page's ```bash blocks, as argument lists: comments dropped, continued lines joined."""
    commands = []
    for block in re.findall(r"^```bash\n(.*?)^```", markdown, re.DOTALL | re.MULTILINE):
        pending = ""
        for line in block.splitlines():
            pending = f"{pending}\n{line}" if pending else line
            try:
                words = shlex.split(pending.replace("\\\n", " "), comments=True)
            except ValueError:  # a quote still open: the command goes on
                continue
            pending = ""
            while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):  # VAR=value before the program
                words = words[1:]
            if words:
                commands.append(words)
    return commands


def mlcycle_help(argvs: list[list[str]]) -> list[dict[str, Any]]:
    """`--help` of each mlcycle command line, in one process of its own (one import of the CLI, not one each): the
    command path of the line (the words that name commands), whether it exists, and its --help's exit code."""
    script = """
import json, sys
from typer.main import get_command
from typer.testing import CliRunner
from mlcycle.flows.cli import app

group = get_command(app)
results = []
for argv in json.loads(sys.argv[1]):
    node, path = group, []
    while hasattr(node, "commands") and len(argv) > len(path) and argv[len(path)] in node.commands:
        node = node.commands[argv[len(path)]]
        path.append(argv[len(path)])
    known = (bool(path) and not hasattr(node, "commands")) or argv == ["--help"]  # a command, or the program
    code = CliRunner().invoke(app, [*path, "--help"]).exit_code if known else None
    results.append({"argv": argv, "path": path, "known": known, "exit_code": code})
print(json.dumps(results))
"""
    done = subprocess.run([sys.executable, "-c", script, json.dumps(argvs)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def program(word: str) -> str:
    """`.venv/bin/mlcycle` → `mlcycle`."""
    return Path(word).name


def page_commands() -> dict[str, list[list[str]]]:
    """The shell commands of the README and of every documentation page."""
    pages = [README, *sorted((ROOT / "docs").rglob("*.md"))]
    return {str(page.relative_to(ROOT)): shell_commands(page.read_text()) for page in pages}


@pytest.fixture(scope="module")
def help_results() -> dict[tuple[str, ...], dict[str, Any]]:
    """`mlcycle ... --help` of every mlcycle command the README and the pages show, keyed by its arguments."""
    lines = [c[1:] for commands in page_commands().values() for c in commands if program(c[0]) == "mlcycle"]
    return {tuple(r["argv"]): r for r in mlcycle_help(lines)}


def test_the_readmes_commands_exist_as_written(help_results: dict[tuple[str, ...], dict[str, Any]]) -> None:
    """Every command the README shows is checked: a make target with `make -n`, an mlcycle or prefect command with
    its `--help` (the command path exactly as written). The entry point itself runs as a program once."""
    commands = page_commands()["README.md"]
    programs = {program(c[0]) for c in commands}
    unknown = programs - {"make", "mlcycle", "prefect"} - SHELL_COMMANDS - INSTALLERS
    assert not unknown, f"README shows commands test_docs cannot check: {sorted(unknown)}"

    for words in (c for c in commands if c[0] == "make"):
        done = subprocess.run(["make", "-n", *words[1:]], cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 0, f"{' '.join(words)}: {done.stderr}"

    entry = ROOT / ".venv" / "bin" / "mlcycle"
    entry = entry if entry.exists() else BIN / "mlcycle"
    assert subprocess.run([str(entry), "--help"], cwd=ROOT, capture_output=True).returncode == 0

    for words in (c for c in commands if program(c[0]) == "prefect"):
        path = [w for w in words[1:] if re.fullmatch(r"[a-z][a-z-]*", w)]
        done = subprocess.run([str(BIN / "prefect"), *path, "--help"], cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 0, f"prefect {' '.join(path)} --help: {done.stderr}"

    lines = [tuple(c[1:]) for c in commands if program(c[0]) == "mlcycle"]
    assert lines, "the README shows mlcycle commands"
    pending = []
    for result in (help_results[line] for line in lines):
        if not result["known"] and result["argv"][0] in BEING_BUILT:
            pending.append(result["argv"][0])
            continue
        assert result["known"], f"README: mlcycle {' '.join(result['argv'])}: no such command"
        assert result["exit_code"] == 0, f"mlcycle {' '.join(result['path'])} --help failed"
    if pending:
        pytest.skip(f"mlcycle {', '.join(sorted(set(pending)))} is not in this mlcycle yet; every other command passed")


def test_the_docs_mlcycle_commands_exist(help_results: dict[tuple[str, ...], dict[str, Any]]) -> None:
    """The mlcycle commands the documentation pages show exist, and their --help runs."""
    broken = [
        f"{page}: mlcycle {' '.join(c[1:])}"
        for page, commands in page_commands().items()
        for c in commands
        if program(c[0]) == "mlcycle" and page != "README.md"
        for r in [help_results[tuple(c[1:])]]
        if (not r["known"] and r["argv"][0] not in BEING_BUILT) or (r["known"] and r["exit_code"] != 0)
    ]
    assert broken == []
