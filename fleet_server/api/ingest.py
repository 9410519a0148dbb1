"""/api/v1/ingest"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from fleet_server.api.deps import RuntimeDep, Viewer

router = APIRouter(prefix="/ingest", tags=["ingest"])


@router.get("/stats")
def ingest_stats(runtime: RuntimeDep, _: Viewer) -> dict[str, Any]:
    return runtime.stats.snapshot()
