"""/api/v1/charts (viewer): time series for the dashboard, down-sampled by the database."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query

from fleet_server.api.deps import VIEWER_REFUSALS, SessionDep, SettingsDep, Viewer
from fleet_server.api.errors import INPUT_REFUSALS, error_responses
from fleet_server.models.types import utcnow
from fleet_server.services import charts
from fleet_server.services.errors import Unprocessable

router = APIRouter(prefix="/charts", tags=["charts"])

_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
_CLASS = r"^[A-Za-z0-9._-]{0,64}$"


def _utc(name: str, value: datetime | None) -> datetime | None:
    """A timestamp without a zone is taken as UTC."""
    if value is None:
        return None
    try:
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)
    except OverflowError as err:
        raise Unprocessable(f"{name}: out of range") from err


@router.get("/latency", responses=error_responses(VIEWER_REFUSALS, INPUT_REFUSALS))
def latency(
    session: SessionDep,
    settings: SettingsDep,
    _: Viewer,
    model: Annotated[str, Query(pattern=_NAME, description="Model name.")],
    version: Annotated[
        list[str] | None,
        Query(max_length=charts.MAX_VERSIONS, description="Versions (default: the busiest)."),
    ] = None,
    since: Annotated[
        datetime | None, Query(description="Start (ISO 8601; default 24 h ago).")
    ] = None,
    until: Annotated[datetime | None, Query(description="End (ISO 8601; default now).")] = None,
    buckets: Annotated[
        int, Query(ge=1, le=charts.MAX_BUCKETS, description="Points per version, at most.")
    ] = 120,
    device_class: Annotated[
        str | None,
        Query(pattern=_CLASS, description="Only devices of this class ('' for none)."),
    ] = None,
) -> charts.LatencyChart:
    """Per version and time bucket: inferences, errors, error rate and interval p95 latency
    (mean and worst over the devices), summed in the database: from raw rows for buckets under
    5 minutes, else from the 5-minute roll-up (and raw rows after its mark)."""
    versions = version or []
    for v in versions:
        if len(v) > 63 or not v:
            raise Unprocessable("version: 1 to 63 characters")
    span = charts.window(
        since=_utc("since", since),
        until=_utc("until", until),
        buckets=buckets,
        now=utcnow(),
        raw_days=settings.telemetry_raw_days,
    )
    return charts.latency_series(
        session, model=model, versions=versions, span=span, device_class=device_class
    )
