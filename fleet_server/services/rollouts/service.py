"""What the API calls: create a rollout, the operator's actions, and the read views + report."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field
from sqlmodel import Session, col, func, select

from fleet_server.models import Device
from fleet_server.models import ModelVersion as ModelVersionRow
from fleet_server.models.rollouts import (
    DEVICE_STATUSES,
    Rollout,
    RolloutDecision,
    RolloutDevice,
)
from fleet_server.services.compat import can_run
from fleet_server.services.errors import Conflict, NotFound, Unprocessable
from fleet_server.services.models import require_verified
from fleet_server.services.rollouts.compare_check import check_comparisons
from fleet_server.services.rollouts.differential import differential
from fleet_server.services.rollouts.engine import RolloutEngine
from fleet_server.services.rollouts.members import Outbox, busy_devices, new_member
from fleet_server.services.rollouts.shadow_stage import shadow_block
from fleet_server.services.rollouts.spec import RolloutCreate, Strategy
from fleet_server.services.rollouts.state import (
    INITIAL_STATE,
    RolloutAction,
    RolloutState,
    next_state,
    operator_actions,
    transition,
)


class StagePublic(BaseModel):
    index: int
    name: str
    devices: int = Field(description="Devices covered by this stage and the ones before it.")


class DecisionPublic(BaseModel):
    ts: datetime
    stage: int
    action: str
    actor: str
    reason: str
    evidence: dict[str, Any]


class RolloutDevicePublic(BaseModel):
    device_id: str
    status: str
    position: int
    stage: int | None
    device_class: str | None
    previous: str | None
    joined_late: bool
    assigned_at: datetime | None
    finished_at: datetime | None
    detail: str | None


class RolloutPublic(BaseModel):
    id: int
    name: str
    model: str
    version: str
    state: RolloutState
    reason: str | None
    stage: int
    stage_name: str
    stages: list[StagePublic]
    counts: dict[str, int] = Field(description="Devices by status in this rollout.")
    from_versions: dict[str, int] = Field(
        default_factory=dict,
        description="What the rollout's devices ran before it ('name@version', '' for none), "
        "with how many devices each.",
    )
    selector: dict[str, Any]
    strategy: dict[str, Any]
    gates: dict[str, Any]
    created_by: str
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    last_evaluation: dict[str, Any] | None
    actions: list[str] = Field(
        default_factory=list,
        description="Operator actions its state allows now (pause, resume, approve, abort), "
        "from the one transition table.",
    )


class RolloutReport(BaseModel):
    rollout: RolloutPublic
    decisions: list[DecisionPublic]
    devices: list[RolloutDevicePublic]
    differential: dict[str, Any] = Field(
        description="New vs old version over the whole rollout, by device class: predictions "
        "(confidence histograms), latency and errors; and accuracy on labelled samples "
        "(random and all); ``shadow``: the shadow stage's figures and gates per device class "
        "(null without a shadow stage)."
    )


# -- create ---------------------------------------------------------------------------------------
def create_rollout(
    *,
    session: Session,
    rollouts: RolloutEngine,
    request: RolloutCreate,
    actor: str,
    trusted_keys: Sequence[bytes],
) -> RolloutPublic:
    model = session.get(ModelVersionRow, (request.model, request.version))
    if model is None:
        raise NotFound(f"model {request.model}@{request.version} not found")
    require_verified(row=model, trusted_keys=trusted_keys)
    missing = _not_in_fleet(session, request.selector.device_ids)
    if missing:
        raise NotFound(f"unknown device(s): {', '.join(missing[:10])}")
    matched = [
        d
        for d in session.exec(select(Device).where(col(Device.decommissioned_at).is_(None)))
        if request.selector.matches(device_id=d.device_id, tags=d.tags, device_class=d.device_class)
    ]
    if not matched:
        raise Unprocessable("the selector matches no device")
    # A device whose class cannot run the artifact's format is never sent it (left out).
    targets = [d for d in matched if can_run(device_class=d.device_class, fmt=model.format)]
    # By id, in a set: ``d not in targets`` compared ORM rows pairwise, O(N²) — over two
    # minutes for a 10,000-device fleet, which timed the create call out.
    runnable = {d.device_id for d in targets}
    incompatible = sorted(d.device_id for d in matched if d.device_id not in runnable)
    if not targets:
        raise Unprocessable(
            f"no selected device can run {model.format} artifacts (device classes: "
            f"{', '.join(sorted({d.device_class or '-' for d in matched}))})"
        )
    if request.strategy.shadow is not None and all(d.desired_name is None for d in targets):
        raise Unprocessable(
            "a shadow stage runs the candidate beside a served model, and no selected device "
            "is assigned one"
        )
    busy = busy_devices(session, exclude=None) & {d.device_id for d in targets}
    if busy:
        raise Conflict(
            f"{len(busy)} targeted device(s) are in another active rollout, e.g. "
            f"{', '.join(sorted(busy)[:5])}; finish or abort it first"
        )
    compared = (
        check_comparisons(
            session=session,
            candidate=model,
            targets=targets,
            requirement=request.require_compare,
        )
        if request.require_compare is not None
        else {}
    )
    now = rollouts.clock()
    rollout = Rollout(
        name=request.name or f"{request.model}@{request.version}",
        model_name=request.model,
        model_version=request.version,
        selector=request.selector.model_dump(mode="json"),
        strategy=request.strategy.model_dump(mode="json"),
        gates=request.gates.model_dump(mode="json"),
        state=INITIAL_STATE.value,
        stage=0,
        stage_started_at=now,
        created_by=actor,
        created_at=now,
        updated_at=now,
    )
    session.add(rollout)
    session.flush()
    target = {"name": request.model, "version": request.version}
    for position, device in enumerate(_spread(targets, salt=f"{rollout.id}:{request.model}")):
        session.add(new_member(rollout, device, position, joined_late=False, model=target))
    session.flush()
    plan = _stages(rollout, session)
    transition(
        session,
        rollout,
        RolloutAction.CREATED,
        reason=f"{len(targets)} device(s) targeted"
        + (f", {len(incompatible)} left out (cannot run {model.format})" if incompatible else ""),
        at=now,
        actor=actor,
        evidence={
            "stages": [s.model_dump() for s in plan],
            **compared,
            **({"incompatible": incompatible[:100]} if incompatible else {}),
        },
    )
    if request.strategy.shadow is not None:
        shadow = request.strategy.shadow
        transition(
            session,
            rollout,
            RolloutAction.SHADOW_STARTED,
            reason=f"the candidate runs in shadow for at least {shadow.shadow_s:g} s",
            at=now,
            actor=actor,
            evidence={"shadow": shadow.model_dump(mode="json")},
        )
    session.commit()
    assert rollout.id is not None
    rollouts.step_soon(rollout.id)  # the shadow (or the canary) goes out now, not next tick
    session.expire_all()
    return view(session, rollout.id)


def _spread(devices: list[Device], *, salt: str) -> list[Device]:
    """A reproducible shuffle that interleaves device classes, so the canary and every batch
    sample each class as early as possible."""

    def key(device: Device) -> str:
        return hashlib.sha256(f"{salt}:{device.device_id}".encode()).hexdigest()

    by_class: dict[str, list[Device]] = {}
    for device in sorted(devices, key=key):
        by_class.setdefault(device.device_class or "", []).append(device)
    groups = sorted(by_class.values(), key=len, reverse=True)
    ordered: list[Device] = []
    for i in range(max(len(g) for g in groups)):
        ordered.extend(g[i] for g in groups if i < len(g))
    return ordered


# -- operator actions -----------------------------------------------------------------------------
def _operator(
    rollouts: RolloutEngine,
    rollout_id: int,
    action: RolloutAction,
    change: Callable[[Session, Rollout, datetime, Outbox], None],
) -> None:
    """Run ``change`` if the table allows ``action`` in the rollout's current state (read again
    on every retry of a lost claim); otherwise :class:`.state.TransitionRefused` (a 409)."""

    def guarded(session: Session, rollout: Rollout, now: datetime, outbox: Outbox) -> None:
        next_state(rollout.id, rollout.state, action)
        change(session, rollout, now, outbox)

    rollouts.act_retrying(rollout_id, guarded)


def pause(rollouts: RolloutEngine, rollout_id: int, *, actor: str, reason: str) -> None:
    def change(session: Session, r: Rollout, now: datetime, _: Outbox) -> None:
        why = reason or f"paused by {actor}"
        transition(session, r, RolloutAction.PAUSE, reason=why, at=now, actor=actor)

    _operator(rollouts, rollout_id, RolloutAction.PAUSE, change)


def resume(rollouts: RolloutEngine, rollout_id: int, *, actor: str, reason: str) -> None:
    def change(session: Session, r: Rollout, now: datetime, _: Outbox) -> None:
        transition(session, r, RolloutAction.RESUME, reason=reason, at=now, actor=actor)
        r.stage_started_at = now  # the stage timeout counts from the resume

    _operator(rollouts, rollout_id, RolloutAction.RESUME, change)
    rollouts.step_soon(rollout_id)


def approve(rollouts: RolloutEngine, rollout_id: int, *, actor: str, reason: str) -> None:
    def change(session: Session, r: Rollout, now: datetime, _: Outbox) -> None:
        transition(session, r, RolloutAction.APPROVE, reason=reason, at=now, actor=actor)
        rollouts.next_stage(session, r, now, Strategy.model_validate(r.strategy), actor=actor)

    _operator(rollouts, rollout_id, RolloutAction.APPROVE, change)
    rollouts.step_soon(rollout_id)


def abort(rollouts: RolloutEngine, rollout_id: int, *, actor: str, reason: str) -> None:
    def change(session: Session, r: Rollout, now: datetime, outbox: Outbox) -> None:
        rollouts.abort(session, r, now, outbox, actor=actor, reason=reason or f"aborted by {actor}")

    _operator(rollouts, rollout_id, RolloutAction.ABORT, change)


# -- views ----------------------------------------------------------------------------------------
def _stages(rollout: Rollout, session: Session) -> list[StagePublic]:
    strategy = Strategy.model_validate(rollout.strategy)
    total = session.exec(
        select(func.count())
        .select_from(RolloutDevice)
        .where(RolloutDevice.rollout_id == rollout.id, RolloutDevice.status != "skipped")
    ).one()
    return [
        StagePublic(index=i, name=name, devices=strategy.target_count(i, total))
        for i, name in enumerate(strategy.stage_names())
    ]


def view(session: Session, rollout_id: int) -> RolloutPublic:
    rollout = session.get(Rollout, rollout_id)
    if rollout is None:
        raise NotFound(f"rollout {rollout_id} not found")
    counts = dict.fromkeys(DEVICE_STATUSES, 0)
    rows = session.exec(
        select(RolloutDevice.status, func.count())
        .where(RolloutDevice.rollout_id == rollout_id)
        .group_by(RolloutDevice.status)
    ).all()
    counts.update({status: int(n) for status, n in rows})
    before = session.exec(
        select(RolloutDevice.previous_name, RolloutDevice.previous_version, func.count())
        .where(RolloutDevice.rollout_id == rollout_id)
        .group_by(col(RolloutDevice.previous_name), col(RolloutDevice.previous_version))
    ).all()
    from_versions = {f"{n}@{v}" if n and v else "": int(c) for n, v, c in before}
    stages = _stages(rollout, session)
    assert rollout.id is not None
    return RolloutPublic(
        id=rollout.id,
        name=rollout.name,
        model=rollout.model_name,
        version=rollout.model_version,
        state=RolloutState(rollout.state),
        actions=operator_actions(rollout.state),
        reason=rollout.reason,
        stage=rollout.stage,
        stage_name="shadow" if rollout.state == RolloutState.SHADOW else stages[rollout.stage].name,
        stages=stages,
        counts=counts,
        from_versions=from_versions,
        selector=rollout.selector,
        strategy=rollout.strategy,
        gates=rollout.gates,
        created_by=rollout.created_by,
        created_at=rollout.created_at,
        updated_at=rollout.updated_at,
        finished_at=rollout.finished_at,
        last_evaluation=rollout.last_evaluation,
    )


def list_rollouts(
    session: Session, *, state: RolloutState | None, limit: int
) -> list[RolloutPublic]:
    query = select(Rollout.id).order_by(col(Rollout.id).desc()).limit(limit)
    if state is not None:
        query = query.where(Rollout.state == state.value)
    return [view(session, rid) for rid in session.exec(query).all() if rid is not None]


def report(session: Session, rollout_id: int, *, now: datetime) -> RolloutReport:
    public = view(session, rollout_id)
    rollout = session.get(Rollout, rollout_id)
    assert rollout is not None
    decisions = session.exec(
        select(RolloutDecision)
        .where(RolloutDecision.rollout_id == rollout_id)
        .order_by(col(RolloutDecision.id))
    ).all()
    members = list(
        session.exec(
            select(RolloutDevice)
            .where(RolloutDevice.rollout_id == rollout_id)
            .order_by(col(RolloutDevice.position))
        )
    )
    return RolloutReport(
        rollout=public,
        decisions=[DecisionPublic.model_validate(d, from_attributes=True) for d in decisions],
        devices=[
            RolloutDevicePublic(
                device_id=m.device_id,
                status=m.status,
                position=m.position,
                stage=m.stage,
                device_class=m.device_class,
                previous=f"{m.previous_name}@{m.previous_version}" if m.previous_name else None,
                joined_late=m.joined_late,
                assigned_at=m.assigned_at,
                finished_at=m.finished_at,
                detail=m.detail,
            )
            for m in members
        ],
        differential={
            **differential(session, rollout, members, now=now),
            "shadow": shadow_block(rollout, decisions),
        },
    )


def _not_in_fleet(session: Session, device_ids: Sequence[str]) -> list[str]:
    """Which of ``device_ids`` are unknown or decommissioned (one query per 500 ids, not one
    per device), in the order given."""
    ids = list(dict.fromkeys(device_ids))
    live: set[str] = set()
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        live.update(
            session.exec(
                select(Device.device_id).where(
                    col(Device.device_id).in_(chunk), col(Device.decommissioned_at).is_(None)
                )
            )
        )
    return [d for d in ids if d not in live]
