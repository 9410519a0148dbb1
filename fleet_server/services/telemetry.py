"""Reading stored telemetry and events."""

from __future__ import annotations

from collections.abc import Sequence

from sqlmodel import Session, col, select

from fleet_server.models import EventRow, TelemetryRow
from fleet_server.services.devices import get_device


def list_telemetry(*, session: Session, device_id: str, limit: int) -> Sequence[TelemetryRow]:
    """Newest first (by the device's sequence number)."""
    get_device(session=session, device_id=device_id)
    query = (
        select(TelemetryRow)
        .where(TelemetryRow.device_id == device_id)
        .order_by(col(TelemetryRow.seq).desc())
        .limit(limit)
    )
    return session.exec(query).all()


def list_events(*, session: Session, device_id: str, limit: int) -> Sequence[EventRow]:
    """Newest first (by the device's sequence number): updates, probation, rollbacks."""
    get_device(session=session, device_id=device_id)
    query = (
        select(EventRow)
        .where(EventRow.device_id == device_id)
        .order_by(col(EventRow.seq).desc())
        .limit(limit)
    )
    return session.exec(query).all()
