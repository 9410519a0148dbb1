"""The rollout state machine. ``RolloutEngine.tick()`` moves every active rollout one step.

One step of one rollout is one database transaction that first *claims* the rollout
(``UPDATE ... SET revision = revision + 1 WHERE revision = <read>``): a second driver, a restarted
server or a concurrent operator action that read the same revision finds nothing to update and
backs off, so no stage is ever applied twice. Desired states are published only after the
commit; one lost in a crash is republished when the bus (re)connects (it republishes every
device's desired state) or by :func:`.members.resync_desired`.

Every state change and every decision goes through :func:`.state.transition` (the table of
allowed steps is there): a gate that fails pauses (``on_failure=pause``) or aborts; a stage that
passes starts the next one, waits for approval (``require_approval``) or completes the rollout;
an abort ends ``aborted`` once every touched device runs its previous version again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, update
from sqlmodel import Session, col, select

from fleet_server.models.rollouts import Rollout, RolloutDecision, RolloutDevice
from fleet_server.models.types import utcnow
from fleet_server.services.desired import (
    DesiredPublisher,
    desired_states_of,
    publish_all,
    stamp_resent,
    write_desired,
)
from fleet_server.services.devices import DeviceFacts, is_pinned
from fleet_server.services.errors import Conflict, NotFound
from fleet_server.services.rollouts.evaluation import (
    evaluation_due,
    evaluation_record,
    fmt_result,
    judged_gates,
    shadow_evaluation_due,
)
from fleet_server.services.rollouts.evidence import counts_only, gather, offline_devices
from fleet_server.services.rollouts.gates import STATUS_GATES, evaluate_all
from fleet_server.services.rollouts.members import (
    Outbox,
    as_ref,
    assign_pending,
    devices_by_id,
    join_late,
    previous_of,
    resync_desired,
    runs,
    sync_outcomes,
)
from fleet_server.services.rollouts.shadow_stage import advance_shadow, take_shadows_off
from fleet_server.services.rollouts.spec import GatePolicy, Strategy
from fleet_server.services.rollouts.state import (
    DRIVEN_STATES,
    RolloutAction,
    RolloutState,
    next_state,
    transition,
)

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
                select(Rollout.id).where(col(Rollout.state).in_(DRIVEN_STATES))
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
        self.act(rollout_id, self._advance, only_states=DRIVEN_STATES)

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
        only_states: Sequence[RolloutState] | None = None,
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
                write_desired(session=session, device_ids=device_ids, model=model_ref, at=now)
            if outbox.republish:
                stamp_resent(session=session, device_ids=sorted(outbox.republish), at=now)
            session.commit()
        if self.publisher is not None and outbox.device_ids():
            with Session(self.engine) as session:  # the committed truth, read back
                states = desired_states_of(
                    session=session, device_ids=outbox.device_ids(), public_url=self.public_url
                )
            publish_all(publisher=self.publisher, states=states)
        return rollout

    # -- one step --------------------------------------------------------------------------------
    def _advance(self, session: Session, rollout: Rollout, now: datetime, outbox: Outbox) -> None:
        strategy = Strategy.model_validate(rollout.strategy)
        members = list(
            session.exec(select(RolloutDevice).where(RolloutDevice.rollout_id == rollout.id))
        )
        devices = devices_by_id(session, [m.device_id for m in members])
        if rollout.state == RolloutState.ABORTING:
            self._settle_abort(session, rollout, members, devices, now, strategy)
            return
        if rollout.state == RolloutState.SHADOW:
            # Devices that match the selector since the start join now, so that the shadow
            # stage's next evaluation gives them the shadow too (and judges their reports).
            if shadow_evaluation_due(rollout, now, strategy):
                known = len(members)
                join_late(session, rollout, members, now)
                if len(members) > known:
                    devices = devices_by_id(session, [m.device_id for m in members])
            advance_shadow(session, rollout, members, devices, now, strategy, outbox, self.abort)
            return
        sync_outcomes(session, rollout, members, devices, now, strategy)
        for member in members:  # pinned since the rollout started: leave it alone
            device = devices.get(member.device_id)
            if member.status == "pending" and device is not None and is_pinned(device):
                member.status = "skipped"
                member.detail = f"pinned to {device.pinned_name}@{device.pinned_version}"
                session.add(member)
        if evaluation_due(rollout, now, False, strategy):  # scanning every device costs
            join_late(session, rollout, members, now)
        resync_desired(rollout, members, devices, now, outbox)

        eligible = sorted((m for m in members if m.status != "skipped"), key=lambda m: m.position)
        if not eligible:
            transition(
                session,
                rollout,
                RolloutAction.COMPLETE,
                reason="no device needed the update",
                at=now,
            )
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
        offline = offline_devices(devices.values(), now, policy.offline.grace_s)
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
                # Shadow reports from the baseline window before the rollout on (a shadow
                # stage's, or an operator's shadow): same-input evidence the gates prefer.
                shadow_since=rollout.created_at - timedelta(seconds=policy.baseline_window_s),
            )
            if evidence.replaced and rollout.stage > 0:
                evidence.judged = judged_gates(session, rollout)
            results = evaluate_all(policy, evidence, soaked=soaked)
            evaluation = evaluation_record(rollout, strategy, now, results, evidence.summary())
            rollout.last_evaluation = evaluation
        else:  # between evaluations, only what the device statuses alone can fail
            evidence = counts_only(members=members, stage_ids=stage_ids, offline=offline)
            results = evaluate_all(policy, evidence, soaked=soaked, only=STATUS_GATES)
            evaluation = evaluation_record(rollout, strategy, now, results, evidence.summary())

        failed = [r for r in results if r.status == "fail"]
        if failed:
            reason = "; ".join(f"{r.name} {fmt_result(r)}" for r in failed)
            transition(
                session,
                rollout,
                RolloutAction.GATE_FAILED,
                reason=reason,
                at=now,
                evidence=evaluation,
            )
            if strategy.on_failure == "abort":
                self.abort(session, rollout, now, outbox, actor="engine", reason=reason)
            else:
                transition(
                    session, rollout, RolloutAction.PAUSE, reason=f"gate failed: {reason}", at=now
                )
            return

        if not full:
            return
        waiting = [r for r in results if r.status == "wait"]
        if soaked and not waiting:
            stage = rollout.stage
            self._promote(session, rollout, now, strategy, evaluation, total=len(eligible))
            # The next stage goes out now.
            if rollout.state == RolloutState.RUNNING and rollout.stage != stage:
                covered = eligible[: strategy.target_count(rollout.stage, len(eligible))]
                assign_pending(session, rollout, covered, now, strategy, outbox)
        elif (now - rollout.stage_started_at).total_seconds() > strategy.stage_timeout_s:
            names = ", ".join(r.name for r in waiting) or "updates"
            transition(
                session,
                rollout,
                RolloutAction.PAUSE,
                reason=f"stage timed out waiting for evidence: {names}",
                at=now,
                evidence=evaluation,
            )

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
        passed = RolloutAction.STAGE_PASSED
        transition(session, rollout, passed, reason=name, at=now, evidence=evaluation)
        if rollout.stage + 1 >= strategy.stage_count():
            reason = "every stage passed its gates"
            transition(session, rollout, RolloutAction.COMPLETE, reason=reason, at=now)
        elif strategy.require_approval:
            reason = f"{name} passed; waiting for approval"
            transition(session, rollout, RolloutAction.AWAIT_APPROVAL, reason=reason, at=now)
        else:
            self.next_stage(session, rollout, now, strategy, actor="engine")

    def next_stage(
        self, session: Session, rollout: Rollout, now: datetime, strategy: Strategy, *, actor: str
    ) -> None:
        next_state(rollout.id, rollout.state, RolloutAction.STAGE_STARTED)  # before changing
        rollout.stage += 1
        rollout.stage_started_at = now
        rollout.stage_finished_at = None
        name = strategy.stage_names()[rollout.stage]
        transition(session, rollout, RolloutAction.STAGE_STARTED, reason=name, at=now, actor=actor)

    # -- devices ---------------------------------------------------------------------------------

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
        next_state(rollout.id, rollout.state, RolloutAction.ABORT)  # refused: nothing changed
        members = list(
            session.exec(select(RolloutDevice).where(RolloutDevice.rollout_id == rollout.id))
        )
        if rollout.state == RolloutState.SHADOW:
            take_shadows_off(session, rollout, members, outbox)
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
        transition(
            session,
            rollout,
            RolloutAction.ABORT,
            reason=reason,
            at=now,
            actor=actor,
            evidence={"rolled_back": sum(len(ids) for ids in back.values())},
        )
        self._settle_abort(session, rollout, members, devices_by_id(session, []), now, None)

    def _settle_abort(
        self,
        session: Session,
        rollout: Rollout,
        members: list[RolloutDevice],
        devices: dict[str, DeviceFacts],
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
                .where(
                    RolloutDecision.rollout_id == rollout.id,
                    RolloutDecision.action == RolloutAction.ABORT.value,
                )
                .order_by(col(RolloutDecision.id).desc())
            ).first()
            overdue = started is not None and (now - started).total_seconds() > (
                strategy.update_timeout_s
            )
        finish = RolloutAction.FINISH_ABORT
        if not left:
            transition(
                session,
                rollout,
                finish,
                reason=rollout.reason or RolloutState.ABORTED.value,
                at=now,
            )
        elif overdue:
            reason = f"{rollout.reason}; {len(left)} device(s) did not confirm the rollback"
            transition(session, rollout, finish, reason=reason, at=now)
