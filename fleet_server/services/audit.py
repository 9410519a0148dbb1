"""The audit log: one row per mutating API call, written by :mod:`fleet_server.api.audit`."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from fleet_server.models import AuditLog
from fleet_server.models.auth import MAX_AUDIT_DETAIL_BYTES

log = logging.getLogger(__name__)

#: Keys whose values never reach the audit log, whatever a route puts in ``detail``.
SECRET_KEYS = frozenset(
    {"token", "enrollment_token", "password", "mqtt_password", "secret", "authorization"}
)
MAX_AUDIT_LIMIT = 1000


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
) -> None:
    row = AuditLog(
        actor=printable(entry.actor, 80),
        role=entry.role,
        method=printable(method, 8),
        path=printable(path, 500),
        route=printable(route, 200) if route else None,
        status_code=status_code,
        target=printable(entry.target, 200) if entry.target else None,
        detail=bounded_detail(entry.detail),
    )
    with Session(engine) as session:
        session.add(row)
        session.commit()


def list_audit(
    *, session: Session, actor: str | None, since: datetime | None, limit: int
) -> Sequence[AuditLog]:
    query = select(AuditLog)
    if actor is not None:
        query = query.where(AuditLog.actor == actor)
    if since is not None:
        query = query.where(col(AuditLog.ts) >= since)
    return session.exec(query.order_by(col(AuditLog.id).desc()).limit(limit)).all()
