"""/api/v1/assignments"""

from __future__ import annotations

from fastapi import APIRouter

from fleet_server.api.deps import Operator, RuntimeDep, SessionDep, SettingsDep
from fleet_server.services.assignments import AssignmentCreate, AssignmentPublic, assign_model
from fleet_server.services.errors import Unavailable

router = APIRouter(prefix="/assignments", tags=["assignments"])


@router.post("")
def create_assignment(
    body: AssignmentCreate,
    session: SessionDep,
    runtime: RuntimeDep,
    settings: SettingsDep,
    _: Operator,
) -> AssignmentPublic:
    if runtime.bus is None:
        raise Unavailable("the MQTT bus is not running")
    return assign_model(
        session=session,
        publisher=runtime.bus,
        public_url=settings.resolved_public_url,
        request=body,
    )
