"""The pipeline driver on SQLite and PostgreSQL: steps recorded one at a time, a restart resumes
the run at its step, one unfinished run per model, cancel, a failing step fails the run and
opens an alert, a replica that lost the lease records nothing; and the real rollout and watch
steps driving a rollout to promotion."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from fleet_server.db import make_engine, migrate
from fleet_server.models import Device, DriftAlert, PipelineRun, PipelineStep
from fleet_server.models.types import utcnow
from fleet_server.services.drift.retrain import RetrainError, backend_for
from fleet_server.services.errors import Conflict
from fleet_server.services.pipelines import service
from fleet_server.services.pipelines.config import PipelineRetrainConfig
from fleet_server.services.pipelines.driver import PipelineDriver
from fleet_server.services.pipelines.records import ALERT_DETECTOR
from fleet_server.services.pipelines.steps import STEPS, Step, StepContext, StepError, StepResult
from fleet_server.storage.local import LocalArtifactStore
from tests.fleet_server.rollout_harness import NEW, OLD, Harness

pytestmark = pytest.mark.integration


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    migrate(engine)
    try:
        yield engine
    finally:
        engine.dispose()


def _config(**model: Any) -> PipelineRetrainConfig:
    pipeline = {"train_argv": ["train"], "rollout": {"selector": {"tags": ["line-1"]}}, **model}
    return PipelineRetrainConfig.model_validate(
        {"type": "pipeline", "models": {"digits": pipeline}}
    )


class Done:
    def __init__(self, name: str) -> None:
        self.name, self.calls = name, 0

    def run(self, ctx: StepContext) -> StepResult:
        self.calls += 1
        return StepResult(
            detail=f"{self.name} ok", numbers={"calls": self.calls}, context={self.name: self.calls}
        )


class DiesOnce(Done):
    """The first call kills the process mid-step (as a SIGKILL would: nothing is recorded)."""

    def run(self, ctx: StepContext) -> StepResult:
        self.calls += 1
        if self.calls == 1:
            raise SystemExit("killed")
        return StepResult(detail="second attempt", context={"seen": ctx.run.context})


class Waits(Done):
    def run(self, ctx: StepContext) -> StepResult:
        self.calls += 1
        return StepResult(detail="waiting", done=False, numbers={"polls": self.calls})


class Fails(Done):
    def run(self, ctx: StepContext) -> StepResult:
        raise StepError(
            "exit 3: out of memory",
            log="epoch 1\nTraceback ...\nMemoryError\n",
            numbers={"exit_code": 3},
        )


class Buggy(Done):
    def run(self, ctx: StepContext) -> StepResult:
        raise KeyError("context_key")


def _driver(engine: Engine, tmp_path: Path, steps: dict[str, Step], **kw: Any) -> PipelineDriver:
    return PipelineDriver(
        engine=engine,
        config=kw.pop("config", _config()),
        store=LocalArtifactStore(root=tmp_path / "store"),
        rollouts=kw.pop("rollouts", None),
        trusted_keys=[],
        require_signed=False,
        work_dir=tmp_path / "work",
        steps=steps,
        **kw,
    )


def _start(engine: Engine, model: str = "digits") -> int:
    with Session(engine) as session:
        payload = {"model": model, "version": "*", "detector": "input_psi", "alert_id": 7}
        run = service.start_run(session, payload=payload, source="pipeline", now=utcnow())
        assert run.id is not None
        return run.id


def _run(engine: Engine, run_id: int) -> tuple[PipelineRun, list[PipelineStep]]:
    with Session(engine) as session:
        run = session.get(PipelineRun, run_id)
        assert run is not None
        steps = session.exec(
            select(PipelineStep).where(PipelineStep.run_id == run_id).order_by(col(PipelineStep.id))
        ).all()
        return run, list(steps)


def test_steps_run_in_order_and_the_run_succeeds(engine: Engine, tmp_path: Path) -> None:
    run_id = _start(engine)
    driver = _driver(engine, tmp_path, {"snapshot": Done("snapshot"), "train": Done("train")})
    driver.tick()
    run, steps = _run(engine, run_id)
    assert run.state == "succeeded" and run.active_model is None and run.finished_at is not None
    assert [(s.name, s.state, s.attempt) for s in steps] == [
        ("snapshot", "succeeded", 1),
        ("train", "succeeded", 1),
    ]
    assert run.context == {"snapshot": 1, "train": 1} and run.trigger["alert_id"] == 7


def test_a_restart_resumes_the_run_at_its_step(engine: Engine, tmp_path: Path) -> None:
    run_id = _start(engine)
    first, dies = Done("snapshot"), DiesOnce("train")
    with pytest.raises(SystemExit):
        _driver(engine, tmp_path, {"snapshot": first, "train": dies}).tick()
    run, steps = _run(engine, run_id)
    assert run.state == "running" and run.step == "train"
    assert [(s.name, s.state) for s in steps] == [("snapshot", "succeeded"), ("train", "running")]
    # A new process (the restarted server): the step that was running runs again.
    _driver(engine, tmp_path, {"snapshot": first, "train": dies}).tick()
    run, steps = _run(engine, run_id)
    assert run.state == "succeeded", run.error
    assert first.calls == 1, "a finished step is not run again"
    assert [(s.name, s.state, s.attempt) for s in steps] == [
        ("snapshot", "succeeded", 1),
        ("train", "failed", 1),
        ("train", "succeeded", 2),
    ]
    assert "interrupted" in steps[1].detail
    assert run.context["seen"] == {"snapshot": 1}, "the resumed step sees what earlier ones left"


def test_one_unfinished_run_per_model(engine: Engine, tmp_path: Path) -> None:
    first = _start(engine)
    with pytest.raises(Conflict, match=f"#{first} of digits is still queued"):
        _start(engine)
    trigger = backend_for(_config(), engine=engine)
    with pytest.raises(RetrainError, match="still queued"):
        trigger.trigger({"model": "digits", "version": "*"})
    with pytest.raises(RetrainError, match="no pipeline is configured for cats"):
        trigger.trigger({"model": "cats", "version": "*"})
    _driver(engine, tmp_path, {"snapshot": Done("snapshot")}).tick()
    assert "queued" in trigger.trigger({"model": "digits", "version": "*"}), "free again"


def test_cancel_stops_a_waiting_run(engine: Engine, tmp_path: Path) -> None:
    run_id = _start(engine)
    waits = Waits("watch")
    driver = _driver(engine, tmp_path, {"watch": waits})
    driver.tick()
    driver.tick()
    run, steps = _run(engine, run_id)
    assert run.state == "running" and steps[0].numbers == {"polls": 2} and len(steps) == 1
    with Session(engine) as session:
        view = service.cancel_run(
            session=session,
            rollouts=None,
            run_id=run_id,
            actor="op",
            reason="wrong data",
            now=utcnow(),
        )
    assert view.state == "cancelled" and view.error == "cancelled by op: wrong data"
    assert [s.state for s in view.steps] == ["cancelled"]
    driver.tick()
    assert waits.calls == 2, "a cancelled run is not advanced"
    with Session(engine) as session, pytest.raises(Conflict, match="cancelled"):
        service.cancel_run(
            session=session, rollouts=None, run_id=run_id, actor="op", reason="", now=utcnow()
        )
    _start(engine)  # the model is free for the next run


def test_a_failing_step_fails_the_run_keeps_its_log_and_opens_an_alert(
    engine: Engine, tmp_path: Path
) -> None:
    run_id = _start(engine)
    after = Done("convert")
    _driver(engine, tmp_path, {"train": Fails("train"), "convert": after}).tick()
    run, steps = _run(engine, run_id)
    assert run.state == "failed" and run.error == "train: exit 3: out of memory"
    assert steps[0].state == "failed" and "MemoryError" in steps[0].log
    assert steps[0].numbers == {"exit_code": 3} and after.calls == 0
    with Session(engine) as session:
        alert = session.get(DriftAlert, run.alert_id)
        assert alert is not None and alert.detector == ALERT_DETECTOR
        assert alert.closed_at is None and f"run #{run_id} failed at train" in alert.detail


def test_a_step_bug_fails_the_run_with_its_type(engine: Engine, tmp_path: Path) -> None:
    run_id = _start(engine)
    _driver(engine, tmp_path, {"snapshot": Buggy("snapshot")}).tick()
    run, _ = _run(engine, run_id)
    assert run.state == "failed" and run.error.startswith("snapshot: KeyError")


def test_a_driver_that_lost_the_lease_records_nothing(engine: Engine, tmp_path: Path) -> None:
    run_id = _start(engine)
    step = Done("snapshot")
    _driver(engine, tmp_path, {"snapshot": step}, holds_lease=lambda epoch: False).tick(epoch=1)
    run, steps = _run(engine, run_id)
    assert step.calls == 1 and run.state == "running" and steps[0].state == "running"
    _driver(engine, tmp_path, {"snapshot": step}, holds_lease=lambda epoch: epoch == 2).tick(
        epoch=2
    )
    run, steps = _run(engine, run_id)
    assert run.state == "succeeded" and [s.attempt for s in steps] == [1, 2]


def test_an_unconfigured_model_fails_its_run(engine: Engine, tmp_path: Path) -> None:
    run_id = _start(engine, "cats")
    _driver(engine, tmp_path, {"snapshot": Done("snapshot")}).tick()
    run, steps = _run(engine, run_id)
    assert run.state == "failed" and "no pipeline is configured for cats" in run.error
    assert steps == []


# -- the real rollout and watch steps --------------------------------------------------------------
def _rollout_run(h: Harness, tmp_path: Path, **template: Any) -> tuple[int, PipelineDriver]:
    run_id = _start(h.db)
    with Session(h.db) as session:
        run = session.get(PipelineRun, run_id)
        assert run is not None and run.parent_version == NEW, "the newest version is the parent"
        run.parent_version, run.candidate_version = OLD, NEW
        session.add(run)
        session.commit()
    config = _config(rollout={"selector": {"tags": [h.tag]}, **template}, watch_timeout_s=3600)
    steps = {"rollout": STEPS["rollout"], "watch": STEPS["watch"]}
    driver = _driver(h.db, tmp_path, steps, config=config, rollouts=h.engine, clock=h.clock)
    return run_id, driver


def test_rollout_and_watch_promote_the_candidate(engine: Engine, tmp_path: Path) -> None:
    h = Harness(engine)
    ids = h.add_devices(4)
    strategy = {"canary_percent": 25, "batches": [100], "soak_s": 0}
    run_id, driver = _rollout_run(h, tmp_path, strategy=strategy)
    driver.tick()
    run, steps = _run(engine, run_id)
    assert run.rollout_id is not None and [s.name for s in steps] == ["rollout", "watch"]
    assert h.rollout(run.rollout_id).created_by == "pipeline"
    assert steps[1].state == "running" and steps[1].numbers["rollout_state"] == "running"
    for _ in range(10):
        h.commit(h.members(run.rollout_id, "assigned"))
        h.clock.advance(5)
        h.telemetry(h.members(run.rollout_id, "committed"), version=NEW)
        h.telemetry(h.members(run.rollout_id, "pending"), version=OLD)
        h.engine.tick()
        driver.tick()
        if _run(engine, run_id)[0].state != "running":
            break
    run, steps = _run(engine, run_id)
    rollout_id = run.rollout_id
    assert rollout_id is not None
    assert run.state == "succeeded", (steps[-1].numbers, h.decisions(rollout_id))
    assert set(h.members(rollout_id, "committed")) == set(ids)
    assert "promoted fleet-wide" in steps[-1].detail


def test_the_templates_shadow_stage_starts_the_rollout_in_shadow(
    engine: Engine, tmp_path: Path
) -> None:
    h = Harness(engine)
    ids = h.add_devices(2)
    with Session(engine) as session:
        for device_id in ids:
            device = session.get(Device, device_id)
            assert device is not None
            device.desired_name, device.desired_version = h.model, OLD
            session.add(device)
        session.commit()
    shadow = {"shadow_s": 30, "min_samples": 10}
    run_id, driver = _rollout_run(h, tmp_path, shadow=shadow)
    driver.tick()
    run, steps = _run(engine, run_id)
    assert run.rollout_id is not None and steps[0].numbers["shadow"] == shadow
    rollout = h.rollout(run.rollout_id)
    assert rollout.state == "shadowing" and rollout.strategy["shadow"]["shadow_s"] == 30
    assert h.publisher.devices(NEW) == set()
    assert {s.device_id for s in h.publisher.sent if s.shadow is not None} == set(ids)


@pytest.mark.parametrize(
    "rollout",
    [
        {"shadow": {"min_pairs": 100}},
        {"shadow": {"shadow_s": 0}},
        {"shadow": {"shadow_s": 5}, "strategy": {"shadow": {"shadow_s": 5}}},
    ],
)
def test_a_bad_shadow_template_is_refused_at_load(rollout: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="shadow"):
        _config(rollout={"selector": {"tags": ["a"]}, **rollout})


def test_a_rollout_stopped_by_its_gates_fails_the_run(engine: Engine, tmp_path: Path) -> None:
    h = Harness(engine)
    h.add_devices(4)
    strategy = {"canary_percent": 25, "batches": [100], "soak_s": 0}
    run_id, driver = _rollout_run(h, tmp_path, strategy=strategy)
    driver.tick()
    rollout_id = _run(engine, run_id)[0].rollout_id
    assert rollout_id is not None
    h.fail(h.members(rollout_id, "assigned"))
    for _ in range(10):
        h.clock.advance(5)
        h.engine.tick()
        driver.tick()
        if _run(engine, run_id)[0].state != "running":
            break
    run, steps = _run(engine, run_id)
    assert run.state == "failed" and steps[-1].name == "watch"
    assert f"the fleet stays on {OLD}" in run.error and run.alert_id is not None
    assert h.rollout(rollout_id).state in ("aborted", "aborting", "failed")


def test_the_snapshot_waits_for_labels_then_gives_up(engine: Engine, tmp_path: Path) -> None:
    h = Harness(engine)  # registers digits 1.0.0 and 2.0.0; no samples are labelled
    run_id = _start(engine)
    offset = [0.0]

    def clock() -> datetime:
        return utcnow() + timedelta(seconds=offset[0])

    config = _config(label_wait_s=600, min_samples=5)
    driver = _driver(engine, tmp_path, {"snapshot": STEPS["snapshot"]}, config=config, clock=clock)
    driver.tick()
    run, steps = _run(engine, run_id)
    assert run.state == "running" and steps[0].state == "running"
    assert steps[0].detail.startswith("waiting for labels: 0 labelled samples of digits")
    offset[0] = 601
    driver.tick()
    run, steps = _run(engine, run_id)
    assert run.state == "failed" and "needs 5 to train (waited 60" in run.error
    assert h.model == "digits"


class Gated(Done):
    """Blocks until released: a training job longer than a leader job may take."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.release = threading.Event()

    def run(self, ctx: StepContext) -> StepResult:
        self.calls += 1
        assert self.release.wait(60), "never released"
        return StepResult(detail="trained")


def _tick_until(driver: PipelineDriver, engine: Engine, run_id: int, epoch: int) -> PipelineRun:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        driver.tick(epoch=epoch)
        run, _ = _run(engine, run_id)
        if run.state not in ("queued", "running"):
            return run
        time.sleep(0.05)
    raise AssertionError("the run did not finish")


def test_background_steps_do_not_block_the_leader_job(engine: Engine, tmp_path: Path) -> None:
    run_id = _start(engine)
    gated = Gated("train")
    epoch = [1]
    driver = _driver(
        engine,
        tmp_path,
        {"snapshot": Done("snapshot"), "train": gated},
        background=True,
        holds_lease=lambda e: e == epoch[0],
    )
    try:
        for _ in range(5):
            driver.tick(epoch=1)  # returns at once while the step runs in its thread
            time.sleep(0.05)
        run, steps = _run(engine, run_id)
        assert run.step == "train" and steps[-1].state == "running" and gated.calls == 1
        gated.release.set()
        assert _tick_until(driver, engine, run_id, 1).state == "succeeded"
        # Another replica took the lease (epoch 2) while a step ran: its result is dropped.
        second, slow = _start(engine), Gated("snapshot")
        other = _driver(
            engine,
            tmp_path,
            {"snapshot": slow},
            background=True,
            holds_lease=lambda e: e == epoch[0],
        )
        other.tick(epoch=1)
        epoch[0] = 2
        slow.release.set()
        assert _tick_until(other, engine, second, 2).state == "succeeded"
        assert [s.attempt for s in _run(engine, second)[1]] == [1, 2], "the step ran again"
        other.close()
    finally:
        gated.release.set()
        driver.close()
