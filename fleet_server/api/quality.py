"""/api/v1/models/{name}/{version}/quality (viewer): what labels say about a model version."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from fleet_server.api.deps import VIEWER_REFUSALS, SessionDep, Viewer
from fleet_server.api.errors import INPUT_REFUSALS, error_responses
from fleet_server.services.quality.service import version_quality

router = APIRouter(prefix="/models", tags=["quality"])


@router.get(
    "/{name}/{version}/quality", responses=error_responses(VIEWER_REFUSALS, INPUT_REFUSALS, 404)
)
def get_quality(name: str, version: str, session: SessionDep, _: Viewer) -> dict[str, Any]:
    """Accuracy (Wilson 95 % interval), per-class precision/recall/F1 and the confusion matrix
    for classifiers, mAP@0.5 for detectors — under ``subsets.random`` (the unbiased samples:
    the figure to quote) and ``subsets.all`` (every labelled sample, hard examples included),
    each overall and per device class, with its sample counts."""
    return version_quality(session, name, version)
