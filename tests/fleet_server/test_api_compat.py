"""A device class that cannot run an artifact's format is never sent it: assignments list it
as incompatible, pins and rollouts refuse or leave it out (fleet_server.services.compat)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fleet_server.runtime import Runtime
from fleet_server.services.compat import can_run, formats_for
from tests.fleet_server.helpers import (
    make_settings,
    operator,
    running_app,
    unique_id,
    wait_until,
)
from tests.utils.artifacts import signed_digits_bundles

pytestmark = pytest.mark.integration


def test_the_class_names_a_builtin_profile_or_restricts_nothing() -> None:
    assert formats_for("rpi-armv7") == frozenset({"tflite"})
    assert can_run(device_class="rpi-armv7", fmt="tflite")
    assert not can_run(device_class="rpi-armv7", fmt="onnx")
    assert can_run(device_class="rpi4", fmt="onnx") and can_run(device_class="rpi4", fmt="tflite")
    # Unknown or hostile classes are never read as a path: no restriction is known.
    for cls in (None, "", "my-own-board", "../../etc/passwd", "x.toml", "/dev/zero"):
        assert formats_for(cls) is None
        assert can_run(device_class=cls, fmt="onnx")


@pytest.fixture
def app(tmp_path: Path, database_url: str) -> Iterator[tuple[TestClient, Runtime, Path]]:
    bundles, key = signed_digits_bundles(tmp_path / "signed", ["1.0.0"])
    with running_app(make_settings(tmp_path, database_url, trusted_keys=[key])) as (client, rt):
        with bundles[0].open("rb") as fh:
            response = client.post(
                "/api/v1/models",
                files={"bundle": (bundles[0].name, fh, "application/gzip")},
                headers=operator(),
            )
        assert response.status_code == 201, response.text
        yield client, rt, bundles[0]


def _device(client: TestClient, device_class: str | None, tag: str) -> str:
    body = {"device_id": unique_id("c"), "device_class": device_class, "tags": [tag]}
    response = client.post("/api/v1/devices", json=body, headers=operator())
    assert response.status_code == 201, response.text
    return str(response.json()["device_id"])


def _desired(client: TestClient, device_id: str) -> object:
    return client.get(f"/api/v1/devices/{device_id}", headers=operator()).json()["desired"]


def test_an_onnx_model_is_not_sent_to_a_tflite_only_class(
    app: tuple[TestClient, Runtime, Path],
) -> None:
    client, _runtime, _bundle = app
    tag = unique_id("mixed")
    armv7 = _device(client, "rpi-armv7", tag)
    pi4 = _device(client, "rpi4", tag)
    custom = _device(client, None, tag)

    assigned = client.post(
        "/api/v1/assignments",
        json={"model": "digits", "version": "1.0.0", "tag": tag},
        headers=operator(),
    )
    assert assigned.status_code == 200, assigned.text
    body = assigned.json()
    assert body["devices"] == sorted([pi4, custom]) and body["incompatible"] == [armv7]
    assert _desired(client, armv7) is None
    assert _desired(client, pi4) == {"name": "digits", "version": "1.0.0"}

    # Named alone, it is still left alone (and said so), not an error that hides the others.
    alone = client.post(
        "/api/v1/assignments",
        json={"model": "digits", "version": "1.0.0", "device_ids": [armv7]},
        headers=operator(),
    )
    assert alone.status_code == 200 and alone.json()["devices"] == []
    assert alone.json()["incompatible"] == [armv7]

    pinned = client.put(
        f"/api/v1/devices/{armv7}/pin",
        json={"model": "digits", "version": "1.0.0"},
        headers=operator(),
    )
    assert pinned.status_code == 422 and "cannot run onnx" in pinned.json()["detail"]
    assert _desired(client, armv7) is None


def test_a_rollout_leaves_out_or_refuses_a_class_that_cannot_run_it(
    app: tuple[TestClient, Runtime, Path],
) -> None:
    client, _runtime, _bundle = app
    only = unique_id("armv7")
    _device(client, "rpi-armv7", only)
    refused = client.post(
        "/api/v1/rollouts",
        json={"model": "digits", "version": "1.0.0", "selector": {"tags": [only]}},
        headers=operator(),
    )
    assert refused.status_code == 422, refused.text
    assert "no selected device can run onnx" in refused.json()["detail"]
    assert "rpi-armv7" in refused.json()["detail"]

    tag = unique_id("mixed")
    armv7 = _device(client, "rpi-armv7", tag)
    pi4 = [_device(client, "rpi4", tag) for _ in range(2)]
    created = client.post(
        "/api/v1/rollouts",
        json={
            "model": "digits",
            "version": "1.0.0",
            "selector": {"tags": [tag]},
            "strategy": {"canary_percent": 50, "batches": [100], "soak_s": 30},
        },
        headers=operator(),
    )
    assert created.status_code == 201, created.text
    rid = created.json()["id"]
    report = client.get(f"/api/v1/rollouts/{rid}/report", headers=operator()).json()
    assert sorted(d["device_id"] for d in report["devices"]) == sorted(pi4)
    first = report["decisions"][0]
    assert first["action"] == "created" and "1 left out (cannot run onnx)" in first["reason"]
    assert first["evidence"]["incompatible"] == [armv7]
    assert _desired(client, armv7) is None
    # Devices that match later join the rollout, except those that cannot run it.
    late_armv7, late_pi4 = _device(client, "rpi-armv7", tag), _device(client, "rpi4", tag)

    def members() -> set[str]:
        shown = client.get(f"/api/v1/rollouts/{rid}/report", headers=operator()).json()
        return {d["device_id"] for d in shown["devices"]}

    wait_until(lambda: late_pi4 in members(), 30, "the late rpi4 to join", every=0.2)
    assert late_armv7 not in members() and armv7 not in members()
