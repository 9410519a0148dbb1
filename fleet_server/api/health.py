"""Liveness, readiness and Prometheus metrics (no auth)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from fleet_server.api.deps import RuntimeDep
from fleet_server.api.errors import ErrorBody

router = APIRouter(tags=["health"])


class Readiness(BaseModel):
    """``status`` and one boolean per check (``database``, ``broker``, ``ingest``,
    ``ingest_workers``)."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "additionalProperties": {"type": "boolean"},
            "examples": [{"status": "ok", "database": True, "broker": True}],
        },
    )

    status: Literal["ok", "unavailable"] = Field(description="ok when every check passed.")


_NOT_READY: dict[str, Any] = {
    "model": Readiness | ErrorBody,
    "description": "A check failed (the body names it), or the server is not started (`detail`).",
}


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", response_model=Readiness, responses={503: _NOT_READY})
async def readyz(runtime: RuntimeDep) -> JSONResponse:
    checks = await run_in_threadpool(runtime.ready)
    ready = all(checks.values())
    return JSONResponse(
        {"status": "ok" if ready else "unavailable", **checks}, status_code=200 if ready else 503
    )


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {
            "description": "Prometheus text exposition.",
            "content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}},
        },
        503: {"model": ErrorBody, "description": "The server is not started."},
    },
)
def metrics(runtime: RuntimeDep) -> Response:
    return Response(generate_latest(runtime.metrics), media_type=CONTENT_TYPE_LATEST)
