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
from fleet_server.services.errors import Conflict, NotFound, Unprocessable
from fleet_server.services.models import require_verified
from fleet_server.services.quality.metrics import wilson
from fleet_server.services.quality.service import label_counts
from fleet_server.services.rollouts.engine import RolloutEngine
from fleet_server.services.rollouts.evidence import gather, tv_distance
from fleet_server.services.rollouts.members import Outbox, busy_devices, new_member
from fleet_server.services.rollouts.spec import GatePolicy, RolloutCreate, Strategy


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
    state: str
    reason: str | None
    stage: int
    stage_name: str
    stages: list[StagePublic]
    counts: dict[str, int] = Field(description="Devices by status in this rollout.")
    selector: dict[str, Any]
    strategy: dict[str, Any]
    gates: dict[str, Any]
    created_by: str
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    last_evaluation: dict[str, Any] | None


class RolloutReport(BaseModel):
    rollout: RolloutPublic
    decisions: list[DecisionPublic]
    devices: list[RolloutDevicePublic]
    differential: dict[str, Any] = Field(
        description="New vs old version over the whole rollout, by device class: predictions "
        "(confidence histograms), latency and errors; and accuracy on labelled samples "
        "(random and all)."
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
    missing = [d for d in request.selector.device_ids if session.get(Device, d) is None]
    if missing:
        raise NotFound(f"unknown device(s): {', '.join(missing[:10])}")
    targets = [
        d
        for d in session.exec(select(Device))
        if request.selector.matches(device_id=d.device_id, tags=d.tags, device_class=d.device_class)
    ]
    if not targets:
        raise Unprocessable("the selector matches no device")
    busy = busy_devices(session, exclude=None) & {d.device_id for d in targets}
    if busy:
        raise Conflict(
            f"{len(busy)} targeted device(s) are in another active rollout, e.g. "
            f"{', '.join(sorted(busy)[:5])}; finish or abort it first"
        )
    now = rollouts.clock()
    rollout = Rollout(
        name=request.name or f"{request.model}@{request.version}",
        model_name=request.model,
        model_version=request.version,
        selector=request.selector.model_dump(mode="json"),
        strategy=request.strategy.model_dump(mode="json"),
        gates=request.gates.model_dump(mode="json"),
        state="running",
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
    RolloutEngine.decide(
        session,
        rollout,
        now,
        "created",
        actor=actor,
        reason=f"{len(targets)} device(s) targeted",
        evidence={"stages": [s.model_dump() for s in plan]},
    )
    session.commit()
    assert rollout.id is not None
    rollouts.step_soon(rollout.id)  # the canary goes out now, not at the next tick
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
def _transition(
    rollouts: RolloutEngine,
    rollout_id: int,
    *,
    allowed: tuple[str, ...],
    verb: str,
    change: Callable[[Session, Rollout, datetime, Outbox], None],
) -> None:
    def guarded(session: Session, rollout: Rollout, now: datetime, outbox: Outbox) -> None:
        if rollout.state not in allowed:
            raise Conflict(
                f"cannot {verb} rollout {rollout_id}: it is {rollout.state} "
                f"(allowed from {', '.join(allowed)})"
            )
        change(session, rollout, now, outbox)

    rollouts.act_retrying(rollout_id, guarded)


def pause(rollouts: RolloutEngine, rollout_id: int, *, actor: str, reason: str) -> None:
    def change(session: Session, r: Rollout, now: datetime, _: Outbox) -> None:
        r.state, r.reason = "paused", reason or f"paused by {actor}"
        RolloutEngine.decide(session, r, now, "pause", actor=actor, reason=r.reason)

    _transition(
        rollouts, rollout_id, allowed=("running", "awaiting_approval"), verb="pause", change=change
    )


def resume(rollouts: RolloutEngine, rollout_id: int, *, actor: str, reason: str) -> None:
    def change(session: Session, r: Rollout, now: datetime, _: Outbox) -> None:
        r.state, r.reason = "running", None
        r.stage_started_at = now  # the stage timeout counts from the resume
        RolloutEngine.decide(session, r, now, "resume", actor=actor, reason=reason)

    _transition(rollouts, rollout_id, allowed=("paused",), verb="resume", change=change)
    rollouts.step_soon(rollout_id)


def approve(rollouts: RolloutEngine, rollout_id: int, *, actor: str, reason: str) -> None:
    def change(session: Session, r: Rollout, now: datetime, _: Outbox) -> None:
        RolloutEngine.decide(session, r, now, "approve", actor=actor, reason=reason)
        rollouts.next_stage(session, r, now, Strategy.model_validate(r.strategy), actor=actor)

    _transition(rollouts, rollout_id, allowed=("awaiting_approval",), verb="approve", change=change)
    rollouts.step_soon(rollout_id)


def abort(rollouts: RolloutEngine, rollout_id: int, *, actor: str, reason: str) -> None:
    def change(session: Session, r: Rollout, now: datetime, outbox: Outbox) -> None:
        rollouts.abort(session, r, now, outbox, actor=actor, reason=reason or f"aborted by {actor}")

    _transition(
        rollouts,
        rollout_id,
        allowed=("running", "paused", "awaiting_approval"),
        verb="abort",
        change=change,
    )


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
    stages = _stages(rollout, session)
    assert rollout.id is not None
    return RolloutPublic(
        id=rollout.id,
        name=rollout.name,
        model=rollout.model_name,
        version=rollout.model_version,
        state=rollout.state,
        reason=rollout.reason,
        stage=rollout.stage,
        stage_name=stages[rollout.stage].name,
        stages=stages,
        counts=counts,
        selector=rollout.selector,
        strategy=rollout.strategy,
        gates=rollout.gates,
        created_by=rollout.created_by,
        created_at=rollout.created_at,
        updated_at=rollout.updated_at,
        finished_at=rollout.finished_at,
        last_evaluation=rollout.last_evaluation,
    )


def list_rollouts(session: Session, *, state: str | None, limit: int) -> list[RolloutPublic]:
    query = select(Rollout.id).order_by(col(Rollout.id).desc()).limit(limit)
    if state is not None:
        query = query.where(Rollout.state == state)
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
        differential=differential(session, rollout, members, now=now),
    )


def differential(
    session: Session, rollout: Rollout, members: list[RolloutDevice], *, now: datetime
) -> dict[str, Any]:
    """New vs old on the same device classes, over every device that committed.

    The old side is the control group (devices not yet updated) when it has telemetry, else the
    updated devices' own telemetry from before their update."""
    policy = GatePolicy.model_validate(rollout.gates)
    evidence = gather(
        session=session,
        members=members,
        target=(rollout.model_name, rollout.model_version),
        stage_ids={m.device_id for m in members if m.status != "skipped"},
        offline=set(),
        now=now,
        window_s=policy.baseline_window_s,
        min_control_intervals=policy.latency_p95_ratio.min_samples,
        settle_intervals=policy.settle_intervals,
    )
    new, old = evidence.new.summary(), evidence.old.summary()
    classes = sorted(set(new["latency_ms"]) | set(old["latency_ms"]))
    by_class = {}
    for name in classes:
        n, o = new["latency_ms"].get(name), old["latency_ms"].get(name)
        ratio = None
        if n and o and n["p95"] is not None and o["p95"]:
            ratio = round(n["p95"] / o["p95"], 4)
        by_class[name] = {"new": n, "old": o, "p95_ratio": ratio}
    distance = tv_distance(evidence.new.histogram, evidence.old.histogram)
    increase = None
    if evidence.new.error_rate is not None and evidence.old.error_rate is not None:
        increase = round(evidence.new.error_rate - evidence.old.error_rate, 6)
    return {
        "baseline": evidence.baseline,
        "new_version": f"{rollout.model_name}@{rollout.model_version}",
        "new": new,
        "old": old,
        "latency_by_class": by_class,
        "error_rate_increase": increase,
        "confidence_tv_distance": None if distance is None else round(distance, 6),
        "label_accuracy": _label_accuracy(
            session,
            rollout,
            evidence.old.versions
            | {
                m.previous_version
                for m in members
                if m.previous_name == rollout.model_name and m.previous_version
            },
        ),
    }


def _label_accuracy(session: Session, rollout: Rollout, old_versions: set[str]) -> dict[str, Any]:
    """What labels say, new vs old version(s), on the random (unbiased) samples and on all
    labelled samples — each named; ``edgefleet fleet quality`` has the per-class detail."""
    sides = {"new": [rollout.model_version], "old": sorted(old_versions - {rollout.model_version})}
    result: dict[str, Any] = {}
    for side, versions in sides.items():
        result[side] = {"versions": versions}
        for subset, reason in (("random", "random"), ("all", None)):
            counts = label_counts(session, rollout.model_name, versions, reason=reason)
            low, high = wilson(counts.correct, counts.labelled)
            result[side][subset] = {
                "labelled": counts.labelled,
                "correct": counts.correct,
                "accuracy": None if counts.accuracy is None else round(counts.accuracy, 6),
                "ci95": [round(low, 6), round(high, 6)] if counts.labelled else None,
            }
    return result
