"""The errors that are the user's to fix: data a rule refuses, a name or tag that does not exist, a file that
cannot be read. Raising one (or a subclass) says so: the `mlcycle` command line prints its message on one line and
exits with its `exit_code` (docs/cli-exit-codes.md), without a traceback; the traceback stays in the Prefect run,
and `mlcycle --debug` shows it."""

from __future__ import annotations


class UserError(Exception):
    """A mistake or a refusal the message explains, with the fix; not a fault of mlcycle."""

    exit_code = 1
