"""/api/v1/ingest"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from fleet_server.api.deps import VIEWER_REFUSALS, RuntimeDep, Viewer
from fleet_server.api.errors import error_responses

router = APIRouter(prefix="/ingest", tags=["ingest"])


@router.get("/stats", responses=error_responses(VIEWER_REFUSALS))
def ingest_stats(runtime: RuntimeDep, _: Viewer) -> dict[str, Any]:
    return runtime.stats.snapshot()
