"""/api/v1/ingest"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from fleet_server.api.deps import Operator, RuntimeDep

router = APIRouter(prefix="/ingest", tags=["ingest"])


@router.get("/stats")
def ingest_stats(runtime: RuntimeDep, _: Operator) -> dict[str, Any]:
    return runtime.stats.snapshot()
