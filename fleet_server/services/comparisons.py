"""Comparisons of two versions of a model: store one posted by an operator, read them back.

The figures are computed on the operator's machine (``edgefleet fleet models compare``); this
module only checks that both versions exist and keeps the result with the candidate. Its three
headline figures (agreement, accuracy delta, latency ratio) get their own columns so the
rollout check reads them without parsing the result.
"""

from __future__ import annotations

from sqlmodel import Session, col, select

from fleet_server.models.comparisons import (
    ComparisonCreate,
    ComparisonList,
    ComparisonPublic,
    ModelComparison,
)
from fleet_server.models.types import utcnow
from fleet_server.services.errors import Unprocessable
from fleet_server.services.models import get_model

#: Comparisons listed per candidate version, newest first.
LIST_LIMIT = 50


def store_comparison(
    *, session: Session, name: str, version: str, body: ComparisonCreate, actor: str
) -> ComparisonPublic:
    candidate = get_model(session=session, name=name, version=version)
    if body.baseline_version == version:
        raise Unprocessable("a version cannot be compared with itself")
    baseline = get_model(session=session, name=name, version=body.baseline_version)
    if baseline.task != candidate.task or body.task != candidate.task:
        raise Unprocessable(
            f"task mismatch: baseline is {baseline.task}, candidate is {candidate.task}, "
            f"the comparison says {body.task}"
        )
    row = ModelComparison(
        model_name=name,
        candidate_version=version,
        baseline_version=body.baseline_version,
        created_at=utcnow(),
        created_by=actor[:100],
        agreement=body.agreement,
        accuracy_delta=body.labelled.accuracy_delta if body.labelled else None,
        latency_ratio=body.latency.ratio,
        result=body.model_dump(mode="json"),
    )
    session.add(row)
    session.commit()
    session.refresh(row)
    return ComparisonPublic.of(row)


def list_comparisons(*, session: Session, name: str, version: str) -> ComparisonList:
    get_model(session=session, name=name, version=version)
    rows = session.exec(
        select(ModelComparison)
        .where(ModelComparison.model_name == name, ModelComparison.candidate_version == version)
        .order_by(col(ModelComparison.id).desc())
        .limit(LIST_LIMIT)
    ).all()
    items = [ComparisonPublic.of(r) for r in rows]
    return ComparisonList(latest=items[0] if items else None, items=items)


def latest_against(
    *, session: Session, name: str, candidate: str, baseline: str
) -> ModelComparison | None:
    """The newest comparison of ``candidate`` against ``baseline``, if any."""
    return session.exec(
        select(ModelComparison)
        .where(
            ModelComparison.model_name == name,
            ModelComparison.candidate_version == candidate,
            ModelComparison.baseline_version == baseline,
        )
        .order_by(col(ModelComparison.id).desc())
        .limit(1)
    ).first()
