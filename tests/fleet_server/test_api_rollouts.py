"""/api/v1/rollouts over HTTP: create, read, operator actions, and every refusal changes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fleet_server.runtime import Runtime
from tests.fleet_server.helpers import make_settings, operator, running_app, unique_id
from tests.utils.artifacts import signed_digits_bundles

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], Path]:
    return signed_digits_bundles(tmp_path_factory.mktemp("signed"), ["1.0.0", "2.0.0"])


@pytest.fixture
def bundles(signed: tuple[list[Path], Path]) -> list[Path]:
    return signed[0]


@pytest.fixture
def app(
    tmp_path: Path, database_url: str, signed: tuple[list[Path], Path]
) -> Iterator[tuple[TestClient, Runtime]]:
    """A server that trusts the key the bundles are signed with (rollouts need it)."""
    with running_app(make_settings(tmp_path, database_url, trusted_keys=[signed[1]])) as started:
        yield started


def _upload(client: TestClient, bundle: Path) -> None:
    with bundle.open("rb") as fh:
        response = client.post(
            "/api/v1/models",
            files={"bundle": (bundle.name, fh, "application/gzip")},
            headers=operator(),
        )
    assert response.status_code == 201, response.text


def _fleet(client: TestClient, n: int, tag: str) -> list[str]:
    ids = []
    for i in range(n):
        body = {"device_id": unique_id(f"r{i}"), "device_class": "rpi4", "tags": [tag]}
        response = client.post("/api/v1/devices", json=body, headers=operator())
        assert response.status_code == 201, response.text
        ids.append(response.json()["device_id"])
    return ids


def _spec(tag: str, **extra: Any) -> dict[str, Any]:
    return {"model": "digits", "version": "2.0.0", "selector": {"tags": [tag]}, **extra}


def test_create_read_and_operate_a_rollout(
    app: tuple[TestClient, Runtime], bundles: list[Path]
) -> None:
    client, _runtime = app
    for bundle in bundles:
        _upload(client, bundle)
    tag = unique_id("fleet")
    ids = _fleet(client, 10, tag)

    created = client.post(
        "/api/v1/rollouts",
        json=_spec(tag, strategy={"canary_percent": 10, "batches": [100], "soak_s": 30}),
        headers=operator(),
    )
    assert created.status_code == 201, created.text
    rollout = created.json()
    assert rollout["state"] == "running" and rollout["stage_name"] == "canary"
    assert rollout["counts"]["assigned"] == 1 and rollout["counts"]["pending"] == 9
    assert [s["devices"] for s in rollout["stages"]] == [1, 10]
    rid = rollout["id"]
    desired = [
        client.get(f"/api/v1/devices/{d}", headers=operator()).json()["desired"] for d in ids
    ]
    assert sum(1 for d in desired if d == {"name": "digits", "version": "2.0.0"}) == 1

    metrics = client.get("/metrics").text
    assert 'edgefleet_rollouts{state="running"} 1.0' in metrics
    assert (
        f'edgefleet_rollout_devices{{model="digits@2.0.0",rollout="{rid}",status="assigned"}} 1.0'
        in (metrics)
    )
    assert 'edgefleet_devices{status="offline"} 10.0' in metrics

    listed = client.get("/api/v1/rollouts", headers=operator()).json()
    assert [r["id"] for r in listed] == [rid]
    assert client.get("/api/v1/rollouts?state=completed", headers=operator()).json() == []
    shown = client.get(f"/api/v1/rollouts/{rid}", headers=operator()).json()
    assert shown["last_evaluation"]["stage_name"] == "canary"

    paused = client.post(
        f"/api/v1/rollouts/{rid}/pause", json={"reason": "lunch"}, headers=operator()
    )
    assert paused.status_code == 200 and paused.json()["state"] == "paused"
    again = client.post(f"/api/v1/rollouts/{rid}/pause", headers=operator())
    assert again.status_code == 409 and "paused" in again.json()["detail"]
    assert client.post(f"/api/v1/rollouts/{rid}/resume", headers=operator()).json()["state"] == (
        "running"
    )
    aborted = client.post(
        f"/api/v1/rollouts/{rid}/abort", json={"reason": "test"}, headers=operator()
    )
    assert aborted.status_code == 200 and aborted.json()["state"] in ("aborting", "aborted")

    report = client.get(f"/api/v1/rollouts/{rid}/report", headers=operator()).json()
    actions = [d["action"] for d in report["decisions"]]
    assert actions[:1] == ["created"] and "pause" in actions and "abort" in actions
    assert next(d for d in report["decisions"] if d["action"] == "pause")["reason"] == "lunch"
    assert len(report["devices"]) == 10
    assert report["differential"]["new_version"] == "digits@2.0.0"


def test_refusals_are_clear_and_change_nothing(
    app: tuple[TestClient, Runtime], bundles: list[Path]
) -> None:
    client, _runtime = app
    for bundle in bundles:
        _upload(client, bundle)
    tag = unique_id("fleet")
    _fleet(client, 3, tag)
    bad_bodies: list[tuple[Any, int, str]] = [
        ({"model": "digits", "version": "2.0.0", "selector": {}}, 422, "selector is empty"),
        (_spec(tag, strategy={"batches": [50, 90]}), 422, "must be 100"),
        (_spec(tag, strategy={"batches": [60, 50, 100]}), 422, "must increase"),
        (_spec(tag, strategy={"soak_s": -1}), 422, "soak_s"),
        (
            _spec(tag, strategy={"maintenance_window": {"start": "02:00", "end": "02:00"}}),
            422,
            "empty",
        ),
        (_spec(tag, gates={"latency_p95_ratio": {"max_ratio": 0}}), 422, "max_ratio"),
        (_spec(tag, surprise=1), 422, "surprise"),
        (_spec(tag, name="x" * 500), 422, "name"),
        ({**_spec(tag), "selector": {"tags": ["bad tag!"]}}, 422, "invalid tag"),
        ({**_spec(tag), "version": "../../etc"}, 422, "version"),
        ([1, 2, 3], 422, ""),
        (_spec(tag, version="9.9.9"), 404, "not found"),
        ({**_spec(tag), "selector": {"tags": ["nobody"]}}, 422, "matches no device"),
        ({**_spec(tag), "selector": {"device_ids": ["ghost-1"]}}, 404, "unknown device"),
    ]
    for body, status, needle in bad_bodies:
        response = client.post("/api/v1/rollouts", json=body, headers=operator())
        assert response.status_code == status, (body, response.text)
        assert needle in response.text, (needle, response.text)
    first = client.post("/api/v1/rollouts", json=_spec(tag), headers=operator())
    assert first.status_code == 201, first.text
    overlapping = client.post("/api/v1/rollouts", json=_spec(tag), headers=operator())
    assert overlapping.status_code == 409 and "another active rollout" in overlapping.text
    # Unauthenticated and unknown ids.
    assert client.post("/api/v1/rollouts", json=_spec(tag)).status_code == 401
    assert client.get("/api/v1/rollouts").status_code == 401
    for verb in ("pause", "resume", "approve", "abort"):
        assert client.post(f"/api/v1/rollouts/1/{verb}").status_code == 401
        assert client.post(f"/api/v1/rollouts/99999/{verb}", headers=operator()).status_code == 404
    assert client.get("/api/v1/rollouts/99999", headers=operator()).status_code == 404
    assert client.get("/api/v1/rollouts/abc", headers=operator()).status_code == 422
    response = client.post(
        "/api/v1/rollouts/1/pause", json={"reason": "x" * 10_000}, headers=operator()
    )
    assert response.status_code == 422
    assert len(client.get("/api/v1/rollouts", headers=operator()).json()) == 1


def test_unsigned_models_cannot_be_rolled_out(
    app: tuple[TestClient, Runtime], digits_bundle: Path
) -> None:
    client, _runtime = app
    _upload(client, digits_bundle)  # digits@1.0.0, no signature
    tag = unique_id("fleet")
    _fleet(client, 2, tag)
    response = client.post(
        "/api/v1/rollouts", json={**_spec(tag), "version": "1.0.0"}, headers=operator()
    )
    assert response.status_code == 422 and "not signed" in response.json()["detail"]
    assert client.get("/api/v1/rollouts", headers=operator()).json() == []


def test_openapi_documents_rollouts(app: tuple[TestClient, Runtime]) -> None:
    client, _ = app
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    for path in (
        "/api/v1/rollouts",
        "/api/v1/rollouts/{rollout_id}",
        "/api/v1/rollouts/{rollout_id}/report",
        "/api/v1/rollouts/{rollout_id}/abort",
    ):
        assert path in paths
    assert schema["components"]["schemas"]["RolloutCreate"]["examples"]


def test_a_rollout_with_a_shadow_stage_over_http(
    app: tuple[TestClient, Runtime], bundles: list[Path]
) -> None:
    """Created in shadow: the devices get the candidate as their shadow and keep the old model;
    it cannot be paused (a resume would skip the stage), an abort takes the shadows off."""
    from sqlmodel import Session, select

    from fleet_server.models import DeviceShadow
    from tests.fleet_server.sample_helpers import assign

    client, runtime = app
    for bundle in bundles:
        _upload(client, bundle)
    tag = unique_id("fleet")
    ids = _fleet(client, 3, tag)
    body = _spec(tag, strategy={"shadow": {"shadow_s": 60}})
    unserved = client.post("/api/v1/rollouts", json=body, headers=operator())
    assert unserved.status_code == 422 and "no selected device" in unserved.text
    assign(client, ids)
    for shadow, needle in (
        ({"shadow_s": 0}, "shadow_s"),
        ({"shadow_s": 60, "min_agreement": 2}, "min_agreement"),
        ({"shadow_s": 60, "cpu": 1}, "cpu"),
        ([60], "shadow"),
    ):
        response = client.post(
            "/api/v1/rollouts", json=_spec(tag, strategy={"shadow": shadow}), headers=operator()
        )
        assert response.status_code == 422 and needle in response.text, response.text
    assert client.get("/api/v1/rollouts", headers=operator()).json() == []

    created = client.post(
        "/api/v1/rollouts",
        json=_spec(tag, strategy={"shadow": {"shadow_s": 60, "sample_rate": 0.25}}),
        headers=operator(),
    )
    assert created.status_code == 201, created.text
    rollout = created.json()
    assert (rollout["state"], rollout["stage_name"]) == ("shadowing", "shadow")
    assert rollout["actions"] == ["abort"]
    for device_id in ids:
        device = client.get(f"/api/v1/devices/{device_id}", headers=operator()).json()
        assert device["desired"] == {"name": "digits", "version": "1.0.0"}
    assert runtime.engine is not None
    with Session(runtime.engine) as session:
        rows = session.exec(select(DeviceShadow)).all()
    assert {(r.device_id, r.model_version, r.sample_rate) for r in rows} == {
        (d, "2.0.0", 0.25) for d in ids
    }
    rid = rollout["id"]
    refused = client.post(f"/api/v1/rollouts/{rid}/pause", headers=operator())
    assert refused.status_code == 409 and "shadowing" in refused.text
    report = client.get(f"/api/v1/rollouts/{rid}/report", headers=operator()).json()
    assert report["differential"]["shadow"]["outcome"] == "in progress"
    assert report["differential"]["shadow"]["devices"] == 3
    assert client.post(f"/api/v1/rollouts/{rid}/abort", headers=operator()).json()["state"] == (
        "aborted"
    )
    with Session(runtime.engine) as session:
        assert session.exec(select(DeviceShadow)).all() == []
