"""A SQL table as a live source: each read takes only the rows whose watermark is above the last one ingested."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import pandas as pd

from mlcycle.schemas.config import SqlSourceConfig
from mlcycle.schemas.secrets import has_reference
from mlcycle.tasks.ingest.read import SourceError
from mlcycle.tasks.secrets import resolve_secrets, scrub


@dataclass(frozen=True)
class SqlIncrement:
    """The new rows of a table, ordered by watermark, and the watermark range they cover (JSON text)."""

    source: str
    frame: pd.DataFrame
    watermark_from: str | None
    watermark_to: str | None
    drop_columns: tuple[str, ...] = ()

    def to_parquet_bytes(self) -> bytes:
        buffer = io.BytesIO()
        self.frame.to_parquet(buffer, index=False)
        return buffer.getvalue()


def sql_source_label(cfg: SqlSourceConfig) -> str:
    """`<url without password>#<table>`: how the registry names the source (and finds its last watermark)."""
    from sqlalchemy.engine import make_url

    # A reference (`${PG_URL}`) is the label as written: it never holds the value, and the label stays the same
    # when the value behind it changes.
    url = cfg.url if has_reference(cfg.url) else make_url(cfg.url).render_as_string(hide_password=True)
    return f"{url}#{cfg.schema_name + '.' if cfg.schema_name else ''}{cfg.table}"


def read_sql_increment(cfg: SqlSourceConfig, after: str | None, keep_watermark: bool) -> SqlIncrement:
    """Rows with `watermark > after` (all rows when `after` is None), in watermark order, `max_rows` at most.

    The watermark column is dropped from the batch unless `keep_watermark` (the schema has it).
    """
    import sqlalchemy as sa

    label = sql_source_label(cfg)
    engine = sa.create_engine(resolve_secrets(cfg.url, "source.sql.url"))
    try:
        with engine.connect() as conn:
            try:
                table = sa.Table(cfg.table, sa.MetaData(), autoload_with=conn, schema=cfg.schema_name)
            except sa.exc.NoSuchTableError:
                raise SourceError(f"{label}: no such table") from None
            names = cfg.columns or [c.name for c in table.columns]
            missing = [n for n in {*names, cfg.watermark} if n not in table.columns]
            if missing:
                raise SourceError(f"{label}: no column(s) {sorted(missing)} in the table")
            watermark = table.c[cfg.watermark]
            selected = [table.c[n] for n in names] + ([] if cfg.watermark in names else [watermark])
            query = sa.select(*selected).order_by(watermark)
            if after is not None:
                query = query.where(watermark > _watermark_value(json.loads(after), watermark.type))
            if cfg.max_rows is not None:
                query = query.limit(cfg.max_rows)
            try:
                frame = pd.read_sql(query, conn)
            except sa.exc.SQLAlchemyError as exc:
                detail = getattr(exc, "orig", None) or exc
                raise SourceError(f"{label}: query failed ({exc.__class__.__name__}: {detail})") from exc
    except sa.exc.OperationalError as exc:
        raise SourceError(
            f"{label}: cannot connect ({scrub(str(exc.orig or exc), cfg.url, 'source.sql.url')})"
        ) from None
    finally:
        engine.dispose()
    if frame[cfg.watermark].isna().any():
        raise SourceError(f"{label}: watermark column {cfg.watermark!r} has missing values; rows would be skipped")
    last = _to_json(frame[cfg.watermark].iloc[-1]) if len(frame) else after
    wanted = keep_watermark or cfg.watermark in (cfg.columns or [])
    drop = () if wanted else (cfg.watermark,)
    return SqlIncrement(source=label, frame=frame, watermark_from=after, watermark_to=last, drop_columns=drop)


def _watermark_value(value: Any, column_type: Any) -> Any:
    """The stored (JSON) watermark as the column's Python type, so the database compares like with like."""
    try:
        python_type = column_type.python_type
    except NotImplementedError:
        return value
    if python_type is datetime and isinstance(value, str):
        return datetime.fromisoformat(value)
    if python_type is date and isinstance(value, str):
        return date.fromisoformat(value)
    return value


def _to_json(value: Any) -> str:
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime()
    if isinstance(value, datetime | date):
        return json.dumps(value.isoformat())
    if hasattr(value, "item"):
        value = value.item()  # numpy scalar → Python
    return json.dumps(value)
