"""Stopping what mlcycle started: a process, its process group and every process below it."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator


def stop_tree(pid: int, timeout_s: float = 30) -> None:
    """SIGTERM to the process group `pid` leads and to each of its descendants (some servers start their workers in
    sessions of their own, out of reach of the group), SIGKILL to whatever outlives `timeout_s`; returns once none of
    them is running."""
    import psutil

    try:
        tree = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    for proc in tree[1:]:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.terminate()
    _, alive = psutil.wait_procs(tree, timeout=timeout_s)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(alive, timeout=10)


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """These environment variables set for the block (libraries read them when they start work), then as before."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
