"""/api/v1/pipelines: retraining pipeline runs (viewer reads; operator starts and cancels; an
external engine, with an operator token, reports the steps of a webhook-triggered run)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Body, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from edgefleet.contract.pydantic_types import ModelName
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
from fleet_server.models import PipelineRunPublic
from fleet_server.models.types import utcnow
from fleet_server.services.pipelines import records, service
from fleet_server.services.pipelines.service import StepReport

router = APIRouter(prefix="/pipelines", tags=["pipelines"])

RunId = Annotated[int, Path(ge=1, le=2**31 - 1, description="Pipeline run id.")]
RunState = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class CancelBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="", max_length=500, description="Recorded on the run.")


class StartBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: ModelName = Field(description="The model whose pipeline runs.")
    reason: str = Field(default="", max_length=500, description="Recorded on the run.")


@router.post(
    "/runs",
    status_code=201,
    responses=error_responses(
        OPERATOR_REFUSALS,
        BODY_REFUSALS,
        404,
        409,
        why={
            404: "No pipeline or no registered version for the model.",
            409: "The backend is not `pipeline`, or the model has an unfinished run.",
        },
    ),
)
def start_run(
    body: StartBody, request: Request, session: SessionDep, runtime: RuntimeDep, who: Operator
) -> PipelineRunPublic:
    """Retrain now: queue a run of the server's pipeline for the model (the same run a drift
    or schedule trigger starts; the driver takes it on its next tick)."""
    note_target(request, f"model:{body.model}")
    pipelines = runtime.pipelines
    return service.start_manual_run(
        session,
        configured=None if pipelines is None else set(pipelines.config.models),
        model=body.model,
        actor=who.actor,
        reason=body.reason,
        now=utcnow(),
    )


@router.get("/runs", responses=error_responses(VIEWER_REFUSALS, INPUT_REFUSALS))
def list_runs(
    session: SessionDep,
    _: Viewer,
    model: Annotated[str | None, Query(max_length=63, description="Model name.")] = None,
    state: RunState | None = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Runs, newest first.")] = 100,
) -> list[PipelineRunPublic]:
    """Runs with their steps (without logs), newest first."""
    return service.list_runs(session, model=model, state=state, limit=limit)


@router.get(
    "/runs/{run_id}",
    responses=error_responses(VIEWER_REFUSALS, INPUT_REFUSALS, 404, why={404: "No such run."}),
)
def get_run(run_id: RunId, session: SessionDep, _: Viewer) -> PipelineRunPublic:
    """One run with its steps and their logs (the tail of each step's output)."""
    return service.public(session, records.get_run(session, run_id), logs=True)


@router.post(
    "/runs/{run_id}/cancel",
    responses=error_responses(
        OPERATOR_REFUSALS,
        BODY_REFUSALS,
        404,
        409,
        why={404: "No such run.", 409: "The run has finished."},
    ),
)
def cancel_run(
    run_id: RunId,
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    who: Operator,
    body: Annotated[CancelBody | None, Body()] = None,
) -> PipelineRunPublic:
    """Stop a run; a rollout it started is aborted (the fleet goes back to the parent)."""
    note_target(request, f"pipeline-run:{run_id}")
    return service.cancel_run(
        session=session,
        rollouts=runtime.rollouts,
        run_id=run_id,
        actor=who.actor,
        reason=body.reason if body else "",
        now=utcnow(),
    )


@router.post(
    "/runs/{run_id}/steps",
    responses=error_responses(
        OPERATOR_REFUSALS,
        BODY_REFUSALS,
        404,
        409,
        413,
        why={
            404: "No such run.",
            409: "The run is server-driven or finished.",
            413: "The log is larger than 64 KiB.",
        },
    ),
)
def report_step(
    run_id: RunId, body: StepReport, request: Request, session: SessionDep, who: Operator
) -> PipelineRunPublic:
    """An external engine reports a step of the run its webhook started: running, succeeded
    (``finish_run``: the run is done) or failed (the run fails and an alert opens)."""
    note_target(request, f"pipeline-run:{run_id}", step=body.name)
    return service.report_step(session=session, run_id=run_id, report=body, now=utcnow())
