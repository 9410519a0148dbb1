"""What the API and the retraining backends do with pipeline runs: start one on a trigger or
by hand, list and show them, cancel one, and take step reports from an external engine."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlmodel import Session, col, select

from edgefleet.contract.pydantic_types import ModelVersion as VersionStr
from fleet_server.models import ModelVersion, PipelineRun, PipelineRunPublic, PipelineStepPublic
from fleet_server.models.pipelines import ACTIVE_RUN_STATES, MAX_STEP_LOG
from fleet_server.services.errors import Conflict, NotFound, ServiceError, TooLarge
from fleet_server.services.pipelines import records
from fleet_server.services.rollouts import RolloutEngine
from fleet_server.services.rollouts import service as rollout_service

#: Trigger fields kept on a run (the alert's identity and what fired).
TRIGGER_KEYS = ("kind", "alert_id", "model", "version", "detector", "value", "threshold", "detail")
MAX_NUMBERS = 50


def parent_for(session: Session, model: str, version: str | None) -> str | None:
    """The version a run retrains from: the alert's version when registered, else the newest."""
    if version and version != "*" and session.get(ModelVersion, (model, version)) is not None:
        return version
    return session.exec(
        select(ModelVersion.version)
        .where(ModelVersion.name == model)
        .order_by(col(ModelVersion.created_at).desc())
    ).first()


def start_run(
    session: Session, *, payload: dict[str, Any], source: str, now: datetime
) -> PipelineRun:
    """A run for the trigger ``payload`` (committed); Conflict while the model has one."""
    model = str(payload.get("model", ""))
    run = records.create_run(
        session,
        model=model,
        source=source,
        trigger={k: payload[k] for k in TRIGGER_KEYS if k in payload},
        parent_version=parent_for(session, model, payload.get("version")),
        now=now,
        state="queued" if source == "pipeline" else "running",
    )
    session.commit()
    session.refresh(run)
    return run


def start_manual_run(
    session: Session,
    *,
    configured: Collection[str] | None,
    model: str,
    actor: str,
    reason: str,
    now: datetime,
) -> PipelineRunPublic:
    """An operator's "retrain now": a queued run of the server's pipeline for ``model``
    (``configured``: the models the pipeline backend has; None when the backend is not
    ``pipeline``). Refused while the model has an unfinished run."""
    if configured is None:
        raise Conflict("the server's retraining backend is not `pipeline` (EDGEFLEET_RETRAIN)")
    if model not in configured:
        raise NotFound(f"no pipeline is configured for {model}")
    if parent_for(session, model, None) is None:
        raise NotFound(f"no registered version of {model} to retrain from")
    detail = f"started by {actor}" + (f": {reason}" if reason else "")
    payload = {"kind": "manual", "model": model, "detail": detail}
    return public(session, start_run(session, payload=payload, source="pipeline", now=now))


def public(session: Session, run: PipelineRun, *, logs: bool = False) -> PipelineRunPublic:
    assert run.id is not None
    steps = [
        PipelineStepPublic(
            name=s.name,
            state=s.state,
            attempt=s.attempt,
            started_at=s.started_at,
            finished_at=s.finished_at,
            detail=s.detail,
            numbers=s.numbers,
            log=s.log if logs else None,
        )
        for s in records.steps_of(session, run.id)
    ]
    data = run.model_dump(exclude={"active_model", "context"})
    return PipelineRunPublic(**data, steps=steps)


def list_runs(
    session: Session, *, model: str | None, state: str | None, limit: int
) -> list[PipelineRunPublic]:
    query = select(PipelineRun).order_by(col(PipelineRun.id).desc()).limit(limit)
    if model is not None:
        query = query.where(PipelineRun.model_name == model)
    if state is not None:
        query = query.where(PipelineRun.state == state)
    return [public(session, run) for run in session.exec(query)]


def cancel_run(
    *,
    session: Session,
    rollouts: RolloutEngine | None,
    run_id: int,
    actor: str,
    reason: str,
    now: datetime,
) -> PipelineRunPublic:
    """Cancel a run that is not finished; its rollout (if any is still going) is aborted, so the
    fleet goes back to the parent."""
    run = records.get_run(session, run_id)
    records.transition(
        session,
        run,
        "cancelled",
        now=now,
        error=f"cancelled by {actor}" + (f": {reason}" if reason else ""),
    )
    step = records.running_step(session, run)
    if step is not None:
        records.finish_step(session, step, "cancelled", now=now, detail=f"cancelled by {actor}")
    session.commit()
    if run.rollout_id is not None and rollouts is not None:
        try:
            rollout_service.abort(
                rollouts, run.rollout_id, actor=actor, reason=f"pipeline run #{run_id} cancelled"
            )
        except ServiceError:
            pass  # the rollout had already ended: nothing to undo
    session.refresh(run)
    return public(session, run)


Scalar = float | int | str | bool | None


class StepReport(BaseModel):
    """One step of a run an external engine drives (Airflow, Kubeflow, a CI job)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "train",
                    "state": "succeeded",
                    "detail": "12 epochs",
                    "numbers": {"top1": 0.93},
                }
            ]
        },
    )

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$", description="Step name.")
    state: Literal["running", "succeeded", "failed"] = Field(description="Where the step is.")
    detail: str = Field(default="", max_length=1000, description="One line for people.")
    numbers: dict[str, Scalar] = Field(
        default_factory=dict, max_length=MAX_NUMBERS, description="Flat numbers of the step."
    )
    log: str = Field(default="", description=f"Output (at most {MAX_STEP_LOG} bytes).")
    candidate_version: VersionStr | None = Field(default=None, description="What it produced.")
    dataset_sha256: str | None = Field(
        default=None, pattern=r"^[0-9a-f]{64}$", description="The data it trained on."
    )
    finish_run: bool = Field(
        default=False, description="With state succeeded: the whole run succeeded."
    )

    @field_validator("numbers")
    @classmethod
    def _keys(cls, value: dict[str, Scalar]) -> dict[str, Scalar]:
        for key, item in value.items():
            if not 0 < len(key) <= 64:
                raise ValueError("number names are 1-64 characters")
            if isinstance(item, str) and len(item) > 200:
                raise ValueError(f"numbers[{key!r}] is longer than 200 characters")
        return value


def report_step(
    *, session: Session, run_id: int, report: StepReport, now: datetime
) -> PipelineRunPublic:
    if len(report.log.encode("utf-8", "replace")) > MAX_STEP_LOG:
        raise TooLarge(f"log is larger than {MAX_STEP_LOG} bytes; send its tail")
    run = records.get_run(session, run_id)
    if run.source != "webhook":
        raise Conflict(f"pipeline run #{run_id} is driven by the server; it takes no reports")
    if run.state not in ACTIVE_RUN_STATES:
        raise Conflict(f"pipeline run #{run_id} is {run.state}")
    if run.state == "queued":
        records.transition(session, run, "running", now=now)
    step = records.running_step(session, run)
    if step is None or step.name != report.name:
        step = records.begin_step(session, run, report.name, now=now)
    run.updated_at = now  # heard from: the webhook watch measures silence from here
    if report.candidate_version is not None:
        run.candidate_version = report.candidate_version
    if report.dataset_sha256 is not None:
        run.dataset_sha256 = report.dataset_sha256
    log = report.log or None
    if report.state == "running":
        records.update_step(step, detail=report.detail, numbers=report.numbers, log=log)
        session.add(step)
    else:
        records.finish_step(
            session,
            step,
            report.state,
            now=now,
            detail=report.detail,
            numbers=report.numbers,
            log=log,
        )
        if report.state == "failed":
            records.transition(
                session, run, "failed", now=now, error=f"{report.name}: {report.detail or 'failed'}"
            )
        elif report.finish_run:
            records.transition(session, run, "succeeded", now=now)
    session.add(run)
    session.commit()
    session.refresh(run)
    return public(session, run)
