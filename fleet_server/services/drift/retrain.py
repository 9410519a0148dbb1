"""Retraining triggers: what the server calls when a drift alert opens.

A :class:`RetrainBackend` gets one JSON object (the alert: model, version, detector, value,
threshold, samples, window) and either hands it on or raises :class:`RetrainError`. Three
backends, registered by hand in :data:`BACKENDS`: ``command`` runs a local program with the JSON
on stdin (and the main fields as ``EDGEFLEET_*`` variables), ``webhook`` POSTs it to a URL,
signed with HMAC-SHA256 when a secret is set (``X-EdgeFleet-Signature: sha256=<hex>`` over the
exact body), ``pipeline`` queues a run of the server's own retraining pipeline
(:mod:`fleet_server.services.pipelines`). The webhook records a pipeline run too (state
``running``, ``source`` webhook) and sends its ``pipeline_run`` id and ``report_path``: the
external engine reports its steps there, and the run is shown like a server-driven one; a run
whose engine goes silent for ``report_timeout_s`` is failed by
:class:`fleet_server.services.pipelines.webhook_watch.WebhookRunWatch`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import urllib.error
import urllib.request
from typing import Annotated, Any, Literal, Protocol
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from sqlalchemy import Engine

from edgefleet.contract.pydantic_types import ModelName
from fleet_server.services.pipelines.config import PipelineRetrainConfig


class RetrainError(Exception):
    """The backend could not take the trigger; the alert records why."""


class CommandRetrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["command"] = Field(description="Run a local program.")
    argv: list[str] = Field(
        min_length=1, max_length=64, description="Program and arguments (no shell)."
    )
    timeout_s: float = Field(default=60.0, gt=0, le=3600, description="Killed after this long.")


class WebhookRetrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["webhook"] = Field(description="POST the alert as JSON to a URL.")
    url: str = Field(max_length=2048, description="http(s) URL of the user's pipeline.")
    secret: SecretStr | None = Field(
        default=None, description="Signs the body: X-EdgeFleet-Signature: sha256=<hmac hex>."
    )
    timeout_s: float = Field(default=10.0, gt=0, le=300, description="The POST's timeout.")
    report_timeout_s: float = Field(
        default=6 * 3600.0,
        gt=0,
        le=30 * 86_400,
        description="A run the engine took fails (and opens an alert) when no step report "
        "arrived for this long, since the trigger or its last report: an engine reports each "
        "step as it starts, so silence this long means it lost the run.",
    )
    report_timeouts_s: dict[ModelName, Annotated[float, Field(gt=0, le=30 * 86_400)]] = Field(
        default_factory=dict,
        max_length=1000,
        description="Per model name: its own report_timeout_s (a model that trains for a "
        "day needs more than one that trains for minutes).",
    )

    def report_timeout_for(self, model: str) -> float:
        return self.report_timeouts_s.get(model, self.report_timeout_s)

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        return value


AnyRetrainConfig = CommandRetrainConfig | WebhookRetrainConfig | PipelineRetrainConfig
RetrainConfig = Annotated[AnyRetrainConfig, Field(discriminator="type")]


class RetrainBackend(Protocol):
    name: str

    def trigger(self, payload: dict[str, Any]) -> str:
        """Hand the alert on; a short detail on success, RetrainError on failure."""
        ...


def _env(payload: dict[str, Any]) -> dict[str, str]:
    keys = ("model", "version", "detector", "value", "threshold", "alert_id")
    return {f"EDGEFLEET_{k.upper()}": str(payload.get(k, "")) for k in keys}


class CommandBackend:
    name = "command"

    def __init__(self, config: CommandRetrainConfig, engine: Engine | None = None) -> None:
        self.config = config

    def trigger(self, payload: dict[str, Any]) -> str:
        body = json.dumps(payload, sort_keys=True)
        try:
            done = subprocess.run(  # noqa: S603 - argv from the operator's settings, no shell
                self.config.argv,
                input=body,
                capture_output=True,
                text=True,
                timeout=self.config.timeout_s,
                env={**os.environ, **_env(payload)},
                check=False,
            )
        except (OSError, subprocess.SubprocessError) as err:
            raise RetrainError(f"{self.config.argv[0]}: {err}"[:500]) from err
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or [""]
            raise RetrainError(f"{self.config.argv[0]} exited {done.returncode}: {tail[0]}"[:500])
        return f"{self.config.argv[0]} exited 0"


class WebhookBackend:
    name = "webhook"

    def __init__(self, config: WebhookRetrainConfig, engine: Engine | None = None) -> None:
        self.config = config
        self.engine = engine

    def trigger(self, payload: dict[str, Any]) -> str:
        """POST the alert; with a database, first record the run the engine reports back to."""
        from fleet_server.services.pipelines.backend import RunRefused, record_run

        run_id = None
        if self.engine is not None:
            try:
                run_id = record_run(self.engine, payload, source="webhook")
            except RunRefused as err:
                raise RetrainError(str(err)) from err
            payload = {**payload, "pipeline_run": run_id,
                       "report_path": f"/api/v1/pipelines/runs/{run_id}/steps"}  # fmt: skip
        try:
            return self._post(payload) + (f"; pipeline run #{run_id}" if run_id else "")
        except RetrainError as err:
            if run_id is not None:
                _fail_run(self.engine, run_id, str(err))
            raise

    def _post(self, payload: dict[str, Any]) -> str:
        body = json.dumps(payload, sort_keys=True).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "edgefleet-drift"}
        if self.config.secret is not None:
            key = self.config.secret.get_secret_value().encode()
            headers["X-EdgeFleet-Signature"] = (
                "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()
            )
        request = urllib.request.Request(self.config.url, data=body, headers=headers)  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=self.config.timeout_s) as response:  # noqa: S310
                return f"HTTP {response.status}"
        except urllib.error.HTTPError as err:
            raise RetrainError(f"webhook answered HTTP {err.code}") from err
        except (urllib.error.URLError, OSError, ValueError) as err:
            reason = getattr(err, "reason", err)
            raise RetrainError(f"webhook failed: {reason}"[:500]) from err


def _fail_run(engine: Engine | None, run_id: int, error: str) -> None:
    """The webhook never reached the engine: its run fails (and opens an alert) at once."""
    from sqlmodel import Session

    from fleet_server.models.types import utcnow
    from fleet_server.services.pipelines import records

    assert engine is not None
    with Session(engine) as session:
        run = records.get_run(session, run_id)
        records.transition(session, run, "failed", now=utcnow(), error=f"webhook: {error}")
        session.commit()


class PipelineTrigger:
    """The ``pipeline`` backend as the drift job calls it."""

    name = "pipeline"

    def __init__(self, config: PipelineRetrainConfig, engine: Engine | None = None) -> None:
        from fleet_server.services.pipelines.backend import PipelineBackend

        if engine is None:
            raise ValueError("the pipeline backend needs the server's database")
        self.backend = PipelineBackend(config, engine)

    def trigger(self, payload: dict[str, Any]) -> str:
        from fleet_server.services.pipelines.backend import RunRefused

        try:
            return self.backend.start(payload)
        except RunRefused as err:
            raise RetrainError(str(err)) from err


#: config type → backend (hand-written registry).
BACKENDS = {
    "command": CommandBackend,
    "webhook": WebhookBackend,
    "pipeline": PipelineTrigger,
}


def backend_for(config: AnyRetrainConfig, *, engine: Engine | None = None) -> RetrainBackend:
    factory: Any = BACKENDS[config.type]
    backend: RetrainBackend = factory(config, engine)
    return backend
