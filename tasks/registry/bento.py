"""A Bento of one model: the installed mlcycle package, the model (whose bundle holds its project's schema file) and
the exact versions of what the service imports, built with `bentoml build` from a throw-away context.

The Bento does not need the repository or the user's project: `bentoml serve <bento>` and `bentoml containerize`
run the service from the Bento's own `src/mlcycle/` and its model store.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from packaging.requirements import Requirement

from mlcycle.tasks.errors import UserError

SUBPACKAGES = ("flows", "tasks", "schemas", "serving", "configs")


class BentoBuildError(UserError, RuntimeError):
    """`bentoml build` failed; carries its output."""


@dataclass(frozen=True)
class BuiltBento:
    tag: str  # the Bento's tag, mlcycle-<model name>:<version>
    model: str  # the model tag it pins


def copy_package(target: Path) -> Path:
    """The installed mlcycle package, subpackage by subpackage (an editable install keeps them in separate folders),
    without caches; returns the copy's folder."""
    import mlcycle

    out = target / "mlcycle"
    out.mkdir(parents=True)
    top = Path(mlcycle.__file__).parent
    for name in ("__init__.py", "api.py", "py.typed"):
        if (top / name).exists():
            shutil.copy2(top / name, out / name)
    for name in SUBPACKAGES:
        folder = Path(importlib.import_module(f"mlcycle.{name}").__path__[0])
        shutil.copytree(folder, out / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return out


def pinned_requirements(distribution: str = "mlcycle") -> list[str]:
    """`name==version` of every installed distribution that `distribution` needs, directly or not (extras it asks
    for included; its own optional extras not): the versions the service runs with here."""
    seen: dict[str, str] = {}
    todo = [(distribution, frozenset[str]())]
    while todo:
        name, extras = todo.pop()
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        key = re.sub(r"[-_.]+", "-", dist.metadata["Name"]).lower()
        if key in seen and not extras:
            continue
        seen[key] = dist.version
        for line in dist.requires or []:
            requirement = Requirement(line)
            wanted = [{"extra": e} for e in extras] or [{"extra": ""}]
            if requirement.marker is None or any(requirement.marker.evaluate(env) for env in wanted):
                todo.append((requirement.name, frozenset(requirement.extras)))
    seen.pop(re.sub(r"[-_.]+", "-", distribution).lower(), None)
    return [f"{name}=={version}" for name, version in sorted(seen.items())]


def build_bento(tag: str, timeout_s: float = 600) -> BuiltBento:
    """`bentoml build` of the service serving `tag` (a full tag, pinned into the Bento)."""
    with tempfile.TemporaryDirectory(prefix="mlcycle-bento-") as folder:
        context = Path(folder)
        copy_package(context)
        (context / "requirements.txt").write_text("\n".join(pinned_requirements()) + "\n")
        template = resources.files("mlcycle.serving") / "bentofile.yaml"
        # Named after the model, never `mlcycle`: `bentoml serve mlcycle:<version>` would import the mlcycle module.
        name = f"mlcycle-{tag.partition(':')[0]}"
        (context / "bentofile.yaml").write_text(template.read_text().replace("name: mlcycle\n", f"name: {name}\n", 1))
        env = {**os.environ, "MLCYCLE_MODEL_TAG": tag}
        done = subprocess.run([sys.executable, "-m", "bentoml", "build", "-f", "bentofile.yaml", "."], cwd=context,
                              env=env, capture_output=True, text=True, timeout=timeout_s)  # fmt: skip
    output = done.stdout + done.stderr
    found = re.search(rf"({re.escape(name)}:[a-z0-9]+)", output)
    if done.returncode != 0 or not found:
        raise BentoBuildError(f"bentoml build failed for {tag}:\n{output[-4000:]}")
    return BuiltBento(tag=found.group(1), model=tag)
