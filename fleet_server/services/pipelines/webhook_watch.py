"""The timeout of webhook runs (a leader job): a run an external engine took (``source``
``webhook``) that has had no step report for its ``report_timeout_s`` fails with the reason,
its running step is closed, and the failure opens an alert (``pipeline_failed``) like any
failed run. Without it, an engine that crashed, lost the run or never had it (a 202 from a
proxy in front of it) left the run ``running`` forever — and, since a model has one unfinished
run at a time, blocked every later retraining of that model.

Silence is measured from the run's ``updated_at``: set when the trigger recorded the run and on
every report (:func:`.service.report_step`). Each run is failed in its own transaction; a
report that lands first wins (the run is re-read and checked before it is failed).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from fleet_server.models import PipelineRun
from fleet_server.models.pipelines import ACTIVE_RUN_STATES
from fleet_server.models.types import utcnow
from fleet_server.services.pipelines import records

log = logging.getLogger(__name__)

#: The longest pause between two checks (a short timeout is checked more often).
MAX_INTERVAL_S = 60.0


class WebhookRunWatch:
    name = "pipeline-webhooks"

    def __init__(
        self,
        *,
        engine: Engine,
        timeout_for: Callable[[str], float],
        shortest_s: float,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.engine = engine
        self.timeout_for = timeout_for
        self.clock = clock
        self.interval_s = min(MAX_INTERVAL_S, max(0.5, shortest_s / 10))

    def run(self, *, epoch: int) -> None:
        self.tick()

    def tick(self) -> list[int]:
        """Fail every webhook run silent past its timeout; their ids."""
        now = self.clock()
        with Session(self.engine) as session:
            candidates = session.exec(
                select(PipelineRun.id, PipelineRun.model_name, PipelineRun.updated_at)
                .where(PipelineRun.source == "webhook")
                .where(col(PipelineRun.state).in_(ACTIVE_RUN_STATES))
            ).all()
        failed = []
        for run_id, model, updated_at in candidates:
            assert run_id is not None
            if (now - updated_at).total_seconds() > self.timeout_for(model):
                if self._fail(run_id, now):
                    failed.append(run_id)
        return failed

    def _fail(self, run_id: int, now: datetime) -> bool:
        with Session(self.engine) as session:
            run = session.get(PipelineRun, run_id)
            if run is None or run.state not in ACTIVE_RUN_STATES:
                return False
            limit = self.timeout_for(run.model_name)
            silent = (now - run.updated_at).total_seconds()
            if silent <= limit:
                return False  # a report arrived since the list was read
            reason = (
                f"no report from the pipeline engine for {silent:.0f} s "
                f"(report_timeout_s {limit:g}): the run is lost"
            )
            step = records.running_step(session, run)
            if step is not None:
                records.finish_step(session, step, "failed", now=now, detail=reason)
            records.transition(session, run, "failed", now=now, error=f"webhook: {reason}")
            session.commit()
        log.error("webhook pipeline run timed out", extra={"run": run_id, "error": reason})
        return True
