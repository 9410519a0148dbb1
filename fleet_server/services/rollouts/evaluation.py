"""When a rollout's telemetry gates are evaluated, and how an evaluation is recorded."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session, select

from fleet_server.models.rollouts import Rollout, RolloutDecision
from fleet_server.services.rollouts.gates import GateResult
from fleet_server.services.rollouts.spec import Strategy
from fleet_server.services.rollouts.state import RolloutAction

#: Telemetry gates are evaluated (and the fleet scanned for late joiners) at most this often,
#: plus when a stage's last device finishes and when its soak ends: reading every device's
#: telemetry on each tick would compete with ingest and downloads at fleet scale.
EVALUATE_EVERY_S = 5.0


#: Gate evidence kinds that are not a comparison with the old version.
NO_BASELINE = (None, "", "none", "counts")

#: ``stage`` of a shadow evaluation record: the shadow stage comes before the canary (stage 0).
SHADOW_STAGE = -1


def due(
    last: dict[str, Any] | None, stage: int, now: datetime, moments: Sequence[datetime] = ()
) -> bool:
    """Whether ``stage`` is evaluated at ``now``: its first evaluation, every
    :data:`EVALUATE_EVERY_S`, and at once when one of ``moments`` (a soak's or shadow's end, a
    timeout) has passed since the last evaluation."""
    if not last or last.get("stage") != stage:
        return True
    when = datetime.fromisoformat(str(last["ts"]))
    if (now - when).total_seconds() >= EVALUATE_EVERY_S:
        return True
    return any(when < moment <= now for moment in moments)


def evaluation_due(rollout: Rollout, now: datetime, soaked: bool, strategy: Strategy) -> bool:
    moments = []
    if soaked and rollout.stage_finished_at is not None:
        moments.append(rollout.stage_finished_at + timedelta(seconds=strategy.soak_s))
    return due(rollout.last_evaluation, rollout.stage, now, moments)


def shadow_evaluation_due(rollout: Rollout, now: datetime, strategy: Strategy) -> bool:
    """The shadow stage under the same throttle as the others (its evaluation reads every
    member's shadow reports): due first, every EVALUATE_EVERY_S, and when ``shadow_s`` or the
    stage timeout runs out."""
    assert strategy.shadow is not None
    started = rollout.stage_started_at
    moments = [
        started + timedelta(seconds=strategy.shadow.shadow_s),
        started + timedelta(seconds=strategy.stage_timeout_s),
    ]
    return due(rollout.last_evaluation, SHADOW_STAGE, now, moments)


def fmt_result(result: GateResult) -> str:
    value = "n/a" if result.value is None else f"{result.value:.4g}"
    bounds = ""
    if result.low is not None and result.high is not None and result.alpha is not None:
        bounds = f", bounds {result.low:.4g}..{result.high:.4g} at alpha={result.alpha:g}"
    return f"{value} vs {result.threshold:g} (n={result.samples}{bounds})"


def evaluation_record(
    rollout: Rollout,
    strategy: Strategy,
    now: datetime,
    results: list[GateResult],
    evidence: dict[str, Any],
) -> dict[str, Any]:
    return {
        "ts": now.isoformat(),
        "stage": rollout.stage,
        "stage_name": strategy.stage_names()[rollout.stage],
        "gates": [r.as_dict() for r in results],
        "evidence": evidence,
    }


def passed_on_a_baseline(gates: Iterable[Any]) -> set[str]:
    """Names of the gates (recorded ``GateResult.as_dict()``s) that passed on a comparison
    with the old version; one rule for the engine and the simulation (``hil/gate_sim.py``)."""
    return {
        str(g["name"])
        for g in gates
        if isinstance(g, dict)
        and g.get("status") == "pass"
        and g.get("evidence") not in NO_BASELINE
    }


def judged_gates(session: Session, rollout: Rollout) -> frozenset[str]:
    """Gates that passed an earlier stage of the rollout on an old-version baseline (read from
    the recorded ``stage_passed`` decisions): later stages may skip them for want of one."""
    rows = session.exec(
        select(RolloutDecision.evidence).where(
            RolloutDecision.rollout_id == rollout.id,
            RolloutDecision.action == RolloutAction.STAGE_PASSED,
        )
    ).all()
    return frozenset(
        name
        for evidence in rows
        for name in passed_on_a_baseline((evidence or {}).get("gates") or [])
    )
