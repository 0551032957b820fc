"""Secrets are referenced, never stored: a password in a config is refused with the reference to write instead, and a
reference is resolved only where its value is used."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from mlcycle.schemas import load_config
from mlcycle.schemas.config import SqlSourceConfig
from mlcycle.schemas.secrets import literal_secret, redacted
from mlcycle.tasks.secrets import SecretError, resolve_secrets, scrub

SENTINEL = "s3ntinel-Pa55"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("source.sql.url", f"postgresql+pg8000://app:{SENTINEL}@127.0.0.1/prod"),
        ("tracking.mlflow_uri", f"http://bob:{SENTINEL}@127.0.0.1:5000"),
        ("tracking.mlflow_uri", f"http://127.0.0.1:5000/?token={SENTINEL}"),
    ],
)
def test_a_password_in_plain_text_is_refused_without_repeating_it(field: str, value: str) -> None:
    overrides = {field: value}
    if field.startswith("source.sql"):
        overrides |= {"source.kind": "sql", "source.sql.table": "t", "source.sql.watermark": "id"}
    with pytest.raises(ValidationError) as refused:
        load_config("adult", overrides)
    message = str(refused.value)
    assert field in message and "${" in message and "prefect.blocks.secret" in message
    assert SENTINEL not in message  # the error names the field and the fix, never the value


@pytest.mark.parametrize(
    "url",
    [
        "${PG_URL}",
        "postgresql+pg8000://app:${PG_PASSWORD}@127.0.0.1/prod",
        "postgresql+pg8000://app:{{ prefect.blocks.secret.pg-password }}@127.0.0.1/prod",
        "{{ prefect.blocks.secret.pg-url }}",
        "sqlite:///data.db",
        "postgresql+pg8000://app@127.0.0.1/prod",
    ],
)
def test_references_and_urls_without_a_password_are_accepted(url: str) -> None:
    assert literal_secret(url) is None
    SqlSourceConfig(url=url, table="t", watermark="id")


def test_a_reference_is_resolved_at_use_and_scrubbed_from_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PG_PASSWORD", SENTINEL)
    url = "postgresql+pg8000://app:${PG_PASSWORD}@127.0.0.1/prod"
    resolved = resolve_secrets(url, "source.sql.url")
    assert resolved == f"postgresql+pg8000://app:{SENTINEL}@127.0.0.1/prod"
    error = f"could not connect to {resolved}: timeout"
    assert scrub(error, url, "source.sql.url") == f"could not connect to {url}: timeout"
    assert redacted(resolved) == "postgresql+pg8000://app:***@127.0.0.1/prod"
    monkeypatch.delenv("PG_PASSWORD")
    with pytest.raises(SecretError, match="source.sql.url references the environment variable PG_PASSWORD"):
        resolve_secrets(url, "source.sql.url")


def test_the_sql_label_and_the_tracking_uri_keep_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlcycle.tasks import tracking
    from mlcycle.tasks.ingest.sql import sql_source_label

    monkeypatch.setenv("PG_URL", f"postgresql+pg8000://app:{SENTINEL}@127.0.0.1/prod")
    assert sql_source_label(SqlSourceConfig(url="${PG_URL}", table="t", watermark="id")) == "${PG_URL}#t"
    monkeypatch.setenv(tracking.ENV_URI, f"http://bob:{SENTINEL}@127.0.0.1:5000")
    assert tracking.tracking_uri(load_config("adult")) == "${MLFLOW_TRACKING_URI}"  # what queued records keep
