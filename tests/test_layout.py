"""The layout keeps its promises: the work never depends on the wiring or the server, contracts depend on no work,
and no two modules import each other, directly or round a longer circle (imports inside functions count too)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGES = ("mlcycle", "flows", "tasks", "schemas", "serving")  # installed as mlcycle, mlcycle.flows, ...
BARE = ("flows", "tasks", "schemas", "serving", "configs")


def module_name(path: Path) -> str:
    """The module's installed name: `tasks/train/tune.py` is `mlcycle.tasks.train.tune`."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    parts = parts[:-1] if parts[-1] == "__init__" else parts
    return ".".join(parts if parts[0] == "mlcycle" else ["mlcycle", *parts])


def stage(module: str) -> str:
    """`flows`, `tasks`, `schemas`, `serving`, or `mlcycle` for the API at the top."""
    return module.split(".")[1] if module.count(".") else module


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules a file imports, anywhere in it: `from a.b import c` is `a.b.c` when that is a module."""
    found: set[str] = set()
    is_package = path.name == "__init__.py"
    here = module_name(path)
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = here.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in modules else base)
    return {name for name in found if name in modules and name != here}


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports_of(path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in graph.get(node, ()):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_work_and_the_contracts_never_import_the_wiring_or_the_server() -> None:
    graph = import_graph()
    wrong = {
        module: sorted(t for t in targets if stage(t) in ("flows", "serving", "api"))
        for module, targets in graph.items()
        if stage(module) in ("tasks", "schemas")
    }
    assert {m: t for m, t in wrong.items() if t} == {}


def test_contracts_import_no_work() -> None:
    graph = import_graph()
    wrong = {
        m: sorted(t for t in targets if stage(t) == "tasks") for m, targets in graph.items() if stage(m) == "schemas"
    }
    assert {m: t for m, t in wrong.items() if t} == {}


def test_no_import_cycles() -> None:
    assert cycles(import_graph()) == []


def test_the_graph_sees_the_stages() -> None:
    """The checks above read a real graph: the wiring imports the work under the one import name."""
    graph = import_graph()
    assert len(graph) > 60
    assert "mlcycle.tasks.train.tune" in graph["mlcycle.flows.training"]
    assert "mlcycle.flows.training" in graph["mlcycle.api"]


def test_nothing_imports_a_bare_top_level_name() -> None:
    """Installed, only `mlcycle` exists: `import tasks` or `from flows import x` would work only in a checkout."""
    wrong = {}
    for name, path in project_modules().items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            imported = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                        [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])  # fmt: skip
            bare = [i for i in imported if i.split(".")[0] in BARE]
            if bare:
                wrong[name] = bare
    assert wrong == {}


def test_the_walk_sees_every_kind_of_import(tmp_path: Path) -> None:
    """The checks above can fail: a circle through a function-level and a relative import is found."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    modules = project_modules()
    source = ROOT / "tasks" / "train" / "final.py"
    assert "mlcycle.tasks.train.tune" in imports_of(source, modules)  # imported inside a function
    assert "mlcycle.tasks.train.boost" in imports_of(source, modules)


@pytest.mark.parametrize("package", ["tasks/ingest", "tasks/train", "tasks/registry", "tasks/monitor"])
def test_stages_are_packages(package: str) -> None:
    assert (ROOT / package / "__init__.py").is_file()
