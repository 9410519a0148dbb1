"""``watch``: wait for the candidate's rollout to end. Completed: the candidate is promoted
fleet-wide and the run succeeds. Aborted or failed (a gate stopped it): the run fails with the
gate's reason and the fleet is back on the parent. Still going after ``watch_timeout_s``: the
rollout is aborted and the run fails."""

from __future__ import annotations

from sqlmodel import Session, col, select

from fleet_server.models import Rollout, RolloutDecision, RolloutDevice
from fleet_server.services.errors import ServiceError
from fleet_server.services.pipelines.steps.base import StepContext, StepError, StepResult
from fleet_server.services.pipelines.steps.rollout import ACTOR
from fleet_server.services.rollouts import service as rollout_service
from fleet_server.services.rollouts.state import TERMINAL_STATES, RolloutState


class WatchStep:
    name = "watch"

    def run(self, ctx: StepContext) -> StepResult:
        rollout_id = ctx.run.rollout_id
        assert rollout_id is not None
        with Session(ctx.engine) as session:
            rollout = session.get(Rollout, rollout_id)
            if rollout is None:
                raise StepError(f"rollout #{rollout_id} is gone")
            statuses = session.exec(
                select(RolloutDevice.status).where(RolloutDevice.rollout_id == rollout_id)
            ).all()
            counts: dict[str, int] = {}
            for status in statuses:
                counts[status] = counts.get(status, 0) + 1
            last = session.exec(
                select(RolloutDecision)
                .where(RolloutDecision.rollout_id == rollout_id)
                .order_by(col(RolloutDecision.id).desc())
            ).first()
            state, stage, created = rollout.state, rollout.stage, rollout.created_at
        numbers = {"rollout_state": state, "stage": stage, "devices": counts}
        reason = last.reason if last is not None else ""
        if state == RolloutState.COMPLETED:
            return StepResult(
                detail=f"rollout #{rollout_id} completed: promoted fleet-wide", numbers=numbers
            )
        if state in TERMINAL_STATES:
            raise StepError(
                f"rollout #{rollout_id} {state}: {reason}; the fleet stays on "
                f"{ctx.run.parent_version}"[:900],
                numbers=numbers,
            )
        if (ctx.now - created).total_seconds() > ctx.config.watch_timeout_s:
            if ctx.rollouts is not None and state != RolloutState.ABORTING:
                try:
                    rollout_service.abort(
                        ctx.rollouts,
                        rollout_id,
                        actor=ACTOR,
                        reason="the pipeline's watch timed out",
                    )
                except ServiceError:
                    pass  # it ended meanwhile; the failure below says why we stopped waiting
            raise StepError(
                f"rollout #{rollout_id} still {state} after {ctx.config.watch_timeout_s:g} s: "
                "aborted",
                numbers=numbers,
            )
        return StepResult(
            detail=f"rollout #{rollout_id} {state} at stage {stage}", done=False, numbers=numbers
        )
