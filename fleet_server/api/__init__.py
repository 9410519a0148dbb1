"""HTTP API v1: one router per resource, collected here."""

from fastapi import APIRouter

from fleet_server.api import (
    assignments,
    broker_auth,
    capture,
    charts,
    comparisons,
    datasets,
    devices,
    drift,
    enrollment,
    health,
    ingest,
    models,
    pipelines,
    quality,
    rollouts,
    samples,
    tokens,
)

api_router = APIRouter(prefix="/api/v1")
api_router.include_router(devices.router)
# Before models: GET /models/{name}/capture would otherwise match /models/{name}/{version}.
api_router.include_router(capture.router)
api_router.include_router(models.router)
api_router.include_router(comparisons.router)
api_router.include_router(samples.router)
api_router.include_router(datasets.router)
api_router.include_router(assignments.router)
api_router.include_router(ingest.router)
api_router.include_router(rollouts.router)
api_router.include_router(tokens.router)
api_router.include_router(enrollment.router)
api_router.include_router(drift.router)
api_router.include_router(quality.router)
api_router.include_router(charts.router)
api_router.include_router(pipelines.router)

root_router = health.router
#: Outside /api/ (and so outside the audit log): brokers call it per CONNECT and per publish.
broker_router = broker_auth.router

__all__ = ["api_router", "broker_router", "root_router"]
