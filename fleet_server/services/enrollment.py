"""Enrollment: a one-time (or n-time) token an operator hands out; a device trades it for its
own id and credentials.

A use is taken by one conditional ``UPDATE ... SET uses_left = uses_left - 1 WHERE uses_left > 0
AND expires_at > now AND revoked_at IS NULL`` in the same transaction as the device insert, so
concurrent enrollments with a one-use token create exactly one device, a revocation that lands
meanwhile stops it (PostgreSQL re-checks the row after the lock;
SQLite has one writer at a time), and a refused enrollment gives the use back by rolling back.
"""

from __future__ import annotations

import logging
import secrets
from datetime import timedelta

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select, update

from fleet_server.models import (
    Device,
    EnrollmentToken,
    EnrollmentTokenCreate,
    EnrollRequest,
)
from fleet_server.models.types import utcnow
from fleet_server.services.auth import hash_token, new_token
from fleet_server.services.broker_credentials import BrokerCredentials
from fleet_server.services.device_lifecycle import admit
from fleet_server.services.errors import Conflict, Gone, NotFound, Unauthorized
from fleet_server.services.mosquitto import mosquitto_hash

log = logging.getLogger(__name__)


def create_enrollment_token(
    *, session: Session, data: EnrollmentTokenCreate, created_by: str
) -> tuple[EnrollmentToken, str]:
    token = new_token()
    row = EnrollmentToken(
        token_hash=hash_token(token),
        device_class=data.device_class,
        tags=list(data.tags),
        uses=data.uses,
        uses_left=data.uses,
        expires_at=utcnow() + timedelta(seconds=data.expires_in_s),
        created_by=created_by,
    )
    session.add(row)
    session.commit()
    session.refresh(row)
    log.info("enrollment token created", extra={"id": row.id, "uses": row.uses})
    return row, token


def list_enrollment_tokens(
    *, session: Session, active_only: bool, limit: int
) -> list[EnrollmentToken]:
    """Newest first; ``active_only``: those that can still enroll a device."""
    query = select(EnrollmentToken).order_by(col(EnrollmentToken.id).desc())
    if active_only:
        query = (
            query.where(col(EnrollmentToken.revoked_at).is_(None))
            .where(col(EnrollmentToken.uses_left) > 0)
            .where(col(EnrollmentToken.expires_at) > utcnow())
        )
    return list(session.exec(query.limit(limit)))


def revoke_enrollment_token(*, session: Session, token_id: int) -> EnrollmentToken:
    """No device enrolls with it from now on (idempotent: revoking twice keeps the first time).
    Devices it already enrolled keep their own credentials."""
    row = session.get(EnrollmentToken, token_id)
    if row is None:
        raise NotFound(f"enrollment token {token_id} not found")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.add(row)
        session.commit()
        session.refresh(row)
        log.info("enrollment token revoked", extra={"id": row.id, "uses_left": row.uses_left})
    return row


def enroll(
    *, session: Session, request: EnrollRequest, credentials: BrokerCredentials | None = None
) -> tuple[Device, str]:
    """Create the device the enrollment token admits; (device, its token shown once). The
    broker ``credentials`` learn its login before this returns (None: the database only)."""
    grant = session.exec(
        select(EnrollmentToken).where(
            EnrollmentToken.token_hash == hash_token(request.enrollment_token)
        )
    ).first()
    if grant is None:
        raise Unauthorized("unknown enrollment token")
    now = utcnow()
    if grant.revoked_at is not None:
        raise Gone("the enrollment token has been revoked")
    if grant.expires_at <= now:
        raise Gone("the enrollment token has expired")
    if grant.uses_left <= 0:
        raise Gone("the enrollment token is used up")
    if (
        grant.device_class is not None
        and request.device_class is not None
        and request.device_class != grant.device_class
    ):
        raise Conflict(
            f"the enrollment token is for device class {grant.device_class!r}, "
            f"not {request.device_class[:64]!r}"
        )
    device_id = request.device_id or f"dev-{secrets.token_hex(6)}"
    if session.get(Device, device_id) is not None:
        raise Conflict(f"device {device_id!r} already exists")
    grant_id, device_class, tags = grant.id, grant.device_class, list(grant.tags)
    token = new_token()
    mqtt_hash = mosquitto_hash(token)  # slow on purpose (PBKDF2): not while holding the lock
    session.rollback()  # end the read: the conditional UPDATE below starts the write
    taken = session.exec(
        update(EnrollmentToken)
        .where(col(EnrollmentToken.id) == grant_id)
        .where(col(EnrollmentToken.uses_left) > 0)
        .where(col(EnrollmentToken.expires_at) > now)
        .where(col(EnrollmentToken.revoked_at).is_(None))
        .values(uses_left=col(EnrollmentToken.uses_left) - 1)
    )
    if taken.rowcount != 1:  # used up, or revoked, since the read above
        session.rollback()
        raise Gone("the enrollment token is used up or was revoked")
    device = Device(
        device_id=device_id,
        device_class=device_class or request.device_class,
        tags=tags,
        token_hash=hash_token(token),
        mqtt_password_hash=mqtt_hash,
    )
    session.add(device)
    try:
        session.commit()
    except IntegrityError as err:
        session.rollback()
        raise Conflict(f"device {device_id!r} already exists") from err
    session.refresh(device)
    if credentials is not None:
        admit(
            session=session,
            credentials=credentials,
            device=device,
            token=token,
            enrollment_token_id=grant_id,
        )
    log.info("device enrolled", extra={"device_id": device_id, "enrollment_token": grant_id})
    return device, token
