"""The audit log: one row per mutating API call, written by :mod:`fleet_server.api.audit`.

A call refused before anyone was identified (no token, a wrong one, a wrong enrollment token, a
body over the limit, a path that does not exist) is counted into one row per (window, source,
actor, method, route, status) instead: ``calls`` goes up, ``last_ts`` moves. Before, 1,000
unauthenticated POSTs wrote 1,000 rows; now they write one. Within a window the rows are bounded
by the sources: at most :data:`MAX_SOURCES_PER_WINDOW` distinct ones per process, later ones
share the source ``other``. Every identified caller's call keeps a row of its own.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, SQLModel, col, select

from fleet_server.models import AuditLog
from fleet_server.models.auth import MAX_AUDIT_DETAIL_BYTES
from fleet_server.models.types import utcnow

log = logging.getLogger(__name__)

#: Keys whose values never reach the audit log, whatever a route puts in ``detail``.
SECRET_KEYS = frozenset(
    {"token", "enrollment_token", "password", "mqtt_password", "secret", "authorization"}
)
MAX_AUDIT_LIMIT = 1000
#: The names the server gives a caller it has not identified (see ``api.deps``).
UNIDENTIFIED = frozenset({"anonymous", "unknown-token", "enrollment"})
#: Distinct sources one process gives aggregated rows of their own per window.
MAX_SOURCES_PER_WINDOW = 1000
OTHER_SOURCE = "other"


@dataclass
class AuditEntry:
    """What the request learned about itself on the way through (filled by deps and routes)."""

    actor: str = "anonymous"
    role: str | None = None
    target: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


def scrub(value: Any, depth: int = 0) -> Any:
    """``value`` with every secret-named key's value replaced (nested dicts and lists too)."""
    if depth > 8:
        return "…"
    if isinstance(value, dict):
        return {
            printable(str(k), 64): "<redacted>"
            if str(k).lower() in SECRET_KEYS
            else scrub(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [scrub(v, depth + 1) for v in value]
    if isinstance(value, str):
        return printable(value, 500)
    if value is None or isinstance(value, bool | int | float):
        return value
    return str(value)[:500]


def printable(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` with control characters (NUL included: PostgreSQL refuses it
    in text) replaced, so a hostile path or query cannot keep its audit row out."""
    return "".join(c if c.isprintable() else "?" for c in text[:limit])


def bounded_detail(detail: dict[str, Any]) -> dict[str, Any] | None:
    """The scrubbed detail, or a marker when its JSON is over :data:`MAX_AUDIT_DETAIL_BYTES`."""
    if not detail:
        return None
    clean = scrub(detail)
    size = len(json.dumps(clean, default=str).encode())
    if size > MAX_AUDIT_DETAIL_BYTES:
        return {"truncated": True, "bytes": size, "keys": sorted(clean)[:20]}
    assert isinstance(clean, dict)
    return clean


def record(
    *,
    engine: Engine,
    entry: AuditEntry,
    method: str,
    path: str,
    route: str | None,
    status_code: int,
    source: str | None = None,
    window_s: int = 3600,
    now: datetime | None = None,
) -> None:
    """Write the call's row, or count it into its window's row (see the module docstring)."""
    now = now or utcnow()
    values: dict[str, Any] = {
        "ts": now,
        "actor": printable(entry.actor, 80),
        "role": entry.role,
        "method": printable(method, 8),
        "path": printable(path, 500),
        "route": printable(route, 200) if route else None,
        "status_code": status_code,
        "target": printable(entry.target, 200) if entry.target else None,
        "detail": bounded_detail(entry.detail),
        "source": printable(source, 64) if source else None,
    }
    if not aggregated(entry, status_code):
        with Session(engine) as session:
            session.add(AuditLog(**values))
            session.commit()
        return
    window = int(now.timestamp()) // window_s
    values["source"] = _SOURCES.admit(window, values["source"])
    key = "|".join(
        str(part)
        for part in (window, values["source"], values["actor"], method, route, status_code)
    )
    values.update(aggregate_key=hashlib.sha256(key.encode()).hexdigest(), last_ts=now)
    table = SQLModel.metadata.tables["audit_log"]
    dialect = engine.dialect.name
    if dialect == "postgresql":
        insert: Any = postgresql.insert(table)
    elif dialect == "sqlite":
        insert = sqlite.insert(table)
    else:
        raise ValueError(f"unsupported database dialect {dialect!r} (use SQLite or PostgreSQL)")
    statement = insert.values(**values).on_conflict_do_update(
        index_elements=[table.c.aggregate_key],
        set_={"calls": table.c.calls + 1, "last_ts": insert.excluded.ts},
    )
    with engine.begin() as conn:
        conn.execute(statement)


def aggregated(entry: AuditEntry, status_code: int) -> bool:
    """A refusal of a caller the server could not identify (counted, not one row each)."""
    return status_code >= 400 and entry.role is None and entry.actor in UNIDENTIFIED


class _WindowSources:
    """The sources this process has given aggregated rows in the current window (bounded)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._window = -1
        self._seen: set[str | None] = set()
        self._lock = threading.Lock()

    def admit(self, window: int, source: str | None) -> str | None:
        with self._lock:
            if window != self._window:
                self._window, self._seen = window, set()
            if source in self._seen:
                return source
            if len(self._seen) >= self.limit:
                return OTHER_SOURCE
            self._seen.add(source)
            return source


_SOURCES = _WindowSources(MAX_SOURCES_PER_WINDOW)


def list_audit(
    *, session: Session, actor: str | None, since: datetime | None, limit: int
) -> Sequence[AuditLog]:
    query = select(AuditLog)
    if actor is not None:
        query = query.where(AuditLog.actor == actor)
    if since is not None:
        query = query.where(col(AuditLog.ts) >= since)
    return session.exec(query.order_by(col(AuditLog.id).desc()).limit(limit)).all()
