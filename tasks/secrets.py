"""Resolve the secret references of a config string (`schemas/secrets.py`) at the moment the value is needed:
environment variables from the process, Prefect Secret blocks from the Prefect API the flow runs against. The value
is returned to the caller and never stored, logged or put in a parameter."""

from __future__ import annotations

import os

from mlcycle.schemas.secrets import BLOCK_REF, ENV_REF
from mlcycle.tasks.errors import UserError


class SecretError(UserError, ValueError):
    """A reference that cannot be resolved here: an unset variable, a missing Secret block."""


def resolve_secrets(text: str, where: str) -> str:
    """`text` with each `${VAR}` and `{{ prefect.blocks.secret.<name> }}` replaced by its value, read now."""

    def env(match: object) -> str:
        name = match.group(1)  # type: ignore[attr-defined]
        value = os.environ.get(name)
        if value is None:
            raise SecretError(f"{where} references the environment variable {name}, which is not set here")
        return value

    def block(match: object) -> str:
        name = match.group(1)  # type: ignore[attr-defined]
        from prefect.blocks.system import Secret

        try:
            value = Secret.load(name).get()  # type: ignore[union-attr]
        except ValueError as exc:
            raise SecretError(f"{where} references the Prefect Secret block {name!r}, which cannot be loaded from "
                              f"the Prefect API here ({exc})") from None  # fmt: skip
        return str(value)

    return BLOCK_REF.sub(block, ENV_REF.sub(env, text))


def scrub(message: str, text: str, where: str) -> str:
    """`message` (an error from a library that was handed the resolved value) with each value that `text`'s
    references resolve to put back as the reference: what is logged or written down never holds the secret."""
    for pattern in (ENV_REF, BLOCK_REF):
        for match in pattern.finditer(text):
            try:
                value = resolve_secrets(match.group(0), where)
            except SecretError:
                continue
            if value:
                message = message.replace(value, match.group(0))
    return message
