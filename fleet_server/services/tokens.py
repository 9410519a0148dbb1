"""Operator API tokens with roles: issued by an admin, shown once, stored hashed, revocable."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select, update

from fleet_server.models import ApiToken, ApiTokenCreate
from fleet_server.models.types import utcnow
from fleet_server.services.auth import hash_token, new_token
from fleet_server.services.errors import Conflict, NotFound, Unauthorized

log = logging.getLogger(__name__)

#: ``last_used_at`` is written at most this often per token (a read must not always write).
LAST_USED_RESOLUTION = timedelta(seconds=60)


def create_token(
    *, session: Session, data: ApiTokenCreate, created_by: str
) -> tuple[ApiToken, str]:
    """A new token (returned once, stored as its SHA-256)."""
    if session.exec(select(ApiToken).where(ApiToken.name == data.name)).first() is not None:
        raise Conflict(f"a token named {data.name!r} already exists (names are never reused)")
    token = new_token()
    row = ApiToken(
        name=data.name,
        role=data.role.value,
        token_hash=hash_token(token),
        created_by=created_by,
        expires_at=_expiry(data.expires_in_s),
    )
    session.add(row)
    try:
        session.commit()
    except IntegrityError as err:
        session.rollback()
        raise Conflict(f"a token named {data.name!r} already exists") from err
    session.refresh(row)
    log.info("api token created", extra={"token_name": row.name, "role": row.role})
    return row, token


def list_tokens(*, session: Session) -> Sequence[ApiToken]:
    return session.exec(select(ApiToken).order_by(col(ApiToken.id))).all()


def revoke_token(*, session: Session, token_id: int) -> ApiToken:
    """Revoke at once (idempotent: revoking twice keeps the first time)."""
    row = session.get(ApiToken, token_id)
    if row is None:
        raise NotFound(f"token {token_id} not found")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.add(row)
        session.commit()
        session.refresh(row)
        log.info("api token revoked", extra={"token_name": row.name})
    return row


def rotate_token(
    *, session: Session, token_id: int, expires_in_s: int | None
) -> tuple[ApiToken, str]:
    """A new secret for the same name and role (the old secret is refused at once); a new
    expiry if given, else the old one. A revoked or expired token cannot be rotated."""
    row = session.get(ApiToken, token_id)
    if row is None:
        raise NotFound(f"token {token_id} not found")
    if row.revoked_at is not None:
        raise Conflict(f"token {row.name!r} is revoked; create a new one")
    if expires_in_s is None and row.expires_at is not None and row.expires_at <= utcnow():
        raise Conflict(f"token {row.name!r} has expired; give expires_in_s to renew it")
    token = new_token()
    row.token_hash = hash_token(token)
    if expires_in_s is not None:
        row.expires_at = _expiry(expires_in_s)
    session.add(row)
    session.commit()
    session.refresh(row)
    log.info("api token rotated", extra={"token_name": row.name})
    return row, token


def token_for_secret(*, session: Session, token: str) -> ApiToken | None:
    """The live (not revoked) token with this secret; its ``last_used_at`` is refreshed.
    An expired one is refused with its own reason (:class:`Unauthorized`)."""
    row = session.exec(select(ApiToken).where(ApiToken.token_hash == hash_token(token))).first()
    if row is None or row.revoked_at is not None:
        return None
    now = utcnow()
    if row.expires_at is not None and row.expires_at <= now:
        raise Unauthorized(
            f"API token {row.name!r} expired at {row.expires_at.isoformat(timespec='seconds')}"
        )
    if row.last_used_at is None or now - row.last_used_at > LAST_USED_RESOLUTION:
        session.exec(update(ApiToken).where(col(ApiToken.id) == row.id).values(last_used_at=now))
        session.commit()
        session.refresh(row)
    return row


def _expiry(expires_in_s: int | None) -> datetime | None:
    return None if expires_in_s is None else utcnow() + timedelta(seconds=expires_in_s)
