"""A webhook run whose engine never reports back (SQLite and PostgreSQL, a fake clock): the
watch fails it after ``report_timeout_s`` of silence with the reason, closes its running step
and opens an alert; a report resets the silence; a per-model timeout overrides the default; a
report after the failure is refused; a running server with a webhook backend does all this."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import Engine
from sqlmodel import Session

from fleet_server.db import make_engine, migrate
from fleet_server.models import DriftAlert, PipelineRun
from fleet_server.models.types import utcnow
from fleet_server.services.drift.retrain import WebhookRetrainConfig
from fleet_server.services.errors import Conflict
from fleet_server.services.pipelines import records, service
from fleet_server.services.pipelines.records import ALERT_DETECTOR
from fleet_server.services.pipelines.service import StepReport
from fleet_server.services.pipelines.webhook_watch import WebhookRunWatch
from tests.fleet_server.helpers import make_settings, operator, running_app

pytestmark = pytest.mark.integration
T0 = datetime(2026, 12, 7, 12, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    migrate(engine)
    try:
        yield engine
    finally:
        engine.dispose()


def _hook(**fields: Any) -> WebhookRetrainConfig:
    return WebhookRetrainConfig(type="webhook", url="http://127.0.0.1:9/hook", **fields)


def _start(engine: Engine, model: str, now: datetime) -> int:
    with Session(engine) as session:
        payload = {"model": model, "version": "*", "detector": "input_psi"}
        run_id = service.start_run(session, payload=payload, source="webhook", now=now).id
    assert run_id is not None
    return run_id


def _report(engine: Engine, run_id: int, now: datetime, **body: Any) -> None:
    with Session(engine) as session:
        service.report_step(
            session=session, run_id=run_id, report=StepReport.model_validate(body), now=now
        )


def _run(engine: Engine, run_id: int) -> PipelineRun:
    with Session(engine) as session:
        run = session.get(PipelineRun, run_id)
        assert run is not None
        return run


def test_a_silent_webhook_run_fails_with_the_reason_and_an_alert(engine: Engine) -> None:
    clock = Clock()
    hook = _hook(report_timeout_s=600)
    watch = WebhookRunWatch(
        engine=engine, timeout_for=hook.report_timeout_for, shortest_s=600, clock=clock
    )
    run_id = _start(engine, "digits", clock.now)
    clock.advance(300)
    _report(engine, run_id, clock.now, name="train", state="running", detail="epoch 1")
    clock.advance(599)  # 899 s after the trigger, 599 s after the last report
    assert watch.tick() == [] and _run(engine, run_id).state == "running"
    clock.advance(2)
    assert watch.tick() == [run_id]
    run = _run(engine, run_id)
    assert run.state == "failed" and run.active_model is None
    assert run.error == (
        "webhook: no report from the pipeline engine for 601 s (report_timeout_s 600): "
        "the run is lost"
    )
    with Session(engine) as session:
        (step,) = records.steps_of(session, run_id)
        assert (step.name, step.state) == ("train", "failed") and "601 s" in step.detail
        alert = session.get(DriftAlert, run.alert_id)
        assert alert is not None and alert.detector == ALERT_DETECTOR
        assert "failed at train" in alert.detail and "no report" in alert.detail
    assert watch.tick() == [], "a failed run is failed once"
    with pytest.raises(Conflict, match="failed"):
        _report(engine, run_id, clock.now, name="train", state="succeeded", finish_run=True)
    # The model is free again: the next trigger records a new run.
    assert _start(engine, "digits", clock.now) != run_id


def test_per_model_timeouts_and_other_runs_are_left_alone(engine: Engine) -> None:
    clock = Clock()
    hook = _hook(report_timeout_s=3600, report_timeouts_s={"fast": 60})
    watch = WebhookRunWatch(
        engine=engine, timeout_for=hook.report_timeout_for, shortest_s=60, clock=clock
    )
    assert watch.interval_s == 6.0
    fast, slow = _start(engine, "fast", clock.now), _start(engine, "slow", clock.now)
    with Session(engine) as session:  # a server-driven run is the driver's, never the watch's
        payload = {"model": "local", "version": "*"}
        local = service.start_run(session, payload=payload, source="pipeline", now=clock.now).id
    clock.advance(61)
    assert watch.tick() == [fast]
    clock.advance(3600)
    assert watch.tick() == [slow]
    assert local is not None and _run(engine, local).state == "queued"
    assert "report_timeout_s 3600" in _run(engine, slow).error


@pytest.mark.parametrize(
    "fields",
    [
        {"report_timeout_s": 0},
        {"report_timeout_s": -5},
        {"report_timeout_s": 31 * 86_400},
        {"report_timeouts_s": {"digits": 0}},
        {"report_timeouts_s": {"../x": 60}},
        {"report_timeouts_s": {"digits": "soon"}},
    ],
)
def test_bad_timeouts_are_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        _hook(**fields)


def test_the_server_fails_a_silent_webhook_run(tmp_path: Path, database_url: str) -> None:
    retrain = {"type": "webhook", "url": "http://127.0.0.1:9/hook", "report_timeout_s": 1}
    settings = make_settings(tmp_path, database_url, retrain=retrain)
    with running_app(settings) as (client, runtime):
        assert runtime.engine is not None
        run_id = _start(runtime.engine, "digits", utcnow())
        deadline = time.monotonic() + 30
        while _run(runtime.engine, run_id).state == "running":
            assert time.monotonic() < deadline, "the server's watch never failed the run"
            time.sleep(0.2)
        shown = client.get(f"/api/v1/pipelines/runs/{run_id}", headers=operator()).json()
        assert shown["state"] == "failed" and "no report from the pipeline engine" in shown["error"]
        assert shown["alert_id"] is not None
