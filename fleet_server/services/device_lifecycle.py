"""A device's life as the broker must see it: admitted when registered or enrolled, its
password replaced when its token rotates, shut out when it is decommissioned. The database
changes here and the broker is told through :class:`BrokerCredentials` in the same call, so
with dynamic security every change takes effect at once; a broker that does not take it is a
503 that names what to retry (every step is idempotent).

Decommissioning is a soft delete: the row keeps its history (telemetry, events, the audit
names it) but its token hash is replaced by one of a secret nobody holds, its Mosquitto hash is
dropped (the static files leave it out), and ``decommissioned_at`` keeps it out of the fleet.
"""

from __future__ import annotations

import logging

from sqlalchemy import Engine
from sqlmodel import Session, col, select, update

from fleet_server.models import Device, EnrollmentToken, RolloutDevice
from fleet_server.models.types import utcnow
from fleet_server.services.auth import hash_token, new_token
from fleet_server.services.broker_credentials import (
    Applied,
    BrokerCredentials,
    CredentialsError,
    SyncReport,
)
from fleet_server.services.errors import NotFound, Unavailable
from fleet_server.services.mosquitto import mosquitto_hash

log = logging.getLogger(__name__)


def admit(
    *,
    session: Session,
    credentials: BrokerCredentials,
    device: Device,
    token: str,
    enrollment_token_id: int | None = None,
) -> Applied:
    """Tell the broker about a device just committed; if it refuses, the device is deleted
    again (and an enrollment token's use given back) so the caller can simply retry."""
    try:
        return credentials.add(device_id=device.device_id, token=token)
    except CredentialsError as err:
        session.delete(device)
        if enrollment_token_id is not None:
            session.exec(
                update(EnrollmentToken)
                .where(col(EnrollmentToken.id) == enrollment_token_id)
                .values(uses_left=col(EnrollmentToken.uses_left) + 1)
            )
        session.commit()
        raise Unavailable(f"the broker did not take the device's login ({err}); try again") from err


def rotate(
    *, session: Session, credentials: BrokerCredentials, device_id: str
) -> tuple[Device, str]:
    """A new token: the broker first (a refusal changes nothing), then the database. With
    dynamic security the connection using the old password is closed at once."""
    device = _live(session, device_id)
    token = new_token()
    mqtt_hash = mosquitto_hash(token)
    try:
        credentials.rotate(device_id=device_id, token=token)
    except CredentialsError as err:
        raise Unavailable(f"the broker did not take the new password ({err}); try again") from err
    device.token_hash = hash_token(token)
    device.mqtt_password_hash = mqtt_hash
    session.add(device)
    session.commit()
    session.refresh(device)
    return device, token


def decommission(*, session: Session, credentials: BrokerCredentials, device_id: str) -> Device:
    """Revoke the device's token and broker login and take it out of the fleet; its rows stay.
    Idempotent: calling it again re-sends the broker removal (a retry after a 503). Its
    rollout memberships not yet finished are skipped."""
    device = session.get(Device, device_id)
    if device is None:
        raise NotFound(f"device {device_id[:80]!r} not found")
    if device.decommissioned_at is None:
        device.decommissioned_at = utcnow()
        device.token_hash = hash_token(new_token())  # a secret nobody holds
        device.mqtt_password_hash = None
        device.online = False
        session.add(device)
        # Rollouts skip it: a member not yet on the new version will never get there.
        session.exec(
            update(RolloutDevice)
            .where(col(RolloutDevice.device_id) == device_id)
            .where(col(RolloutDevice.status).in_(("pending", "assigned")))
            .values(status="skipped")
        )
        session.commit()
        session.refresh(device)
        log.info("device decommissioned", extra={"device_id": device_id})
    try:
        credentials.remove(device_id=device_id)
    except CredentialsError as err:
        raise Unavailable(
            f"device {device_id!r} is decommissioned but the broker still admits it ({err}); "
            "repeat the DELETE"
        ) from err
    return device


def _live(session: Session, device_id: str) -> Device:
    device = session.get(Device, device_id)
    if device is None or device.decommissioned_at is not None:
        raise NotFound(f"device {device_id[:80]!r} not found")
    return device


def sync_broker(*, engine: Engine, credentials: BrokerCredentials) -> SyncReport:
    """At start: the broker in line with the device table (see ``BrokerCredentials.sync``);
    what it could not add is logged with the fix."""
    with Session(engine) as session:
        rows = session.exec(select(Device.device_id, Device.decommissioned_at)).all()
    live = {device_id for device_id, gone in rows if gone is None}
    report = credentials.sync(live=live, decommissioned={d for d, gone in rows if gone})
    if report.removed:
        log.warning(
            "broker still admitted decommissioned devices; removed",
            extra={"devices": list(report.removed[:50])},
        )
    if report.missing:
        log.warning(
            "devices the broker does not know (registered without dynamic security): rotate "
            "their tokens (POST /api/v1/devices/<id>/token) to add them",
            extra={"count": len(report.missing), "devices": list(report.missing[:50])},
        )
    return report
