"""Retraining triggers: what the server calls when a drift alert opens.

A :class:`RetrainBackend` gets one JSON object (the alert: model, version, detector, value,
threshold, samples, window) and either hands it on or raises :class:`RetrainError`. Two backends,
registered by hand in :data:`BACKENDS`: ``command`` runs a local program with the JSON on stdin
(and the main fields as ``EDGEFLEET_*`` variables), ``webhook`` POSTs it to a URL, signed with
HMAC-SHA256 when a secret is set (``X-EdgeFleet-Signature: sha256=<hex>`` over the exact body).
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
    timeout_s: float = Field(default=10.0, gt=0, le=300)

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        return value


RetrainConfig = Annotated[CommandRetrainConfig | WebhookRetrainConfig, Field(discriminator="type")]


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

    def __init__(self, config: CommandRetrainConfig) -> None:
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

    def __init__(self, config: WebhookRetrainConfig) -> None:
        self.config = config

    def trigger(self, payload: dict[str, Any]) -> str:
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


#: config type → backend (hand-written registry).
BACKENDS = {
    "command": CommandBackend,
    "webhook": WebhookBackend,
}


def backend_for(config: CommandRetrainConfig | WebhookRetrainConfig) -> RetrainBackend:
    factory: Any = BACKENDS[config.type]
    backend: RetrainBackend = factory(config)
    return backend
