"""How an `mlcycle` command ends: its exit code (docs/cli-exit-codes.md) and, for a user's mistake, one line that
names the thing and the fix, never a traceback. The traceback stays in the Prefect run (its logs keep it) and
`mlcycle --debug` prints it too."""

from __future__ import annotations

import logging
import os
import signal
import sys
from types import FrameType

OK = 0  # done; `train`, `refresh`, `retrain`: the model was trained and promoted (or there was nothing to do)
FAILED = 1  # the command could not do what was asked: rejected data, an unknown model, a failed run
USAGE = 2  # a bad option, argument, separator or config file: nothing was run
REJECTED = 3  # `train`, `refresh`, `retrain`: the model was trained and saved, and the promotion gate rejected it
INTERRUPTED = 130  # SIGINT (Ctrl-C): what the command had started has been stopped
TERMINATED = 143  # SIGTERM: likewise

HELP = (
    "Exit codes: 0 done (a trained model was promoted); 1 failed; 2 bad option, argument or config; 3 trained, "
    "but the gate rejected the model; 130 interrupted (SIGINT); 143 terminated (SIGTERM). See docs/cli-exit-codes.md."
)
DEBUG_ENV = "MLCYCLE_DEBUG"


def debug() -> bool:
    """Whether `--debug` (or MLCYCLE_DEBUG=1) asked for tracebacks."""
    return os.environ.get(DEBUG_ENV) == "1"


SUPERVISED_ENV = "MLCYCLE_SUPERVISED"  # set in the child that runs a supervised command


def supervise(argv: list[str]) -> int:
    """Run `mlcycle ARGV` in a child process and stand by it; returns its exit code.

    A command that runs flows starts processes of its own (Prefect's temporary server, Ray's node, a smoke test's
    `bentoml serve` with workers in sessions of their own) and, inside a flow, Prefect turns SIGTERM into an exception
    raised wherever the code is, Ray's C-level waits included, where it can abort the process (seen: exit 134) and
    leave those processes behind. So the command runs in a child, and this process, which runs nothing else, takes
    SIGTERM and SIGINT: it stops the child and every process below it (SIGTERM, then SIGKILL after 10 s), waits until
    all are gone, and ends with 143 or 130. A Ctrl-C also reaches the child with the terminal's process group."""
    import subprocess

    from mlcycle.tasks.processes import stop_tree

    child = subprocess.Popen([sys.executable, "-c", "from mlcycle.flows.cli import main; main()", *argv],
                             env={**os.environ, SUPERVISED_ENV: "1"})  # fmt: skip
    stopped: list[int] = []

    def stop(signum: int, frame: FrameType | None) -> None:
        if not stopped:
            stopped.append(signum)
            stop_tree(child.pid, 10)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    code = child.wait()
    if stopped:
        return TERMINATED if stopped[0] == signal.SIGTERM else INTERRUPTED
    return code if code >= 0 else 128 - code


class _HideUserErrors(logging.Filter):
    """Drops the console's copy of a record that carries a user's mistake (the command prints it on one line)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from mlcycle.tasks.errors import UserError

        error = record.exc_info[1] if record.exc_info else None
        return not isinstance(error, UserError)


def hide_user_error_tracebacks() -> None:
    """Keep Prefect's console handlers from printing the traceback of a user's mistake; the Prefect run (its API log
    handler) keeps it, and --debug leaves the console alone."""
    if debug():
        return
    import prefect.main  # noqa: F401  (sets up Prefect's logging: its console handlers exist from here on)
    from prefect.logging.handlers import PrefectConsoleHandler

    loggers = [
        logging.getLogger(),
        *(x for x in logging.Logger.manager.loggerDict.values() if isinstance(x, logging.Logger)),
    ]
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, PrefectConsoleHandler) and not any(
                isinstance(f, _HideUserErrors) for f in handler.filters
            ):
                handler.addFilter(_HideUserErrors())
