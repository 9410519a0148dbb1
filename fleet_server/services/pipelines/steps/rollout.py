"""``rollout``: a rollout of the candidate from the model's rollout template, created through
the same service function as ``POST /rollouts`` (actor ``pipeline``, name ``pipeline-run-<id>``).

The template's ``shadow`` stage becomes the rollout's shadow stage (before the canary) and is
recorded on the step.
"""

from __future__ import annotations

from sqlmodel import Session, select

from fleet_server.models import Rollout
from fleet_server.services.errors import ServiceError
from fleet_server.services.pipelines.steps.base import StepContext, StepError, StepResult
from fleet_server.services.rollouts import GatePolicy, RolloutCreate, Selector, Strategy
from fleet_server.services.rollouts import service as rollout_service

ACTOR = "pipeline"


def rollout_name(run_id: int) -> str:
    return f"pipeline-run-{run_id}"


class RolloutStep:
    name = "rollout"

    def run(self, ctx: StepContext) -> StepResult:
        if ctx.rollouts is None:
            raise StepError("the rollout engine is not running")
        version = ctx.run.candidate_version
        assert version is not None
        template = ctx.config.rollout
        numbers = {"shadow": template.shadow} if template.shadow is not None else {}
        with Session(ctx.engine) as session:
            # Created by an attempt the server stopped in before recording it: adopt it.
            earlier = session.exec(
                select(Rollout).where(Rollout.name == rollout_name(ctx.run.id))
            ).first()
            if earlier is not None:
                return StepResult(
                    detail=f"rollout #{earlier.id} (created earlier)",
                    numbers=numbers,
                    run_fields={"rollout_id": earlier.id},
                )
            try:
                created = rollout_service.create_rollout(
                    session=session,
                    rollouts=ctx.rollouts,
                    request=RolloutCreate(
                        name=rollout_name(ctx.run.id),
                        model=ctx.run.model,
                        version=version,
                        selector=Selector.model_validate(template.selector),
                        strategy=Strategy.model_validate(template.strategy_body()),
                        gates=GatePolicy.model_validate(template.gates),
                    ),
                    actor=ACTOR,
                    trusted_keys=ctx.trusted_keys,
                )
            except ServiceError as err:
                raise StepError(f"rollout refused: {err}") from err
        return StepResult(
            detail=f"rollout #{created.id} of {ctx.run.model}@{version} started",
            numbers={**numbers, "rollout_id": created.id, "stages": len(created.stages)},
            run_fields={"rollout_id": created.id},
        )
