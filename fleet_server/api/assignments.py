"""/api/v1/assignments"""

from __future__ import annotations

from fastapi import APIRouter, Request

from fleet_server.api.deps import (
    OPERATOR_REFUSALS,
    Operator,
    RuntimeDep,
    SessionDep,
    SettingsDep,
    note_target,
)
from fleet_server.api.errors import BODY_REFUSALS, error_responses
from fleet_server.services.assignments import AssignmentCreate, AssignmentPublic, assign_model
from fleet_server.services.errors import Unavailable

router = APIRouter(prefix="/assignments", tags=["assignments"])


@router.post(
    "",
    responses=error_responses(
        OPERATOR_REFUSALS,
        BODY_REFUSALS,
        404,
        why={
            404: "No such model version, device id, or no device with the tag.",
            503: "The MQTT bus or the database is not ready; try again later.",
        },
    ),
)
def create_assignment(
    body: AssignmentCreate,
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    settings: SettingsDep,
    _: Operator,
) -> AssignmentPublic:
    """Assign a version to devices by id and/or tag; pinned devices are skipped (listed)."""
    note_target(
        request,
        f"model:{body.model}@{body.version}",
        devices=len(body.device_ids),
        tag=body.tag,
    )
    if runtime.bus is None:
        raise Unavailable("the MQTT bus is not running")
    return assign_model(
        session=session,
        publisher=runtime.bus,
        public_url=settings.resolved_public_url,
        request=body,
    )
