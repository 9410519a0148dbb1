"""``require_compare``: a rollout is created only when the candidate has a stored comparison
against every version it replaces, and none regresses beyond the thresholds.

The versions it replaces are those of the same model the targeted devices are assigned now;
when no targeted device runs the model yet, the candidate's lineage parent. The comparison
itself is computed on the operator's machine and stored by :mod:`fleet_server.services.comparisons`;
this module only reads its headline figures.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlmodel import Session

from fleet_server.models import Device
from fleet_server.models import ModelVersion as ModelVersionRow
from fleet_server.models.comparisons import ModelComparison
from fleet_server.services.comparisons import latest_against
from fleet_server.services.errors import Unprocessable
from fleet_server.services.rollouts.spec import CompareRequirement


def replaced_versions(*, candidate: ModelVersionRow, targets: Iterable[Device]) -> list[str]:
    """The versions of the candidate's model the targeted devices would leave; else its parent."""
    versions = {
        d.desired_version
        for d in targets
        if d.desired_name == candidate.name
        and d.desired_version
        and d.desired_version != candidate.version
    }
    if not versions and candidate.parent_version:
        versions.add(candidate.parent_version)
    return sorted(v for v in versions if v is not None)


def check_comparisons(
    *,
    session: Session,
    candidate: ModelVersionRow,
    targets: Iterable[Device],
    requirement: CompareRequirement,
) -> dict[str, Any]:
    """The evidence (comparison ids and figures by baseline) when every check passes;
    :class:`Unprocessable` naming the first baseline that fails and why otherwise."""
    ref = f"{candidate.name}@{candidate.version}"
    baselines = replaced_versions(candidate=candidate, targets=targets)
    if not baselines:
        raise Unprocessable(
            f"require_compare: {ref} replaces no version (no targeted device runs "
            f"{candidate.name} and it has no parent) — nothing to compare against"
        )
    evidence: dict[str, Any] = {}
    for baseline in baselines:
        row = latest_against(
            session=session, name=candidate.name, candidate=candidate.version, baseline=baseline
        )
        if row is None:
            raise Unprocessable(
                f"require_compare: {ref} has no stored comparison against {baseline}; run "
                f"'edgefleet fleet models compare {candidate.name} {baseline} "
                f"{candidate.version} --data ...'"
            )
        problem = regression(row, requirement)
        if problem:
            raise Unprocessable(
                f"require_compare: comparison {row.id} of {ref} against {baseline}: {problem}"
            )
        evidence[baseline] = {
            "comparison": row.id,
            "agreement": row.agreement,
            "accuracy_delta": row.accuracy_delta,
            "latency_ratio": row.latency_ratio,
        }
    return {"require_compare": requirement.model_dump(mode="json"), "comparisons": evidence}


def regression(row: ModelComparison, requirement: CompareRequirement) -> str | None:
    """Why the comparison regresses beyond the thresholds, or None when it does not."""
    drop = 1.0 - row.agreement
    if drop > requirement.max_agreement_drop:
        return (
            f"agreement {row.agreement:.3f} drops {drop:.3f} "
            f"(more than max_agreement_drop {requirement.max_agreement_drop:g})"
        )
    if requirement.max_accuracy_drop is not None:
        if row.accuracy_delta is None:
            return (
                "it has no labelled accuracy; compare with labels, or set max_accuracy_drop to null"
            )
        if -row.accuracy_delta > requirement.max_accuracy_drop:
            return (
                f"accuracy drops {-row.accuracy_delta:.3f} "
                f"(more than max_accuracy_drop {requirement.max_accuracy_drop:g})"
            )
    if row.latency_ratio > requirement.max_latency_ratio:
        return (
            f"latency ratio {row.latency_ratio:.2f} "
            f"(more than max_latency_ratio {requirement.max_latency_ratio:g})"
        )
    return None
