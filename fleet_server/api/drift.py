"""/api/v1/drift (viewer): every detector's verdict per model version, and recent alerts."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from fleet_server.api.deps import VIEWER_REFUSALS, SessionDep, Viewer
from fleet_server.api.errors import INPUT_REFUSALS, error_responses
from fleet_server.models import DriftAlertPublic, DriftReport, DriftStatusPublic
from fleet_server.services.drift import drift_report

router = APIRouter(prefix="/drift", tags=["drift"])


@router.get("", responses=error_responses(VIEWER_REFUSALS, INPUT_REFUSALS))
def get_drift(
    session: SessionDep,
    _: Viewer,
    limit: Annotated[int, Query(ge=1, le=1000, description="Alerts, newest first.")] = 100,
) -> DriftReport:
    """Verdicts (ok, drift, insufficient) with value, threshold and samples, and alerts with
    what their retraining trigger did (none, pending, sent, failed, cooldown)."""
    statuses, alerts = drift_report(session, limit=limit)
    return DriftReport(
        statuses=[DriftStatusPublic.of(s) for s in statuses],
        alerts=[DriftAlertPublic.of(a) for a in alerts],
    )
