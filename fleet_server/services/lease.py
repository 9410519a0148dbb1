"""A database lease: at most one holder per name at a time, with a fencing epoch.

:func:`acquire` is one atomic statement on SQLite and PostgreSQL alike::

    INSERT INTO lease (name, holder, epoch, expires_at) VALUES (:name, :me, 1, :until)
    ON CONFLICT (name) DO UPDATE SET
        holder = excluded.holder,
        epoch = CASE WHEN lease.holder = excluded.holder THEN lease.epoch ELSE lease.epoch + 1 END,
        expires_at = excluded.expires_at
    WHERE lease.holder = excluded.holder OR lease.expires_at < :now
    RETURNING epoch

A row comes back when the caller holds the lease (new, renewed, or taken over after expiry);
none when somebody else holds it. PostgreSQL evaluates the ``WHERE`` on the row it has locked,
SQLite holds the database write lock: two contenders can never both get a row back for the same
unexpired period. Expiry is wall-clock time of the contenders (keep replicas' clocks in NTP
sync); the holder's own loop additionally stops trusting a lease a margin before it expires
by its monotonic clock (:mod:`fleet_server.services.leader`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, Table, case, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import SQLModel

from fleet_server.models.types import utcnow

#: ``expires_at`` of a released lease: long past, so the next contender takes it at once.
RELEASED_AT = datetime(1970, 1, 1, tzinfo=UTC)


class LeaseError(Exception):
    """The lease table could not be read or written (the caller treats it as not holding)."""


@dataclass(frozen=True)
class Lease:
    name: str
    holder: str
    epoch: int
    expires_at: datetime


def _table() -> Table:
    return SQLModel.metadata.tables["lease"]


def acquire(
    *, engine: Engine, name: str, holder: str, ttl_s: float, now: datetime | None = None
) -> Lease | None:
    """Take, renew or take over lease ``name`` for ``ttl_s`` seconds; None if another holds it."""
    if ttl_s <= 0:
        raise ValueError("ttl_s must be positive")
    if not name or not holder:
        raise ValueError("lease name and holder must not be empty")
    now = now or utcnow()
    until = now + timedelta(seconds=ttl_s)
    table = _table()
    dialect = engine.dialect.name
    # The two dialects' INSERT ... ON CONFLICT builders share this API but not a type.
    insert: Any
    if dialect == "postgresql":
        insert = postgresql.insert(table)
    elif dialect == "sqlite":
        insert = sqlite.insert(table)
    else:
        raise LeaseError(f"unsupported database dialect {dialect!r} (use SQLite or PostgreSQL)")
    stmt = insert.values(name=name, holder=holder, epoch=1, expires_at=until)
    upsert = stmt.on_conflict_do_update(
        index_elements=[table.c.name],
        set_={
            "holder": stmt.excluded.holder,
            "epoch": case(
                (table.c.holder == stmt.excluded.holder, table.c.epoch), else_=table.c.epoch + 1
            ),
            "expires_at": stmt.excluded.expires_at,
        },
        where=(table.c.holder == stmt.excluded.holder) | (table.c.expires_at < now),
    ).returning(table.c.epoch)
    try:
        with engine.begin() as conn:
            epoch = conn.execute(upsert).scalar_one_or_none()
    except SQLAlchemyError as err:
        raise LeaseError(f"lease {name!r}: {str(err).splitlines()[0][:300]}") from err
    if epoch is None:
        return None
    return Lease(name=name, holder=holder, epoch=int(epoch), expires_at=until)


def release(*, engine: Engine, name: str, holder: str) -> bool:
    """Give up lease ``name`` if ``holder`` has it (the next contender takes it at once)."""
    table = _table()
    stmt = (
        update(table)
        .where(table.c.name == name, table.c.holder == holder)
        .values(expires_at=RELEASED_AT)
    )
    try:
        with engine.begin() as conn:
            return bool(conn.execute(stmt).rowcount)
    except SQLAlchemyError as err:
        raise LeaseError(f"lease {name!r}: {str(err).splitlines()[0][:300]}") from err


def current(*, engine: Engine, name: str) -> Lease | None:
    """The lease row as stored (held or not), or None if nobody ever took it."""
    table = _table()
    try:
        with engine.connect() as conn:
            row = conn.execute(table.select().where(table.c.name == name)).one_or_none()
    except SQLAlchemyError as err:
        raise LeaseError(f"lease {name!r}: {str(err).splitlines()[0][:300]}") from err
    if row is None:
        return None
    return Lease(name=row.name, holder=row.holder, epoch=int(row.epoch), expires_at=row.expires_at)
