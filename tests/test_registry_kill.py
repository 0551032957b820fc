"""Atomic promotion under a real kill: a process SIGKILLed inside a promotion leaves the old champion or the new one,
never none and never two, with version statuses and the log agreeing."""

from __future__ import annotations

import itertools
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mlcycle.tasks import registry
from tests.conftest import ROOT

# Promotes m:1 and m:2 in turn, forever. With PAUSE set, the promotion of m:2 stops inside its transaction (after
# the champion row and both statuses are written, before the log line and the commit) and says so on stdout.
PROMOTER = textwrap.dedent("""
    import os, sys, time
    from mlcycle.tasks import registry

    if os.environ.get("PAUSE"):
        log = registry._log

        def paused_log(conn, at, name, action, from_tag, to_tag, *rest):
            if to_tag == "m:2":
                print("inside", flush=True)
                time.sleep(3600)
            return log(conn, at, name, action, from_tag, to_tag, *rest)

        registry._log = paused_log
    print("ready", flush=True)
    while True:
        for tag in ("m:1", "m:2"):
            registry.promote(tag, reason="kill test")
""")


def _start(home: Path, pause: bool) -> subprocess.Popen[str]:
    env = {**os.environ, "MLCYCLE_HOME": str(home), "PAUSE": "1" if pause else ""}
    return subprocess.Popen([sys.executable, "-c", PROMOTER], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)


def _assert_consistent(expected_champions: set[str]) -> str:
    champion = registry.champion("m")
    assert champion in expected_champions
    statuses = {v.tag: v.status for v in registry.versions("m")}
    assert [t for t, s in statuses.items() if s == "champion"] == [champion]
    assert set(statuses.values()) <= {"champion", "retired", "challenger"}  # m:2 may never have been promoted
    log = registry.history("m")
    assert log[-1].to_tag == champion  # the last logged change is the one in force
    assert all(a.to_tag == b.from_tag for a, b in itertools.pairwise(log))  # an unbroken chain
    with sqlite3.connect(registry.registry_path()) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT COUNT(*) FROM champions WHERE name = 'm'").fetchone()[0] == 1
    return champion


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MLCYCLE_HOME", str(tmp_path))
    for tag in ("m:1", "m:2"):
        registry.register(tag)
    registry.promote("m:1", reason="first")
    return tmp_path


def test_a_kill_inside_the_promotion_transaction_keeps_the_old_champion(home: Path) -> None:
    proc = _start(home, pause=True)
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline().strip() for _ in range(2)]
        assert lines == ["ready", "inside"]  # m:1 was promoted again, m:2's promotion is half-written
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert _assert_consistent({"m:1"}) == "m:1"
    events_before = len(registry.history("m"))
    registry.promote("m:2", reason="after the kill")  # the database is not left locked
    assert registry.champion("m") == "m:2" and len(registry.history("m")) == events_before + 1


def test_kills_at_arbitrary_moments_of_a_promotion_loop_never_leave_none_or_two(home: Path) -> None:
    for delay in (0.3, 0.45, 0.6, 0.75, 0.9):
        proc = _start(home, pause=False)
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
            time.sleep(delay)  # promoting hundreds of times a second: the kill lands wherever it lands
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait(timeout=30)
        _assert_consistent({"m:1", "m:2"})
    assert len(registry.history("m")) > 10  # the loops really promoted
