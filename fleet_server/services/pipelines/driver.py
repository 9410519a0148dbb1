"""The pipeline driver (a leader job): advance every server-driven run, one step at a time.

Per step: record the step as running and commit (a crash leaves that evidence), run it outside
any transaction, then record what it returned — only if the run is still running (a cancel in
between wins) and this replica still holds the lease it ran under (a replica that lost the
lease mid-step writes nothing; the new driver resumes the run). A step row still ``running``
that this process did not start belongs to a process that died: the step runs again as a new
attempt, the old one closed as interrupted. A step that waits (``watch``) is polled each tick.
A failing step fails the run and opens an alert (``pipeline_failed``).

With ``background`` (the server), a step runs in a worker thread and the leader job only starts
and collects it: training takes minutes, far longer than the lease (15 s) a leader job must
finish within, and the leader loop keeps renewing while it runs. The result is recorded only if
the lease epoch the step started under is still held (nobody took over in between). A replica
that loses the lease cannot stop a step already running in its thread; its result is dropped
and the new driver runs the step again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from fleet_server.models import PipelineRun, PipelineStep
from fleet_server.models.pipelines import ACTIVE_RUN_STATES
from fleet_server.models.types import utcnow
from fleet_server.services.pipelines import records
from fleet_server.services.pipelines.config import PipelineRetrainConfig
from fleet_server.services.pipelines.steps import (
    ORDER,
    STEPS,
    RunView,
    Step,
    StepContext,
    StepError,
    StepResult,
)
from fleet_server.services.rollouts import RolloutEngine
from fleet_server.storage import ArtifactStore

log = logging.getLogger(__name__)

Outcome = tuple[StepResult | None, StepError | None]
#: Run fields a step may set.
RUN_FIELDS = ("parent_version", "candidate_version", "dataset_sha256", "rollout_id")


class PipelineDriver:
    name = "pipelines"

    def __init__(
        self,
        *,
        engine: Engine,
        config: PipelineRetrainConfig,
        store: ArtifactStore,
        rollouts: RolloutEngine | None,
        trusted_keys: Sequence[bytes],
        require_signed: bool,
        work_dir: Path,
        holds_lease: Callable[[int], bool] | None = None,
        clock: Callable[[], datetime] = utcnow,
        steps: Mapping[str, Step] = STEPS,
        background: bool = False,
    ) -> None:
        self.engine = engine
        self.config = config
        self.store = store
        self.rollouts = rollouts
        self.trusted_keys = trusted_keys
        self.require_signed = require_signed
        self.work_dir = work_dir
        self.interval_s = config.interval_s
        self.holds_lease = holds_lease
        self.clock = clock
        self.steps = steps
        self.order = tuple(name for name in ORDER if name in steps) or tuple(steps)
        #: Step rows this process started (a running row not in here was left by a dead one).
        self._mine: set[int] = set()
        self._pool = (
            ThreadPoolExecutor(max_workers=2, thread_name_prefix="edgefleet-pipeline")
            if background
            else None
        )
        #: run id → (the step's future, step row id, step name, lease epoch it started under).
        self._pending: dict[int, tuple[Future[Outcome], int, str, int | None]] = {}

    def close(self) -> None:
        """Stop taking steps; a running one finishes in its thread, unrecorded."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def run(self, *, epoch: int) -> None:
        self.tick(epoch=epoch)

    def tick(self, *, epoch: int | None = None) -> None:
        with Session(self.engine) as session:
            ids = session.exec(
                select(PipelineRun.id)
                .where(PipelineRun.source == "pipeline")
                .where(col(PipelineRun.state).in_(ACTIVE_RUN_STATES))
                .order_by(col(PipelineRun.id))
            ).all()
        for run_id in ids:
            assert run_id is not None
            if self._pool is not None:
                self._in_background(run_id, epoch, self._pool)
                continue
            # Finished steps go straight on to the next; a waiting step ends this tick's turn.
            for _ in range(len(self.order) + 1):
                if not self.advance(run_id, epoch=epoch):
                    break

    def _now(self) -> datetime:
        return self.clock()

    def advance(self, run_id: int, *, epoch: int | None = None) -> bool:
        """Run one step (or poll a waiting one) of run ``run_id``; True if a step finished and
        the run goes on."""
        prepared = self._prepare(run_id)
        if prepared is None:
            return False
        ctx, step_id, name = prepared
        result, failure = self._execute(ctx, name)
        return self._record(run_id, step_id, name, result, failure, epoch)

    def _in_background(self, run_id: int, epoch: int | None, pool: ThreadPoolExecutor) -> None:
        """Collect the run's finished step (if any) and start its next one in a thread."""
        pending = self._pending.get(run_id)
        if pending is not None:
            future, step_id, name, started_epoch = pending
            if not future.done():
                return
            del self._pending[run_id]
            result, failure = future.result()
            went_on = self._record(run_id, step_id, name, result, failure, started_epoch)
            if not went_on and step_id not in self._mine:
                return  # finished, failed, cancelled or not ours; a waiting step is polled again
        prepared = self._prepare(run_id)
        if prepared is None:
            return
        ctx, step_id, name = prepared
        self._pending[run_id] = (pool.submit(self._execute, ctx, name), step_id, name, epoch)

    def _execute(self, ctx: StepContext, name: str) -> Outcome:
        try:
            return self.steps[name].run(ctx), None
        except StepError as err:
            return None, err
        except Exception as err:  # noqa: BLE001 - a step's bug fails its run, not the driver
            log.exception("pipeline step crashed", extra={"run": ctx.run.id, "step": name})
            return None, StepError(f"{type(err).__name__}: {err}"[:500])

    def _prepare(self, run_id: int) -> tuple[StepContext, int, str] | None:
        now = self._now()
        with Session(self.engine) as session:
            run = session.get(PipelineRun, run_id)
            if run is None or run.state not in ACTIVE_RUN_STATES or run.source != "pipeline":
                return None
            config = self.config.models.get(run.model_name)
            if config is None:
                records.transition(
                    session,
                    run,
                    "failed",
                    now=now,
                    error=f"no pipeline is configured for {run.model_name}",
                )
                session.commit()
                return None
            if run.state == "queued":
                records.transition(session, run, "running", now=now)
            current = records.running_step(session, run)
            if current is not None and current.id in self._mine:
                step = current  # a waiting step, polled again
            else:
                if current is not None:
                    name = current.name  # left running by a process that died: run it again
                elif run.step is None:
                    name = self.order[0]
                else:
                    name = self.order[self.order.index(run.step) + 1]
                step = records.begin_step(session, run, name, now=now)
            session.commit()
            assert step.id is not None and run.id is not None
            self._mine.add(step.id)
            ctx = StepContext(
                run=RunView(
                    id=run.id,
                    model=run.model_name,
                    parent_version=run.parent_version,
                    candidate_version=run.candidate_version,
                    dataset_sha256=run.dataset_sha256,
                    rollout_id=run.rollout_id,
                    trigger=dict(run.trigger),
                    context=dict(run.context),
                    started_at=run.created_at,
                ),
                config=config,
                run_dir=self.work_dir / f"run-{run.id}",
                engine=self.engine,
                store=self.store,
                rollouts=self.rollouts,
                trusted_keys=self.trusted_keys,
                require_signed=self.require_signed,
                log_bytes=self.config.log_bytes,
                now=now,
            )
            ctx.run_dir.mkdir(parents=True, exist_ok=True)
            return ctx, step.id, step.name

    def _bounded(self, log: str | None) -> str | None:
        """A step's output as kept: its tail, at most ``log_bytes`` (the setting)."""
        return None if log is None else records.tail(log, self.config.log_bytes)

    def _record(
        self,
        run_id: int,
        step_id: int,
        name: str,
        result: StepResult | None,
        failure: StepError | None,
        epoch: int | None,
    ) -> bool:
        now = self._now()
        with Session(self.engine) as session:
            run = session.get(PipelineRun, run_id)
            step = session.get(PipelineStep, step_id)
            assert run is not None and step is not None
            if run.state != "running" or step.state != "running":
                if step.state == "running":
                    records.finish_step(
                        session,
                        step,
                        "cancelled",
                        now=now,
                        detail=f"the run was {run.state} during the step",
                    )
                    session.commit()
                self._mine.discard(step_id)
                return False
            if epoch is not None and self.holds_lease is not None and not self.holds_lease(epoch):
                log.warning(
                    "lost the lease during a pipeline step; not recording it",
                    extra={"run": run_id, "step": name},
                )
                self._mine.discard(step_id)
                return False
            if failure is not None:
                records.finish_step(
                    session,
                    step,
                    "failed",
                    now=now,
                    detail=str(failure),
                    numbers=failure.numbers,
                    log=self._bounded(failure.log),
                )
                records.transition(session, run, "failed", now=now, error=f"{name}: {failure}")
                session.commit()
                self._mine.discard(step_id)
                log.error(
                    "pipeline run failed",
                    extra={"run": run_id, "step": name, "error": str(failure)},
                )
                return False
            assert result is not None
            if not result.done:
                records.update_step(
                    step,
                    detail=result.detail,
                    numbers=result.numbers,
                    log=self._bounded(result.log),
                )
                session.add(step)
                session.commit()
                return False
            records.finish_step(
                session,
                step,
                "succeeded",
                now=now,
                detail=result.detail,
                numbers=result.numbers,
                log=self._bounded(result.log),
            )
            for key, value in result.run_fields.items():
                if key not in RUN_FIELDS:
                    raise ValueError(f"step {name} set unknown run field {key!r}")
                setattr(run, key, value)
            run.context = {**run.context, **result.context}
            run.updated_at = now
            session.add(run)
            last = name == self.order[-1]
            if last:
                records.transition(session, run, "succeeded", now=now)
            session.commit()
            self._mine.discard(step_id)
            log.info(
                "pipeline step done", extra={"run": run_id, "step": name, "detail": result.detail}
            )
            return not last
