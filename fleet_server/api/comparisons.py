"""/api/v1/models/{name}/{version}/compare: comparisons of this (candidate) version against
the version it would replace, as posted by ``edgefleet fleet models compare``."""

from __future__ import annotations

from fastapi import APIRouter, Request

from fleet_server.api.deps import (
    OPERATOR_REFUSALS,
    VIEWER_REFUSALS,
    Operator,
    SessionDep,
    Viewer,
    note_target,
)
from fleet_server.api.errors import BODY_REFUSALS, INPUT_REFUSALS, error_responses
from fleet_server.models.comparisons import ComparisonCreate, ComparisonList, ComparisonPublic
from fleet_server.services import comparisons as service

router = APIRouter(prefix="/models", tags=["models"])


@router.post(
    "/{name}/{version}/compare",
    status_code=201,
    responses=error_responses(
        OPERATOR_REFUSALS,
        BODY_REFUSALS,
        404,
        why={
            404: "No such candidate or baseline version.",
            422: "Invalid body, a version compared with itself, or tasks that differ.",
        },
    ),
)
def post_comparison(
    name: str,
    version: str,
    body: ComparisonCreate,
    request: Request,
    session: SessionDep,
    who: Operator,
) -> ComparisonPublic:
    """Store a comparison of this version (the candidate) against ``baseline_version``."""
    stored = service.store_comparison(
        session=session, name=name, version=version, body=body, actor=who.actor
    )
    note_target(request, f"model:{name}@{version}", baseline=body.baseline_version)
    return stored


@router.get(
    "/{name}/{version}/compare", responses=error_responses(VIEWER_REFUSALS, INPUT_REFUSALS, 404)
)
def get_comparisons(name: str, version: str, session: SessionDep, _: Viewer) -> ComparisonList:
    """The latest comparison of this version and the list (newest first, at most 50)."""
    return service.list_comparisons(session=session, name=name, version=version)
