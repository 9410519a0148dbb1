"""When a rollout's telemetry gates are evaluated, and how an evaluation is recorded."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from fleet_server.models.rollouts import Rollout
from fleet_server.services.rollouts.gates import GateResult
from fleet_server.services.rollouts.spec import Strategy

#: Telemetry gates are evaluated (and the fleet scanned for late joiners) at most this often,
#: plus when a stage's last device finishes and when its soak ends: reading every device's
#: telemetry on each tick would compete with ingest and downloads at fleet scale.
EVALUATE_EVERY_S = 5.0


def evaluation_due(rollout: Rollout, now: datetime, soaked: bool, strategy: Strategy) -> bool:
    last = rollout.last_evaluation
    if not last or last.get("stage") != rollout.stage:
        return True
    when = datetime.fromisoformat(str(last["ts"]))
    if (now - when).total_seconds() >= EVALUATE_EVERY_S:
        return True
    if soaked and rollout.stage_finished_at is not None:
        soak_end = rollout.stage_finished_at + timedelta(seconds=strategy.soak_s)
        return when < soak_end
    return False


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
