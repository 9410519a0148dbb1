"""/api/v1/enrollment-tokens (operator; the list: viewer) and /api/v1/enroll (the enrollment
token is the auth)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request

from fleet_server.api.deps import (
    OPERATOR_REFUSALS,
    VIEWER_REFUSALS,
    Operator,
    RuntimeDep,
    SessionDep,
    Viewer,
    note_actor,
    note_target,
)
from fleet_server.api.errors import BODY_REFUSALS, INPUT_REFUSALS, error_responses
from fleet_server.api.guard import guarded
from fleet_server.models import (
    Enrolled,
    EnrollmentTokenCreate,
    EnrollmentTokenCreated,
    EnrollmentTokenPublic,
    EnrollRequest,
)
from fleet_server.services import enrollment as service

router = APIRouter(tags=["enrollment"])


@router.post(
    "/enrollment-tokens",
    status_code=201,
    responses=error_responses(OPERATOR_REFUSALS, BODY_REFUSALS),
)
def create_enrollment_token(
    body: EnrollmentTokenCreate, request: Request, session: SessionDep, principal: Operator
) -> EnrollmentTokenCreated:
    """A token devices trade for their own credentials at ``POST /api/v1/enroll``; shown once."""
    row, token = service.create_enrollment_token(
        session=session, data=body, created_by=principal.actor
    )
    note_target(request, f"enrollment-token:{row.id}", uses=row.uses)
    return EnrollmentTokenCreated(**EnrollmentTokenPublic.of(row).model_dump(), token=token)


@router.get("/enrollment-tokens", responses=error_responses(VIEWER_REFUSALS, INPUT_REFUSALS))
def list_enrollment_tokens(
    session: SessionDep,
    _: Viewer,
    active: Annotated[
        bool, Query(description="Only tokens that can still enroll a device.")
    ] = False,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[EnrollmentTokenPublic]:
    """Enrollment tokens, newest first, with their state; never the tokens themselves (they are
    shown once, at creation, and stored hashed), so a viewer may read the list like every
    other fleet ``GET``."""
    rows = service.list_enrollment_tokens(session=session, active_only=active, limit=limit)
    return [EnrollmentTokenPublic.of(row) for row in rows]


@router.delete(
    "/enrollment-tokens/{token_id}",
    responses=error_responses(OPERATOR_REFUSALS, INPUT_REFUSALS, 404),
)
def revoke_enrollment_token(
    token_id: Annotated[int, Path(ge=1, le=2**31 - 1)],
    request: Request,
    session: SessionDep,
    _: Operator,
) -> EnrollmentTokenPublic:
    """Revoke: no device enrolls with it from now on (410); devices it enrolled keep their
    credentials. Idempotent."""
    row = service.revoke_enrollment_token(session=session, token_id=token_id)
    note_target(request, f"enrollment-token:{row.id}")
    return EnrollmentTokenPublic.of(row)


@router.post(
    "/enroll",
    status_code=201,
    responses=error_responses(
        BODY_REFUSALS,
        401,
        409,
        410,
        429,
        503,
        why={
            401: "Unknown enrollment token.",
            409: "The device id exists, or the class differs from the token's.",
            410: "The enrollment token has expired, is used up or was revoked.",
            429: "Too many failed attempts from this client: wait `Retry-After` seconds.",
            503: "The database is not ready; try again later.",
        },
    ),
)
def enroll(
    body: EnrollRequest, request: Request, session: SessionDep, runtime: RuntimeDep
) -> Enrolled:
    """Trade an enrollment token for a device id and its credentials (shown once). The MQTT
    user name is the device id and the password its token."""
    note_actor(request, "enrollment")
    device, token = guarded(
        request,
        runtime,
        kind="enrollment",
        secret=body.enrollment_token,
        check=lambda: service.enroll(
            session=session, request=body, credentials=runtime.credentials
        ),
    )
    note_actor(request, f"device:{device.device_id}")
    note_target(request, f"device:{device.device_id}")
    return Enrolled(
        device_id=device.device_id,
        device_class=device.device_class,
        tags=list(device.tags),
        token=token,
        mqtt_username=device.device_id,
        mqtt_password=token,
    )
