"""/api/v1/tokens (admin): operator API tokens with roles. /api/v1/audit (admin): the log.
/api/v1/whoami (viewer): the caller's name and role, so a page shows only what the role may do."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, Field

from fleet_server.api.deps import (
    ADMIN_REFUSALS,
    VIEWER_REFUSALS,
    Admin,
    SessionDep,
    Viewer,
    note_target,
)
from fleet_server.api.errors import BODY_REFUSALS, INPUT_REFUSALS, error_responses
from fleet_server.models import (
    ApiTokenCreate,
    ApiTokenCreated,
    ApiTokenPublic,
    ApiTokenRotate,
    AuditPublic,
    Role,
)
from fleet_server.services import tokens as service
from fleet_server.services.audit import MAX_AUDIT_LIMIT, list_audit
from fleet_server.services.errors import Unprocessable

router = APIRouter(tags=["auth"])


class WhoAmI(BaseModel):
    actor: str = Field(description="The name the audit log records for this token.")
    role: Role = Field(description="viewer, operator or admin.")


@router.get("/whoami", responses=error_responses(VIEWER_REFUSALS))
def whoami(principal: Viewer) -> WhoAmI:
    """Who this token is: the dashboard hides the buttons its role may not use."""
    return WhoAmI(actor=principal.actor, role=principal.role or Role.VIEWER)


@router.post(
    "/tokens",
    status_code=201,
    responses=error_responses(
        ADMIN_REFUSALS, BODY_REFUSALS, 409, why={409: "A token of this name exists or existed."}
    ),
)
def create_token(
    body: ApiTokenCreate, request: Request, session: SessionDep, principal: Admin
) -> ApiTokenCreated:
    """A new API token with a role; the token is in this answer only (stored hashed)."""
    note_target(request, f"token:{body.name}", role=body.role.value)
    row, token = service.create_token(session=session, data=body, created_by=principal.actor)
    return ApiTokenCreated(**ApiTokenPublic.of(row).model_dump(), token=token)


@router.get("/tokens", responses=error_responses(ADMIN_REFUSALS))
def list_tokens(session: SessionDep, _: Admin) -> list[ApiTokenPublic]:
    return [ApiTokenPublic.of(row) for row in service.list_tokens(session=session)]


@router.delete("/tokens/{token_id}", responses=error_responses(ADMIN_REFUSALS, INPUT_REFUSALS, 404))
def revoke_token(
    token_id: Annotated[int, Path(ge=1, le=2**31 - 1)],
    request: Request,
    session: SessionDep,
    _: Admin,
) -> ApiTokenPublic:
    """Revoke a token: it is refused (401) from now on. Idempotent."""
    row = service.revoke_token(session=session, token_id=token_id)
    note_target(request, f"token:{row.name}")
    return ApiTokenPublic.of(row)


@router.post(
    "/tokens/{token_id}/rotate",
    responses=error_responses(
        ADMIN_REFUSALS, BODY_REFUSALS, 404, 409, why={409: "The token is revoked or expired."}
    ),
)
def rotate_token(
    token_id: Annotated[int, Path(ge=1, le=2**31 - 1)],
    request: Request,
    session: SessionDep,
    _: Admin,
    body: ApiTokenRotate | None = None,
) -> ApiTokenCreated:
    """A new secret for the token (same name and role; the old secret is refused from now on),
    shown once; ``expires_in_s`` sets a new expiry (omitted: unchanged)."""
    expires_in_s = body.expires_in_s if body is not None else None
    row, token = service.rotate_token(session=session, token_id=token_id, expires_in_s=expires_in_s)
    note_target(request, f"token:{row.name}", expires_at=str(row.expires_at))
    return ApiTokenCreated(**ApiTokenPublic.of(row).model_dump(), token=token)


@router.get("/audit", responses=error_responses(ADMIN_REFUSALS, INPUT_REFUSALS))
def audit_log(
    session: SessionDep,
    _: Admin,
    actor: Annotated[str | None, Query(max_length=80, description="Only this actor.")] = None,
    since: Annotated[
        datetime | None, Query(description="Only rows at or after (ISO 8601).")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_AUDIT_LIMIT)] = 100,
) -> list[AuditPublic]:
    """Mutating calls, newest first. A ``since`` without a zone is taken as UTC."""
    if since is not None:
        try:
            since = (since if since.tzinfo else since.replace(tzinfo=UTC)).astimezone(UTC)
        except OverflowError as err:
            raise Unprocessable("since: out of range") from err
    rows = list_audit(session=session, actor=actor, since=since, limit=limit)
    return [AuditPublic.of(row) for row in rows]
