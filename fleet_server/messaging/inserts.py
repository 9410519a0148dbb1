"""Insert-or-skip of telemetry and event rows straight on the DBAPI cursor.

At ingest rates SQLAlchemy's per-value bind processing (JSON and datetime columns, every row)
cost more than the database did, so the batch goes to ``cursor.executemany`` with values already
in the form SQLAlchemy would have sent: JSON columns serialised once with ``json.dumps`` (Python
``None`` as JSON ``null``, as ``sa.JSON`` stores it), datetimes in UTC (on SQLite as the same
``YYYY-MM-DD HH:MM:SS.ffffff`` text SQLAlchemy writes). ``ON CONFLICT (device_id, seq) DO
NOTHING`` skips rows already stored, and the summed row count says how many were new.

This is the ``executemany`` statement set (:mod:`.statements`): SQLite's always, PostgreSQL's
with ``ingest_pg_statements=executemany``; device rows are updated with one SQLAlchemy
executemany ``UPDATE`` per set of changed columns (:func:`update_rows`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection, Table

from fleet_server.models.types import UTCDateTime


def insert_new(*, conn: Connection, table: Table, rows: list[dict[str, Any]]) -> int:
    """Insert ``rows`` (unique (device_id, seq) keys, the same keys in every row) unless
    already stored; returns how many were inserted. The row dicts are converted in place."""
    if not rows:
        return 0
    dialect = conn.dialect.name
    if dialect not in ("sqlite", "postgresql"):
        raise ValueError(f"unsupported database dialect {dialect!r} (use SQLite or PostgreSQL)")
    names = list(rows[0])
    if dialect == "sqlite":
        marks = [f":{n}" for n in names]
    else:
        marks = [
            f"%({n})s::json" if isinstance(table.c[n].type, sa.JSON) else f"%({n})s" for n in names
        ]
    quote = conn.dialect.identifier_preparer.quote
    # Identifiers come from the table metadata (quoted); every value is a bound parameter.
    columns = ", ".join(quote(n) for n in names)
    insert = f"INSERT INTO {quote(table.name)} ({columns}) VALUES ({', '.join(marks)})"  # noqa: S608
    sql = f"{insert} ON CONFLICT (device_id, seq) DO NOTHING"
    convert_rows(table=table, rows=rows, dialect=dialect)
    result = conn.exec_driver_sql(sql, rows)
    return int(result.rowcount)


def update_rows(
    *, conn: Connection, table: Table, key: str, names: tuple[str, ...], rows: list[dict[str, Any]]
) -> None:
    """``UPDATE table SET <names> WHERE <key> = :_id`` as one executemany over ``rows`` (each
    holding ``_id`` and ``names``), through SQLAlchemy's bind processing."""
    if not rows:
        return
    stmt = (
        sa.update(table)
        .where(table.c[key] == sa.bindparam("_id"))
        .values({name: sa.bindparam(name) for name in names})
    )
    conn.execute(stmt, rows)


def convert_rows(*, table: Table, rows: list[dict[str, Any]], dialect: str) -> None:
    """Put ``rows``' values (in place) in the form SQLAlchemy would send to ``dialect``."""
    converters = (
        [
            (name, convert)
            for name in rows[0]
            if (convert := converter_for(table.c[name].type, dialect)) is not None
        ]
        if rows
        else []
    )
    for row in rows:
        for name, convert in converters:
            row[name] = convert(row[name])


def converter_for(column_type: Any, dialect: str) -> Callable[[Any], Any] | None:
    if isinstance(column_type, sa.JSON):
        return _json
    if isinstance(column_type, UTCDateTime):
        return _sqlite_time if dialect == "sqlite" else _utc
    return None


def _json(value: Any) -> str:
    if not value:  # None, {} and [] are most of what telemetry carries
        return _EMPTY_JSON.get(type(value)) or json.dumps(value)
    return json.dumps(value)


_EMPTY_JSON: dict[type, str] = {type(None): "null", dict: "{}", list: "[]"}


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("naive datetimes are not stored; use an aware UTC datetime")
    return value.astimezone(UTC)


def _sqlite_time(value: datetime) -> str:
    v = _utc(value)
    return (
        f"{v.year:04d}-{v.month:02d}-{v.day:02d} "
        f"{v.hour:02d}:{v.minute:02d}:{v.second:02d}.{v.microsecond:06d}"
    )
