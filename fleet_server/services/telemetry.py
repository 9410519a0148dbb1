"""Reading stored telemetry."""

from __future__ import annotations

from collections.abc import Sequence

from sqlmodel import Session, col, select

from fleet_server.models import TelemetryRow
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
