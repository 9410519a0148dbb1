"""The ``pipeline`` retraining backend: a trigger becomes a queued pipeline run that the driver
advances (at most one unfinished run per model: a trigger while one runs is refused, and the
alert records why)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session

from fleet_server.models.types import utcnow
from fleet_server.services.errors import ServiceError
from fleet_server.services.pipelines.config import PipelineRetrainConfig
from fleet_server.services.pipelines.service import start_run


class RunRefused(Exception):
    """No run was started (the caller turns it into its own error)."""


def record_run(engine: Engine, payload: dict[str, Any], *, source: str) -> int:
    """Start a run for ``payload``; its id, or RunRefused with the reason."""
    with Session(engine) as session:
        try:
            run = start_run(session, payload=payload, source=source, now=utcnow())
        except ServiceError as err:
            raise RunRefused(str(err)) from err
    assert run.id is not None
    return run.id


class PipelineBackend:
    name = "pipeline"

    def __init__(self, config: PipelineRetrainConfig, engine: Engine) -> None:
        self.config = config
        self.engine = engine

    def start(self, payload: dict[str, Any]) -> str:
        model = str(payload.get("model", ""))
        if model not in self.config.models:
            raise RunRefused(f"no pipeline is configured for {model}")
        return f"pipeline run #{record_run(self.engine, payload, source='pipeline')} queued"
