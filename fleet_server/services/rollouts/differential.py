"""The rollout report's differential: new vs old version as the gates last judged them (read
from the stored evaluation, never gathered or decided again) and what labels say per side."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel import Session

from fleet_server.models.rollouts import Rollout, RolloutDevice
from fleet_server.services.quality.metrics import wilson
from fleet_server.services.quality.service import label_counts


def differential(
    session: Session, rollout: Rollout, members: list[RolloutDevice], *, now: datetime
) -> dict[str, Any]:
    """New vs old as the gates last judged them: read from the newest stored evaluation (the
    last stage covers every device), never gathered or decided again here.

    ``gates`` are the stored verdicts; ``error_rate_increase`` and ``confidence_tv_distance``
    are the values the error-rate and confidence gates decided; per class, the stored p95
    medians of both sides and their ratio; ``evaluation_age_s``, how old those figures are at
    ``now``. Label accuracy is the quality service's, per side."""
    evaluation = rollout.last_evaluation or {}
    evidence = evaluation.get("evidence") or {}
    gates = {g.get("name"): g for g in evaluation.get("gates") or [] if isinstance(g, dict)}
    new, old = evidence.get("new") or {}, evidence.get("old") or {}
    new_latency, old_latency = new.get("latency_ms") or {}, old.get("latency_ms") or {}
    by_class = {}
    for name in sorted(set(new_latency) | set(old_latency)):
        n, o = new_latency.get(name), old_latency.get(name)
        ratio = None
        if n and o and n.get("p95") is not None and o.get("p95"):
            ratio = round(n["p95"] / o["p95"], 4)
        by_class[name] = {"new": n, "old": o, "p95_ratio": ratio}

    def decided(gate: str) -> Any:
        return (gates.get(gate) or {}).get("value")

    age = None
    if evaluation.get("ts"):
        age = round((now - datetime.fromisoformat(str(evaluation["ts"]))).total_seconds(), 3)

    return {
        "evaluated_at": evaluation.get("ts"),
        "evaluation_age_s": age,
        "stage_name": evaluation.get("stage_name"),
        "baseline": evidence.get("baseline", "none"),
        "new_version": f"{rollout.model_name}@{rollout.model_version}",
        "new": new,
        "old": old,
        "gates": list(gates.values()),
        # What each stored verdict rested on (shadow > pre-update > control; counts, labels).
        "evidence_by_gate": {name: g.get("evidence") or None for name, g in gates.items()},
        # The candidate's shadow reports beside the version it replaces, as last read.
        "same_input": evidence.get("shadow"),
        "latency_by_class": by_class,
        "error_rate_increase": decided("error_rate"),
        "confidence_tv_distance": decided("confidence_shift"),
        "label_accuracy": _label_accuracy(
            session,
            rollout,
            {
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
