"""Device registration and lookup."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from fleet_server.models import Device, DeviceCreate
from fleet_server.services.auth import hash_token, new_token, tokens_equal
from fleet_server.services.broker_credentials import BrokerCredentials, StaticFileCredentials
from fleet_server.services.device_lifecycle import admit, rotate
from fleet_server.services.errors import Conflict, NotFound, Unprocessable
from fleet_server.services.mosquitto import mosquitto_hash

#: The most tags one device may carry (as DeviceCreate allows).
MAX_TAGS = 32


def register_device(
    *, session: Session, data: DeviceCreate, credentials: BrokerCredentials | None = None
) -> tuple[Device, str]:
    """Create a device and return it with its token (shown once, stored hashed); the broker
    ``credentials`` learn its login before this returns (None: the database only)."""
    if session.get(Device, data.device_id) is not None:
        raise Conflict(f"device {data.device_id!r} already exists")
    token = new_token()
    device = Device(
        device_id=data.device_id,
        device_class=data.device_class,
        tags=list(data.tags),
        token_hash=hash_token(token),
        mqtt_password_hash=mosquitto_hash(token),
    )
    session.add(device)
    try:
        session.commit()
    except IntegrityError as err:
        session.rollback()
        raise Conflict(f"device {data.device_id!r} already exists") from err
    session.refresh(device)
    if credentials is not None:
        admit(session=session, credentials=credentials, device=device, token=token)
    return device, token


def rotate_device_token(
    *, session: Session, device_id: str, credentials: BrokerCredentials | None = None
) -> tuple[Device, str]:
    """Issue a new token (the old one stops working for HTTP and new MQTT logins at once; with
    dynamic security the open MQTT connection is closed too). Also gives a device registered
    before migration 0002 its Mosquitto hash."""
    return rotate(
        session=session, credentials=credentials or StaticFileCredentials(), device_id=device_id
    )


def list_devices(*, session: Session, decommissioned: bool = False) -> Sequence[Device]:
    """The fleet (decommissioned devices too when asked), ordered by id."""
    query = select(Device).order_by(col(Device.device_id))
    if not decommissioned:
        query = query.where(col(Device.decommissioned_at).is_(None))
    return session.exec(query).all()


def get_device(*, session: Session, device_id: str) -> Device:
    device = session.get(Device, device_id)
    if device is None:
        raise NotFound(f"device {device_id[:80]!r} not found")
    return device


def device_for_token(*, session: Session, token: str) -> Device | None:
    """The device in the fleet with this token (a decommissioned one has none)."""
    return session.exec(
        select(Device)
        .where(Device.token_hash == hash_token(token))
        .where(col(Device.decommissioned_at).is_(None))
    ).first()


def device_for_credentials(*, session: Session, device_id: str, token: str) -> Device | None:
    """The device whose id and token these are (an MQTT CONNECT's user name and password)."""
    device = session.get(Device, device_id)
    if device is None or device.decommissioned_at is not None:
        return None
    if not tokens_equal(device.token_hash, hash_token(token)):
        return None
    return device


def mqtt_password_hashes(*, session: Session) -> list[tuple[str, str | None]]:
    """(device id, Mosquitto hash or None) of every device, ordered by id."""
    rows = session.exec(
        select(Device.device_id, Device.mqtt_password_hash)
        .where(col(Device.decommissioned_at).is_(None))
        .order_by(col(Device.device_id))
    ).all()
    return [(device_id, hashed) for device_id, hashed in rows]


@dataclass(frozen=True, slots=True)
class DeviceFacts:
    """What a rollout step reads of a device, as plain values: a 10,000-device step built
    10,000 ORM ``Device`` objects (pydantic private attributes, identity map) every tick, ~40 %
    of the step. Read-only: a change to a device goes through its own writer."""

    device_id: str
    device_class: str | None
    online: bool
    phase: str | None
    running_name: str | None
    running_version: str | None
    desired_name: str | None
    desired_version: str | None
    desired_at: datetime | None
    reported_desired_name: str | None
    reported_desired_version: str | None
    pinned_name: str | None
    pinned_version: str | None
    #: When the server received the online/offline status it applied (the offline gate's grace).
    status_ts: datetime | None


_FACTS = [getattr(Device, f) for f in DeviceFacts.__slots__]


def device_facts(*, session: Session, device_ids: Sequence[str]) -> dict[str, DeviceFacts]:
    """:class:`DeviceFacts` of ``device_ids`` that exist (one query per 500 ids)."""
    ids = list(device_ids)
    found: dict[str, DeviceFacts] = {}
    for start in range(0, len(ids), 500):
        query = select(*_FACTS).where(col(Device.device_id).in_(ids[start : start + 500]))
        for row in session.connection().execute(query):
            found[row[0]] = DeviceFacts(*row)
    return found


def is_pinned(device: Device | DeviceFacts) -> bool:
    """Whether an operator pinned the device: assignments and rollouts must leave it alone."""
    return device.pinned_name is not None and device.pinned_version is not None


def update_tags(
    *, session: Session, device_id: str, add: Sequence[str], remove: Sequence[str]
) -> Device:
    """Add then remove tags (removal wins); at most 32 tags in all."""
    device = get_device(session=session, device_id=device_id)
    tags = (set(device.tags) | set(add)) - set(remove)
    if len(tags) > MAX_TAGS:
        raise Unprocessable(f"a device has at most {MAX_TAGS} tags; this would give {len(tags)}")
    device.tags = sorted(tags)
    session.add(device)
    session.commit()
    session.refresh(device)
    return device
