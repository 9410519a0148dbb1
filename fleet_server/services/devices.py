"""Device registration and lookup."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from fleet_server.models import Device, DeviceCreate
from fleet_server.services.auth import hash_token, new_token
from fleet_server.services.errors import Conflict, NotFound


def register_device(*, session: Session, data: DeviceCreate) -> tuple[Device, str]:
    """Create a device and return it with its token (shown once, stored hashed)."""
    if session.get(Device, data.device_id) is not None:
        raise Conflict(f"device {data.device_id!r} already exists")
    token = new_token()
    device = Device(
        device_id=data.device_id,
        device_class=data.device_class,
        tags=list(data.tags),
        token_hash=hash_token(token),
    )
    session.add(device)
    try:
        session.commit()
    except IntegrityError as err:
        session.rollback()
        raise Conflict(f"device {data.device_id!r} already exists") from err
    session.refresh(device)
    return device, token


def list_devices(*, session: Session) -> Sequence[Device]:
    return session.exec(select(Device).order_by(col(Device.device_id))).all()


def get_device(*, session: Session, device_id: str) -> Device:
    device = session.get(Device, device_id)
    if device is None:
        raise NotFound(f"device {device_id[:80]!r} not found")
    return device


def device_for_token(*, session: Session, token: str) -> Device | None:
    return session.exec(select(Device).where(Device.token_hash == hash_token(token))).first()
