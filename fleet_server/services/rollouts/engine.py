"""The rollout state machine. ``RolloutEngine.tick()`` moves every active rollout one step.

One step of one rollout is one database transaction that first *claims* the rollout
(``UPDATE ... SET revision = revision + 1 WHERE revision = <read>``): a second driver, a restarted
server or a concurrent operator action that read the same revision finds nothing to update and
backs off, so no stage is ever applied twice. Desired states are published only after the
commit; one lost in a crash is republished when the bus (re)connects (it republishes every
device's desired state) or by :func:`.members.resync_desired`.

States::

    running ──gate fails, on_failure=pause──▶ paused ──resume──▶ running
       │  └──stage passes, require_approval──▶ awaiting_approval ──approve──▶ running (next stage)
       │  └──last stage passes──▶ completed
       └──gate fails, on_failure=abort / operator abort──▶ aborting ──all reverted──▶ aborted
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, update
from sqlmodel import Session, col, select

from edgefleet.contract import DesiredState
from fleet_server.models import Device
from fleet_server.models.rollouts import (
    Rollout,
    RolloutDecision,
    RolloutDevice,
)
from fleet_server.models.types import utcnow
from fleet_server.services.assignments import (
    DesiredPublisher,
    desired_states_for,
    publish_all,
)
from fleet_server.services.devices import is_pinned
from fleet_server.services.errors import Conflict, NotFound
from fleet_server.services.rollouts.evaluation import evaluation_due, evaluation_record, fmt_result
from fleet_server.services.rollouts.evidence import counts_only, gather
from fleet_server.services.rollouts.gates import evaluate_all
from fleet_server.services.rollouts.members import (
    Outbox,
    as_ref,
    assign_pending,
    busy_devices,
    devices_by_id,
    new_member,
    previous_of,
    resync_desired,
    runs,
    sync_outcomes,
    target_of,
    write_desired,
)
from fleet_server.services.rollouts.spec import GatePolicy, Selector, Strategy

log = logging.getLogger(__name__)


class ClaimLost(Conflict):
    """Another step or action changed the rollout between our read and our write."""


class RolloutEngine:
    def __init__(
        self,
        *,
        engine: Engine,
        publisher: DesiredPublisher | None,
        public_url: str,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.engine = engine
        self.publisher = publisher
        self.public_url = public_url
        self.clock = clock

    # -- driving -------------------------------------------------------------------------------
    def tick(self) -> int:
        """Step every rollout the engine drives; returns how many were stepped."""
        with Session(self.engine) as session:
            ids = session.exec(
                select(Rollout.id).where(col(Rollout.state).in_(("running", "aborting")))
            ).all()
        for rollout_id in ids:
            assert rollout_id is not None
            try:
                self.step(rollout_id)
            except ClaimLost:  # an operator action or another driver stepped it just now
                log.debug(
                    "rollout step skipped: claimed elsewhere", extra={"rollout_id": rollout_id}
                )
            except Exception:  # noqa: BLE001 - one broken rollout must not stop the others
                log.exception("rollout step failed", extra={"rollout_id": rollout_id})
        return len(ids)

    def step(self, rollout_id: int) -> None:
        self.act(rollout_id, self._advance, only_states=("running", "aborting"))

    def step_soon(self, rollout_id: int) -> None:
        """Step now unless a concurrent step just did (then the next tick carries on)."""
        try:
            self.step(rollout_id)
        except ClaimLost:
            log.debug("immediate step skipped: claimed elsewhere", extra={"rollout_id": rollout_id})

    def act_retrying(
        self,
        rollout_id: int,
        action: Callable[[Session, Rollout, datetime, Outbox], None],
        attempts: int = 5,
    ) -> Rollout:
        """``act`` for operator actions: a lost claim is retried against the fresh state (the
        action then re-checks whether it still applies)."""
        for attempt in range(attempts):
            try:
                return self.act(rollout_id, action)
            except ClaimLost:
                if attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")

    def act(
        self,
        rollout_id: int,
        action: Callable[[Session, Rollout, datetime, Outbox], None],
        *,
        only_states: Sequence[str] | None = None,
    ) -> Rollout:
        """Run ``action`` on the rollout and commit it only if nobody else changed the rollout
        meanwhile (compare-and-set on ``revision``); then publish the desired states it set.

        The action only reads and changes objects in memory (no autoflush); every write happens
        at the end, in one short transaction that starts with the claim."""
        outbox = Outbox()
        with Session(self.engine, expire_on_commit=False) as session:
            with session.no_autoflush:
                rollout = session.get(Rollout, rollout_id)
                if rollout is None:
                    raise NotFound(f"rollout {rollout_id} not found")
                if only_states is not None and rollout.state not in only_states:
                    return rollout
                revision = rollout.revision
                now = self.clock()
                action(session, rollout, now, outbox)
                rollout.updated_at = now
            claimed = session.connection().execute(
                update(Rollout)
                .where(col(Rollout.id) == rollout_id, col(Rollout.revision) == revision)
                .values(revision=revision + 1)
            )
            if claimed.rowcount != 1:
                session.rollback()
                raise ClaimLost(f"rollout {rollout_id} changed concurrently; try again")
            rollout.revision = revision + 1
            session.add(rollout)
            for device_ids, model_ref in outbox.changes:
                write_desired(session, device_ids, model_ref, now)
            session.commit()
        if self.publisher is not None and outbox.device_ids():
            publish_all(publisher=self.publisher, states=self._desired_states(outbox.device_ids()))
        return rollout

    def _desired_states(self, device_ids: set[str]) -> list[DesiredState]:
        """What the database says each device should run now (the committed truth)."""
        with Session(self.engine) as session:
            devices = devices_by_id(session, sorted(device_ids)).values()
            return desired_states_for(session=session, devices=devices, public_url=self.public_url)

    # -- one step --------------------------------------------------------------------------------
    def _advance(self, session: Session, rollout: Rollout, now: datetime, outbox: Outbox) -> None:
        strategy = Strategy.model_validate(rollout.strategy)
        members = list(
            session.exec(select(RolloutDevice).where(RolloutDevice.rollout_id == rollout.id))
        )
        devices = devices_by_id(session, [m.device_id for m in members])
        if rollout.state == "aborting":
            self._settle_abort(session, rollout, members, devices, now, strategy)
            return
        sync_outcomes(session, rollout, members, devices, now, strategy)
        for member in members:  # pinned since the rollout started: leave it alone
            device = devices.get(member.device_id)
            if member.status == "pending" and device is not None and is_pinned(device):
                member.status = "skipped"
                member.detail = f"pinned to {device.pinned_name}@{device.pinned_version}"
                session.add(member)
        if evaluation_due(rollout, now, False, strategy):  # scanning every device costs
            self._join_late(session, rollout, members, now)
        resync_desired(session, rollout, members, devices, now, outbox)

        eligible = sorted((m for m in members if m.status != "skipped"), key=lambda m: m.position)
        if not eligible:
            self._finish(session, rollout, now, "completed", "no device needed the update")
            return
        covered = eligible[: strategy.target_count(rollout.stage, len(eligible))]
        assign_pending(session, rollout, covered, now, strategy, outbox)

        finished = all(m.status in ("committed", "failed") for m in covered)
        just_finished = finished and rollout.stage_finished_at is None
        if not finished:
            rollout.stage_finished_at = None
        elif rollout.stage_finished_at is None:
            rollout.stage_finished_at = now
        soaked = (
            rollout.stage_finished_at is not None
            and (now - rollout.stage_finished_at).total_seconds() >= strategy.soak_s
        )

        policy = GatePolicy.model_validate(rollout.gates)
        stage_ids = {m.device_id for m in covered}
        offline = {d.device_id for d in devices.values() if not d.online}
        full = just_finished or evaluation_due(rollout, now, soaked, strategy)
        if full:  # read the telemetry: every gate
            evidence = gather(
                session=session,
                members=members,
                target=(rollout.model_name, rollout.model_version),
                stage_ids=stage_ids,
                offline=offline,
                now=now,
                window_s=policy.baseline_window_s,
                min_control_intervals=policy.latency_p95_ratio.min_samples,
                settle_intervals=policy.settle_intervals,
            )
            results = evaluate_all(policy, evidence, soaked=soaked)
            evaluation = evaluation_record(rollout, strategy, now, results, evidence.summary())
            rollout.last_evaluation = evaluation
        else:  # between evaluations, only what the device statuses alone can fail
            evidence = counts_only(members=members, stage_ids=stage_ids, offline=offline)
            results = evaluate_all(policy, evidence, soaked=soaked, only={"success_rate"})
            evaluation = evaluation_record(rollout, strategy, now, results, evidence.summary())

        failed = [r for r in results if r.status == "fail"]
        if failed:
            reason = "; ".join(f"{r.name} {fmt_result(r)}" for r in failed)
            self.decide(session, rollout, now, "gate_failed", reason=reason, evidence=evaluation)
            if strategy.on_failure == "abort":
                self.abort(session, rollout, now, outbox, actor="engine", reason=reason)
            else:
                rollout.state, rollout.reason = "paused", f"gate failed: {reason}"
                self.decide(session, rollout, now, "pause", reason=rollout.reason)
            return

        if not full:
            return
        waiting = [r for r in results if r.status == "wait"]
        if soaked and not waiting:
            stage = rollout.stage
            self._promote(session, rollout, now, strategy, evaluation, total=len(eligible))
            if rollout.state == "running" and rollout.stage != stage:  # the next stage goes out now
                covered = eligible[: strategy.target_count(rollout.stage, len(eligible))]
                assign_pending(session, rollout, covered, now, strategy, outbox)
        elif (now - rollout.stage_started_at).total_seconds() > strategy.stage_timeout_s:
            names = ", ".join(r.name for r in waiting) or "updates"
            rollout.state = "paused"
            rollout.reason = f"stage timed out waiting for evidence: {names}"
            self.decide(session, rollout, now, "pause", reason=rollout.reason, evidence=evaluation)

    def _promote(
        self,
        session: Session,
        rollout: Rollout,
        now: datetime,
        strategy: Strategy,
        evaluation: dict[str, Any],
        *,
        total: int,
    ) -> None:
        name = strategy.stage_names()[rollout.stage]
        covered = strategy.target_count(rollout.stage, total)
        # Stages that would add no device (small fleets, late percentages) are passed through.
        while (
            rollout.stage + 1 < strategy.stage_count()
            and strategy.target_count(rollout.stage + 1, total) <= covered
        ):
            rollout.stage += 1
        if rollout.stage + 1 >= strategy.stage_count():
            self.decide(session, rollout, now, "stage_passed", reason=name, evidence=evaluation)
            self._finish(session, rollout, now, "completed", "every stage passed its gates")
        elif strategy.require_approval:
            rollout.state = "awaiting_approval"
            rollout.reason = f"{name} passed; waiting for approval"
            self.decide(session, rollout, now, "stage_passed", reason=name, evidence=evaluation)
        else:
            self.decide(session, rollout, now, "stage_passed", reason=name, evidence=evaluation)
            self.next_stage(session, rollout, now, strategy, actor="engine")

    def next_stage(
        self, session: Session, rollout: Rollout, now: datetime, strategy: Strategy, *, actor: str
    ) -> None:
        rollout.stage += 1
        rollout.state = "running"
        rollout.reason = None
        rollout.stage_started_at = now
        rollout.stage_finished_at = None
        name = strategy.stage_names()[rollout.stage]
        self.decide(session, rollout, now, "stage_started", reason=name, actor=actor)

    # -- devices ---------------------------------------------------------------------------------

    def _join_late(
        self, session: Session, rollout: Rollout, members: list[RolloutDevice], now: datetime
    ) -> None:
        """Devices that match the selector but are not in the rollout yet (enrolled since)."""
        selector = Selector.model_validate(rollout.selector)
        known = {m.device_id for m in members}
        busy = busy_devices(session, exclude=rollout.id)
        joined = []
        position = max((m.position for m in members), default=-1)
        for device in session.exec(select(Device).order_by(col(Device.created_at))):
            if device.device_id in known or device.device_id in busy:
                continue
            if not selector.matches(
                device_id=device.device_id, tags=device.tags, device_class=device.device_class
            ):
                continue
            position += 1
            member = new_member(
                rollout, device, position, joined_late=True, model=target_of(rollout)
            )
            session.add(member)
            members.append(member)
            joined.append(device.device_id)
        if joined:
            self.decide(
                session,
                rollout,
                now,
                "devices_joined",
                reason=f"{len(joined)} device(s) matched the selector after the start",
                evidence={"devices": joined[:100], "count": len(joined)},
            )

    # -- abort -------------------------------------------------------------------------------------
    def abort(
        self,
        session: Session,
        rollout: Rollout,
        now: datetime,
        outbox: Outbox,
        *,
        actor: str,
        reason: str,
    ) -> None:
        """Every touched device goes back to what it ran before; untouched ones are left alone."""
        members = list(
            session.exec(select(RolloutDevice).where(RolloutDevice.rollout_id == rollout.id))
        )
        back: dict[tuple[str, str] | None, list[str]] = {}
        for member in members:
            if member.status in ("assigned", "committed", "failed"):
                previous = previous_of(member)
                back.setdefault(previous, []).append(member.device_id)
                member.status, member.detail = "reverting", f"rolling back: {reason}"[:500]
            elif member.status == "pending":
                member.status, member.detail = "skipped", "rollout aborted before its turn"
            session.add(member)
        for previous, ids in back.items():
            outbox.set_desired(ids, previous)
        rollout.state, rollout.reason = "aborting", reason
        self.decide(
            session,
            rollout,
            now,
            "abort",
            reason=reason,
            actor=actor,
            evidence={"rolled_back": sum(len(ids) for ids in back.values())},
        )
        self._settle_abort(session, rollout, members, devices_by_id(session, []), now, None)

    def _settle_abort(
        self,
        session: Session,
        rollout: Rollout,
        members: list[RolloutDevice],
        devices: dict[str, Device],
        now: datetime,
        strategy: Strategy | None,
    ) -> None:
        reverting = [m for m in members if m.status == "reverting"]
        if reverting and not devices:
            devices = devices_by_id(session, [m.device_id for m in reverting])
        for member in reverting:
            device = devices.get(member.device_id)
            previous = previous_of(member)
            if device is not None and (
                (previous is None and device.running_name is None)
                or (previous is not None and runs(device, as_ref(previous)))
            ):
                member.status, member.finished_at = "reverted", now
                member.detail = "running the previous version again"
                session.add(member)
        left = [m for m in reverting if m.status == "reverting"]
        overdue = False
        if left and strategy is not None:
            started = session.exec(
                select(RolloutDecision.ts)
                .where(RolloutDecision.rollout_id == rollout.id, RolloutDecision.action == "abort")
                .order_by(col(RolloutDecision.id).desc())
            ).first()
            overdue = started is not None and (now - started).total_seconds() > (
                strategy.update_timeout_s
            )
        if not left:
            self._finish(session, rollout, now, "aborted", rollout.reason or "aborted")
        elif overdue:
            self._finish(
                session,
                rollout,
                now,
                "aborted",
                f"{rollout.reason}; {len(left)} device(s) did not confirm the rollback",
            )

    # -- bookkeeping ------------------------------------------------------------------------------
    def _finish(
        self, session: Session, rollout: Rollout, now: datetime, state: str, reason: str
    ) -> None:
        rollout.state, rollout.reason, rollout.finished_at = state, reason, now
        self.decide(session, rollout, now, state, reason=reason)

    @staticmethod
    def decide(
        session: Session,
        rollout: Rollout,
        now: datetime,
        action: str,
        *,
        reason: str = "",
        actor: str = "engine",
        evidence: dict[str, Any] | None = None,
    ) -> None:
        assert rollout.id is not None
        session.add(
            RolloutDecision(
                rollout_id=rollout.id,
                ts=now,
                stage=rollout.stage,
                action=action,
                actor=actor,
                reason=reason[:2000],
                evidence=evidence or {},
            )
        )
        log.info(
            "rollout decision",
            extra={
                "rollout_id": rollout.id,
                "action": action,
                "stage": rollout.stage,
                "why": reason,
            },
        )
