"""Secrets in a config are references, never values: `${ENV_VAR}` or Prefect's `{{ prefect.blocks.secret.<name> }}`,
written anywhere in a string (`postgresql+pg8000://app:${PG_PASSWORD}@db/prod`) and resolved only where the value is
used (`mlcycle.tasks.secrets.resolve_secrets`). A config is copied into every model bundle, Bento, MLflow run and
Prefect flow run, so a password written in it in plain text is refused, with the reference to write instead.
"""

from __future__ import annotations

import re

ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
BLOCK_REF = re.compile(r"\{\{\s*prefect\.blocks\.secret\.([A-Za-z0-9][A-Za-z0-9_-]*)\s*\}\}")
_USERINFO = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^/@:?#]*):(?P<password>[^/?#]*)@")
_QUERY = re.compile(r"(?P<key>[?&](?:password|passwd|pwd|token|secret|api_key|apikey)=)(?P<value>[^&#]*)", re.I)


def has_reference(text: str) -> bool:
    return bool(ENV_REF.search(text) or BLOCK_REF.search(text))


def _is_reference(value: str) -> bool:
    """The whole value is references (an empty password is no secret either)."""
    return not ENV_REF.sub("", BLOCK_REF.sub("", value))


def literal_secret(text: str) -> str | None:
    """What plain-text secret the string holds (`a password in the URL`, `a password= parameter`), or None."""
    userinfo = _USERINFO.match(text)
    if userinfo and not _is_reference(userinfo.group("password")):
        return "a password in the URL"
    for match in _QUERY.finditer(text):
        if not _is_reference(match.group("value")):
            return f"a {match.group('key').lstrip('?&')} parameter"
    return None


def refuse_literal_secret(text: str, where: str) -> str:
    """`text` unchanged, or ValueError naming the field and showing the reference to write instead."""
    found = literal_secret(text)
    if found:
        env = re.sub(r"\W+", "_", where.rsplit(".", 1)[-1]).upper()
        raise ValueError(
            f"{where} holds {found} in plain text; a config is copied into every model, Bento, MLflow run and "
            f"Prefect run, so reference the secret instead: `${{{env}}}` (the whole value, or just the password, "
            f"from an environment variable) or `{{{{ prefect.blocks.secret.<block-name> }}}}` (a Prefect Secret "
            "block), resolved where the flow runs"
        )
    return text


def redacted(text: str) -> str:
    """The string with any password or token value replaced by `***` (references are shown as written)."""
    text = _USERINFO.sub(lambda m: f"{m.group('scheme')}{m.group('user')}:***@", text)
    return _QUERY.sub(lambda m: f"{m.group('key')}***", text)
