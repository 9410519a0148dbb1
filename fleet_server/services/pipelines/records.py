"""The one owner of pipeline run and step state: a transition table, :func:`transition` (every
state change of a run goes through it), step begin/finish, and the alert a failure opens.

Callers hold a session and commit; nothing here publishes or runs anything.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from fleet_server.models import DriftAlert, PipelineRun, PipelineStep
from fleet_server.models.pipelines import ACTIVE_RUN_STATES, MAX_STEP_LOG
from fleet_server.services.errors import Conflict, NotFound

#: run state → the states it may move to.
TRANSITIONS: dict[str, frozenset[str]] = {
    "queued": frozenset({"running", "failed", "cancelled"}),
    "running": frozenset({"succeeded", "failed", "cancelled"}),
    "succeeded": frozenset(),
    "failed": frozenset(),
    "cancelled": frozenset(),
}
#: The detector name of the alert a failed run opens (in the drift alerts list).
ALERT_DETECTOR = "pipeline_failed"


def tail(text: str, limit: int = MAX_STEP_LOG) -> str:
    """The last ``limit`` bytes of ``text`` (a step's log), on a character boundary."""
    raw = text.encode("utf-8", "replace")
    if len(raw) <= limit:
        return text
    return "…" + raw[-limit:].decode("utf-8", "ignore")


def create_run(
    session: Session,
    *,
    model: str,
    source: str,
    trigger: dict[str, Any],
    parent_version: str | None,
    now: datetime,
    state: str = "queued",
) -> PipelineRun:
    """A new run; Conflict if the model already has one that is not finished (checked here and
    enforced by the unique ``active_model`` under concurrency). Flushed, not committed."""
    active = active_run(session, model)
    if active is not None:
        raise Conflict(f"pipeline run #{active.id} of {model} is still {active.state}")
    run = PipelineRun(
        model_name=model,
        active_model=model,
        source=source,
        state=state,
        trigger=trigger,
        parent_version=parent_version,
        created_at=now,
        updated_at=now,
    )
    session.add(run)
    try:
        session.flush()
    except IntegrityError as err:
        session.rollback()
        raise Conflict(f"a pipeline run of {model} is already active") from err
    return run


def active_run(session: Session, model: str) -> PipelineRun | None:
    return session.exec(
        select(PipelineRun).where(
            PipelineRun.model_name == model, col(PipelineRun.state).in_(ACTIVE_RUN_STATES)
        )
    ).first()


def get_run(session: Session, run_id: int) -> PipelineRun:
    run = session.get(PipelineRun, run_id)
    if run is None:
        raise NotFound(f"pipeline run #{run_id} not found")
    return run


def transition(
    session: Session, run: PipelineRun, to: str, *, now: datetime, error: str = ""
) -> None:
    """Move ``run`` to state ``to`` (Conflict if the table forbids it); a finished run frees its
    model for the next run and, when it failed, opens an alert."""
    if to not in TRANSITIONS[run.state]:
        raise Conflict(f"pipeline run #{run.id} is {run.state}; it cannot become {to}")
    run.state, run.updated_at = to, now
    if error:
        run.error = error[:1000]
    if to not in ACTIVE_RUN_STATES:
        run.active_model = None
        run.finished_at = now
    if to == "failed":
        run.alert_id = _open_alert(session, run, now)
    session.add(run)


def _open_alert(session: Session, run: PipelineRun, now: datetime) -> int:
    alert = DriftAlert(
        model_name=run.model_name,
        model_version=run.parent_version or "*",
        detector=ALERT_DETECTOR,
        value=None,
        threshold=0.0,
        samples=0,
        detail=f"pipeline run #{run.id} failed at {run.step or 'start'}: {run.error}"[:500],
        opened_at=now,
        closed_at=None,
        trigger_status="none",
    )
    session.add(alert)
    session.flush()
    assert alert.id is not None
    return alert.id


def running_step(session: Session, run: PipelineRun) -> PipelineStep | None:
    return session.exec(
        select(PipelineStep)
        .where(PipelineStep.run_id == run.id, PipelineStep.state == "running")
        .order_by(col(PipelineStep.id).desc())
    ).first()


def begin_step(session: Session, run: PipelineRun, name: str, *, now: datetime) -> PipelineStep:
    """A new attempt of step ``name``; an earlier attempt still marked running (its process
    died) is closed as failed with that reason."""
    attempt = 1
    for old in session.exec(
        select(PipelineStep).where(PipelineStep.run_id == run.id, PipelineStep.name == name)
    ):
        attempt = max(attempt, old.attempt + 1)
        if old.state == "running":
            old.state, old.finished_at = "failed", now
            old.detail = "interrupted: the server stopped during the step; run again"
            session.add(old)
    assert run.id is not None
    step = PipelineStep(run_id=run.id, name=name, state="running", attempt=attempt, started_at=now)
    run.step, run.updated_at = name, now
    session.add(step)
    session.add(run)
    session.flush()
    return step


def finish_step(
    session: Session,
    step: PipelineStep,
    state: str,
    *,
    now: datetime,
    detail: str,
    numbers: dict[str, Any] | None = None,
    log: str | None = None,
) -> None:
    step.state, step.finished_at = state, now
    update_step(step, detail=detail, numbers=numbers, log=log)
    session.add(step)


def update_step(
    step: PipelineStep,
    *,
    detail: str,
    numbers: dict[str, Any] | None = None,
    log: str | None = None,
) -> None:
    step.detail = detail[:1000]
    if numbers is not None:
        step.numbers = {**step.numbers, **numbers}
    if log is not None:
        step.log = tail(log)


def steps_of(session: Session, run_id: int) -> list[PipelineStep]:
    return list(
        session.exec(
            select(PipelineStep).where(PipelineStep.run_id == run_id).order_by(col(PipelineStep.id))
        )
    )
