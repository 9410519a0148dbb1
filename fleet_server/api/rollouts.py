"""/api/v1/rollouts"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from fleet_server.api.deps import (
    OPERATOR_REFUSALS,
    VIEWER_REFUSALS,
    Operator,
    RuntimeDep,
    SessionDep,
    Viewer,
    note_target,
)
from fleet_server.api.errors import BODY_REFUSALS, INPUT_REFUSALS, error_responses
from fleet_server.models.types import utcnow
from fleet_server.services.errors import Unavailable
from fleet_server.services.rollouts import service
from fleet_server.services.rollouts.engine import RolloutEngine
from fleet_server.services.rollouts.service import RolloutPublic, RolloutReport
from fleet_server.services.rollouts.spec import RolloutCreate
from fleet_server.services.rollouts.state import OPERATOR_ACTIONS, RolloutState

router = APIRouter(prefix="/rollouts", tags=["rollouts"])

#: Rollout ids are database integers: anything outside 1..2^31-1 is a 422, not a driver error.
RolloutId = Annotated[int, Path(ge=1, le=2**31 - 1, description="Rollout id.")]


class RolloutAction(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"reason": "p95 looks odd on rpi3"}]}
    )

    reason: str = Field(default="", max_length=500, description="Recorded in the report.")


ActionBody = Annotated[RolloutAction | None, Body()]


def _engine(runtime: RuntimeDep) -> RolloutEngine:
    if runtime.rollouts is None:
        raise Unavailable("the rollout engine is not running")
    return runtime.rollouts


@router.post(
    "",
    status_code=201,
    responses=error_responses(
        OPERATOR_REFUSALS,
        BODY_REFUSALS,
        404,
        409,
        why={
            404: "No such model version or device id.",
            409: "A targeted device is in another active rollout.",
            422: "Invalid body, an unsigned version, or a selector that matches no device.",
            503: "The rollout engine or the database is not ready; try again later.",
        },
    ),
)
def create_rollout(
    body: RolloutCreate, request: Request, session: SessionDep, runtime: RuntimeDep, who: Operator
) -> RolloutPublic:
    """Start a staged rollout; the canary is assigned at once."""
    created = service.create_rollout(
        session=session,
        rollouts=_engine(runtime),
        request=body,
        actor=who.actor,
        trusted_keys=runtime.trusted_keys,
    )
    note_target(request, f"rollout:{created.id}", model=f"{body.model}@{body.version}")
    return created


@router.get("", responses=error_responses(VIEWER_REFUSALS, INPUT_REFUSALS))
def list_rollouts(
    session: SessionDep,
    _: Viewer,
    state: RolloutState | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[RolloutPublic]:
    return service.list_rollouts(session, state=state, limit=limit)


@router.get("/{rollout_id}", responses=error_responses(VIEWER_REFUSALS, INPUT_REFUSALS, 404))
def show_rollout(rollout_id: RolloutId, session: SessionDep, _: Viewer) -> RolloutPublic:
    return service.view(session, rollout_id)


@router.get("/{rollout_id}/report", responses=error_responses(VIEWER_REFUSALS, INPUT_REFUSALS, 404))
def rollout_report(rollout_id: RolloutId, session: SessionDep, _: Viewer) -> RolloutReport:
    """Every decision with the numbers behind it, every device, and new-vs-old differential."""
    return service.report(session, rollout_id, now=utcnow())


def _action(name: str) -> Callable[..., Any]:
    act = getattr(service, name)

    def endpoint(
        rollout_id: RolloutId,
        request: Request,
        session: SessionDep,
        runtime: RuntimeDep,
        who: Operator,
        body: ActionBody = None,
    ) -> RolloutPublic:
        note_target(request, f"rollout:{rollout_id}", action=name)
        act(_engine(runtime), rollout_id, actor=who.actor, reason=body.reason if body else "")
        session.expire_all()
        return service.view(session, rollout_id)

    endpoint.__name__ = f"{name}_rollout"
    endpoint.__doc__ = f"{name.capitalize()} the rollout (recorded with the actor and reason)."
    return endpoint


for _verb in OPERATOR_ACTIONS:
    router.add_api_route(
        f"/{{rollout_id}}/{_verb.value}",
        _action(_verb.value),
        methods=["POST"],
        responses=error_responses(
            OPERATOR_REFUSALS,
            BODY_REFUSALS,
            404,
            409,
            why={
                409: "The rollout's state does not allow this action, or it changed "
                "concurrently; try again.",
                503: "The rollout engine or the database is not ready; try again later.",
            },
        ),
    )
