"""The shadow stage before the canary: the rollout's devices run the candidate in shadow (their
desired model stays the old one) for ``shadow_s``; then the shadow gates judge, per device class.

:func:`shadow_step` puts the shadow on the devices (again, if a row went missing), reads what
they reported since the stage started and gives a verdict; :func:`advance_shadow` (the engine's
step in this state) records it through :mod:`.state` and waits, aborts, or passes to the
canary. :func:`take_shadows_off` ends the stage on the devices, whether it passed or the
rollout aborts. Rows are written in the engine's step transaction; the next desired-state
revision (same model) carries the change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from sqlmodel import Session

from fleet_server.models.rollouts import Rollout, RolloutDecision, RolloutDevice
from fleet_server.services.desired import Keep
from fleet_server.services.devices import DeviceFacts
from fleet_server.services.rollouts.evaluation import (
    SHADOW_STAGE,
    fmt_result,
    shadow_evaluation_due,
)
from fleet_server.services.rollouts.members import Outbox
from fleet_server.services.rollouts.shadow_gates import evaluate_shadow, shadow_evidence
from fleet_server.services.rollouts.spec import Strategy
from fleet_server.services.rollouts.state import RolloutAction, RolloutState, transition
from fleet_server.services.shadow import place_shadows, remove_shadows, summarise_devices


@dataclass(frozen=True)
class ShadowVerdict:
    outcome: Literal["wait", "pass", "fail"]
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)


def shadow_devices(members: list[RolloutDevice], devices: dict[str, DeviceFacts]) -> list[str]:
    """The members that run the shadow: in the rollout (not skipped) and serving a model."""
    return sorted(
        m.device_id
        for m in members
        if m.status != "skipped"
        and (device := devices.get(m.device_id)) is not None
        and device.desired_name is not None
    )


def shadow_step(
    session: Session,
    rollout: Rollout,
    members: list[RolloutDevice],
    devices: dict[str, DeviceFacts],
    now: datetime,
    strategy: Strategy,
    outbox: Outbox,
) -> ShadowVerdict:
    spec = strategy.shadow
    assert spec is not None, "a rollout in the shadow state has a shadow stage"
    model = (rollout.model_name, rollout.model_version)
    ids = shadow_devices(members, devices)
    if not ids:
        return ShadowVerdict("fail", "shadow: no targeted device serves a model to shadow")
    changed = place_shadows(
        session=session,
        device_ids=ids,
        model=model,
        sample_rate=spec.sample_rate,
        cpu_budget=spec.cpu_budget,
        at=now,
    )
    outbox.set_desired(changed, Keep.MODEL)
    groups = summarise_devices(
        session=session,
        name=model[0],
        version=model[1],
        device_ids=ids,
        since=rollout.stage_started_at,
    )
    classes = {devices[i].device_class or "" for i in ids}
    results = evaluate_shadow(spec, groups, classes)
    evidence = {
        "ts": now.isoformat(),
        "stage": SHADOW_STAGE,
        "stage_name": "shadow",
        "gates": [r.as_dict() for r in results],
        "shadow": {
            "devices": len(ids),
            "since": rollout.stage_started_at.isoformat(),
            **shadow_evidence(spec=spec, groups=groups, results=results),
        },
    }
    rollout.last_evaluation = evidence
    failed = [r for r in results if r.status == "fail"]
    if failed:
        detail = "; ".join(f"{r.name} ({r.detail}) {fmt_result(r)}" for r in failed)
        return ShadowVerdict("fail", f"shadow: {detail}", evidence)
    waiting = [r for r in results if r.status != "pass"]
    elapsed = (now - rollout.stage_started_at).total_seconds()
    if not waiting and elapsed >= spec.shadow_s:
        return ShadowVerdict("pass", f"shadow passed on {len(ids)} device(s)", evidence)
    if waiting and elapsed > strategy.stage_timeout_s:
        names = ", ".join(sorted({f"{r.name} ({r.detail})" for r in waiting}))
        return ShadowVerdict("fail", f"shadow timed out waiting for evidence: {names}", evidence)
    why = ", ".join(sorted({f"{r.name} ({r.detail})" for r in waiting})) or "shadow_s"
    return ShadowVerdict("wait", f"waiting for {why}", evidence)


class Abort(Protocol):
    def __call__(
        self,
        session: Session,
        rollout: Rollout,
        now: datetime,
        outbox: Outbox,
        *,
        actor: str,
        reason: str,
    ) -> None:
        """The engine's abort (every touched device back to what it ran before)."""
        ...


def advance_shadow(
    session: Session,
    rollout: Rollout,
    members: list[RolloutDevice],
    devices: dict[str, DeviceFacts],
    now: datetime,
    strategy: Strategy,
    outbox: Outbox,
    abort: Abort,
) -> None:
    """One engine step in the shadow stage: wait, abort (the candidate never answered a
    request), or take the shadows off and start the canary (assigned on the next step).
    Between evaluations (:func:`.evaluation.shadow_evaluation_due`) a step does nothing."""
    if not shadow_evaluation_due(rollout, now, strategy):
        return
    verdict = shadow_step(session, rollout, members, devices, now, strategy, outbox)
    if verdict.outcome == "fail":
        transition(
            session,
            rollout,
            RolloutAction.GATE_FAILED,
            reason=verdict.reason,
            at=now,
            evidence=verdict.evidence,
        )
        abort(session, rollout, now, outbox, actor="engine", reason=verdict.reason)
    elif verdict.outcome == "pass":
        take_shadows_off(session, rollout, members, outbox)
        transition(
            session,
            rollout,
            RolloutAction.SHADOW_PASSED,
            reason=verdict.reason,
            at=now,
            evidence=verdict.evidence,
        )
        rollout.stage_started_at = now  # the canary's clock starts now
        rollout.stage_finished_at = None


def take_shadows_off(
    session: Session, rollout: Rollout, members: list[RolloutDevice], outbox: Outbox
) -> list[str]:
    """Remove the candidate's shadow from every member (a shadow of another version stays)."""
    removed = remove_shadows(
        session=session,
        device_ids=[m.device_id for m in members],
        model=(rollout.model_name, rollout.model_version),
    )
    outbox.set_desired(removed, Keep.MODEL)
    return removed


def shadow_block(rollout: Rollout, decisions: Sequence[RolloutDecision]) -> dict[str, Any] | None:
    """The shadow stage's evidence beside the canary's: the figures and gates of the decision
    that ended it (passed, or failed), else the stage's newest evaluation while it runs; None
    for a rollout without a shadow stage."""
    outcome = None
    record: dict[str, Any] | None = None
    for decision in reversed(decisions):
        evidence = decision.evidence or {}
        if isinstance(evidence.get("shadow"), dict) and "gates" in evidence:
            passed = decision.action == RolloutAction.SHADOW_PASSED.value
            outcome, record = ("passed" if passed else "failed"), evidence
            break
    if record is None and rollout.state == RolloutState.SHADOW:
        last = rollout.last_evaluation or {}
        if isinstance(last.get("shadow"), dict):
            outcome, record = "in progress", last
    if record is None:
        return None
    return {"outcome": outcome, "evaluated_at": record.get("ts"), **record["shadow"]}
