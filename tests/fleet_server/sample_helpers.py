"""Factories for sample tests: a registered device running digits@1.0.0 with a capture policy,
real JPEG / .npy contents, and the upload request a device makes."""

from __future__ import annotations

import hashlib
import io
import json
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from fastapi.testclient import TestClient

from tests.fleet_server.helpers import bearer, operator, unique_id, upload


def jpeg(seed: int = 0, side: int = 16) -> bytes:
    """A real JPEG (OpenCV, as the agent encodes them), different per seed."""
    import cv2

    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, size=(side, side, 3), dtype=np.uint8)
    ok, encoded = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, 85])
    assert ok
    return bytes(encoded.tobytes())


def npy(seed: int = 0) -> bytes:
    out = io.BytesIO()
    np.save(out, np.random.default_rng(seed).random((8, 8), dtype=np.float32))
    return out.getvalue()


def meta_for(
    content: bytes,
    device_id: str,
    *,
    sample_id: str | None = None,
    model: tuple[str, str] = ("digits", "1.0.0"),
    reason: str = "low_confidence",
    content_type: str = "image/jpeg",
    **overrides: Any,
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "schema_version": 2,
        "sample_id": sample_id or f"s-{secrets.token_hex(8)}",
        "device_id": device_id,
        "model": {"name": model[0], "version": model[1]},
        "captured_at": datetime.now(UTC).isoformat(),
        "reason": reason,
        "confidence": 0.31,
        "margin": 0.02,
        "predicted": "7",
        "outputs": [0.31, 0.29, 0.1],
        "content_type": content_type,
        "sha256": hashlib.sha256(content).hexdigest(),
        "size": len(content),
    }
    meta.update(overrides)
    return meta


def post_sample(
    client: TestClient, token: str, meta: dict[str, Any], content: bytes, *, filename: str = "x"
) -> Any:
    files = {
        "meta": (None, json.dumps(meta), "application/json"),
        # The declared type is what an attacker would lie with: the server sniffs instead.
        "file": (filename, content, "image/jpeg"),
    }
    return client.post("/api/v1/samples", files=files, headers=bearer(token))


def register(client: TestClient, device_id: str | None = None) -> tuple[str, str]:
    device_id = device_id or unique_id()
    response = client.post("/api/v1/devices", json={"device_id": device_id}, headers=operator())
    assert response.status_code == 201, response.text
    return device_id, str(response.json()["token"])


def assign(client: TestClient, device_ids: list[str], version: str = "1.0.0") -> None:
    response = client.post(
        "/api/v1/assignments",
        json={"model": "digits", "version": version, "device_ids": device_ids},
        headers=operator(),
    )
    assert response.status_code == 200, response.text


def set_policy(client: TestClient, version: str | None = None, **policy: Any) -> Any:
    path = "/api/v1/models/digits" + (f"/{version}" if version else "") + "/capture"
    response = client.put(path, json=policy, headers=operator())
    assert response.status_code == 200, response.text
    return response.json()


def fleet(
    client: TestClient, bundle: Path, devices: int = 1, **policy: Any
) -> list[tuple[str, str]]:
    """digits@1.0.0 uploaded, ``devices`` registered and assigned it, a capture policy set."""
    assert upload(client, bundle).status_code == 201
    made = [register(client) for _ in range(devices)]
    assign(client, [d for d, _ in made])
    set_policy(client, **({"low_confidence": 0.5} | policy))
    return made
