"""``edgefleet fleet`` commands for tags, pins, tokens, enrollment tokens, the audit log and
lineage, against the recording HTTP server: requests sent, output and exit codes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tests.fleet_server.client.conftest import FakeServer

DEVICE: dict[str, Any] = {
    "device_id": "pi-kitchen",
    "tags": ["canary", "lab"],
    "desired": {"name": "digits", "version": "1.0.0"},
    "pinned": {"name": "digits", "version": "1.0.0"},
}
TOKEN = {
    "id": 7,
    "name": "ci-pipeline",
    "role": "operator",
    "created_at": "2026-11-23T18:00:00Z",
    "created_by": "bootstrap",
    "revoked_at": None,
    "last_used_at": "2026-11-23T19:00:00Z",
}


def test_devices_tag(fleet: Any, fake_server: FakeServer) -> None:
    fake_server.route("PATCH", "/api/v1/devices/pi-kitchen/tags", json_body=DEVICE)
    result = fleet("devices", "tag", "pi-kitchen", "--add", "canary", "--remove", "north")
    assert result.code == 0, result.err
    request = fake_server.only_request()
    assert json.loads(request.body) == {"add": ["canary"], "remove": ["north"]}
    assert "pi-kitchen tags: canary, lab" in result.out


def test_devices_pin_and_unpin(fleet: Any, fake_server: FakeServer) -> None:
    fake_server.route("PUT", "/api/v1/devices/pi-kitchen/pin", json_body=DEVICE)
    fake_server.route(
        "DELETE", "/api/v1/devices/pi-kitchen/pin", json_body={**DEVICE, "pinned": None}
    )
    pinned = fleet("devices", "pin", "pi-kitchen", "digits", "1.0.0")
    assert pinned.code == 0, pinned.err
    assert json.loads(fake_server.requests[-1].body) == {"model": "digits", "version": "1.0.0"}
    assert "pinned to digits@1.0.0" in pinned.out
    unpinned = fleet("devices", "unpin", "pi-kitchen")
    assert unpinned.code == 0 and "unpinned" in unpinned.out
    assert fake_server.requests[-1].method == "DELETE"


def test_pin_refused_by_role(fleet: Any, fake_server: FakeServer) -> None:
    fake_server.route(
        "PUT",
        "/api/v1/devices/pi-kitchen/pin",
        status=403,
        json_body={"detail": "this needs the operator role; token 'ro' has viewer"},
    )
    result = fleet("devices", "pin", "pi-kitchen", "digits", "1.0.0")
    assert result.code == 1
    assert result.err == (
        "edgefleet fleet: 403: this needs the operator role; token 'ro' has viewer\n"
    )


def test_tokens_create_list_revoke(fleet: Any, fake_server: FakeServer) -> None:
    fake_server.route(
        "POST", "/api/v1/tokens", status=201, json_body={**TOKEN, "token": "secret-once"}
    )
    fake_server.route("GET", "/api/v1/tokens", json_body=[TOKEN])
    fake_server.route(
        "DELETE", "/api/v1/tokens/7", json_body={**TOKEN, "revoked_at": "2026-11-23T20:00:00Z"}
    )
    created = fleet("tokens", "create", "ci-pipeline", "--role", "operator")
    assert created.code == 0, created.err
    assert json.loads(fake_server.requests[-1].body) == {"name": "ci-pipeline", "role": "operator"}
    assert created.out.splitlines()[-1] == "secret-once"
    listed = fleet("tokens", "list")
    assert listed.code == 0
    for text in ("tokens (1)", "ci-pipeline", "operator", "bootstrap", "2026-11-23 19:00:00"):
        assert text in listed.out
    revoked = fleet("tokens", "revoke", "7")
    assert revoked.code == 0 and "revoked token ci-pipeline (id 7)" in revoked.out
    assert fake_server.requests[-1].path == "/api/v1/tokens/7"


def test_enrollment_token_create(fleet: Any, fake_server: FakeServer) -> None:
    answer = {
        "id": 3,
        "uses": 5,
        "uses_left": 5,
        "device_class": "rpi4",
        "tags": ["lab"],
        "expires_at": "2026-11-30T18:00:00Z",
        "created_at": "2026-11-23T18:00:00Z",
        "created_by": "ci-pipeline",
        "token": "enroll-once",
    }
    fake_server.route("POST", "/api/v1/enrollment-tokens", status=201, json_body=answer)
    result = fleet(
        "enrollment-tokens", "create", "--expires-in", "7d", "--uses", "5", "--class", "rpi4",
        "--tag", "lab",
    )  # fmt: skip
    assert result.code == 0, result.err
    assert json.loads(fake_server.only_request().body) == {
        "expires_in_s": 7 * 86400,
        "uses": 5,
        "device_class": "rpi4",
        "tags": ["lab"],
    }
    assert "5 use(s), expires 2026-11-30 18:00:00" in result.out
    assert result.out.splitlines()[-1] == "enroll-once"


def test_enrollment_tokens_list_and_revoke(fleet: Any, fake_server: FakeServer) -> None:
    row = {
        "id": 3,
        "uses": 5,
        "uses_left": 2,
        "device_class": "rpi4",
        "tags": ["lab", "north"],
        "expires_at": "2026-11-30T18:00:00Z",
        "created_at": "2026-11-23T18:00:00Z",
        "created_by": "ci-pipeline",
        "revoked_at": None,
        "state": "active",
    }
    fake_server.route("GET", "/api/v1/enrollment-tokens", json_body=[row])
    listed = fleet("enrollment-tokens", "list", "--active")
    assert listed.code == 0, listed.err
    assert "active" in listed.out and "2/5" in listed.out and "lab,north" in listed.out
    assert fake_server.requests[-1].query == {"active": ["true"]}
    revoked_row = {**row, "state": "revoked", "revoked_at": "2026-11-24T01:00:00Z"}
    fake_server.route("DELETE", "/api/v1/enrollment-tokens/3", json_body=revoked_row)
    revoked = fleet("enrollment-tokens", "revoke", "3")
    assert revoked.code == 0, revoked.err
    assert "revoked enrollment token 3 (2 of 5 uses were left)" in revoked.out


def test_audit_table_and_filters(fleet: Any, fake_server: FakeServer) -> None:
    row = {
        "id": 12,
        "ts": "2026-11-23T19:00:00Z",
        "actor": "ci-pipeline",
        "role": "operator",
        "method": "POST",
        "path": "/api/v1/assignments",
        "route": "/api/v1/assignments",
        "status_code": 200,
        "target": "model:digits@1.1.0",
        "detail": None,
    }
    fake_server.route("GET", "/api/v1/audit", json_body=[row])
    result = fleet("audit", "--actor", "ci-pipeline", "--since", "2026-11-23T00:00Z")
    assert result.code == 0, result.err
    assert fake_server.only_request().query == {
        "limit": ["50"],
        "actor": ["ci-pipeline"],
        "since": ["2026-11-23T00:00Z"],
    }
    for text in ("audit log (1)", "ci-pipeline", "/api/v1/assignments", "model:digits@1.1.0"):
        assert text in result.out


def test_models_push_sends_lineage_and_lineage_shows_the_chain(
    fleet: Any, fake_server: FakeServer, tmp_path: Path
) -> None:
    bundle = tmp_path / "m.tar.gz"
    bundle.write_bytes(b"not really a bundle; the fake server does not care")
    model = {"name": "digits", "version": "1.1.0", "size": 10, "sha256": "ab" * 32}
    fake_server.route("POST", "/api/v1/models", status=201, json_body=model)
    result = fleet(
        "models", "push", str(bundle), "--parent", "1.0.0", "--dataset-sha256", "AB" * 32,
        "--training-ref", "git:abc",
    )  # fmt: skip
    assert result.code == 0, result.err
    assert fake_server.only_request().query == {
        "parent": ["1.0.0"],
        "dataset_sha256": ["ab" * 32],
        "training_ref": ["git:abc"],
    }
    chain = [
        {"version": "1.1.0", "parent_version": "1.0.0", "dataset_sha256": "ab" * 32,
         "training_ref": "git:abc", "has_converter_report": True, "created_at": None},
        {"version": "1.0.0", "parent_version": None, "dataset_sha256": None,
         "training_ref": None, "has_converter_report": False, "created_at": None},
    ]  # fmt: skip
    fake_server.route(
        "GET",
        "/api/v1/models/digits/1.1.0/lineage",
        json_body={"name": "digits", "version": "1.1.0", "chain": chain, "truncated": True},
    )
    shown = fleet("models", "lineage", "digits", "1.1.0")
    assert shown.code == 0
    assert "lineage of digits@1.1.0 (2)" in shown.out and "git:abc" in shown.out
    assert "chain stops early" in shown.err


def test_assign_reports_skipped_pinned_devices(fleet: Any, fake_server: FakeServer) -> None:
    fake_server.route(
        "POST",
        "/api/v1/assignments",
        json_body={
            "model": "digits",
            "version": "2",
            "devices": ["a"],
            "skipped": ["p"],
            "incompatible": ["v7"],
        },
    )
    result = fleet("assign", "digits", "2", "--tag", "lab")
    assert result.code == 0
    assert "skipped 1 pinned device(s): p" in result.err and "1 device(s): a" in result.out
    assert "skipped 1 device(s) whose class cannot run its format: v7" in result.err


@pytest.mark.parametrize(
    "args",
    [
        ["tokens", "create", "x"],
        ["tokens", "create", "x", "--role", "root"],
        ["tokens", "revoke", "abc"],
        ["tokens", "revoke", "0"],
        ["enrollment-tokens", "create", "--expires-in", "soon"],
        ["enrollment-tokens", "create", "--uses", "0"],
        ["enrollment-tokens", "revoke", "0"],
        ["enrollment-tokens", "revoke", "x"],
        ["enrollment-tokens", "list", "--state", "active"],
        ["models", "push", "x", "--dataset-sha256", "xyz"],
        ["devices", "pin", "pi", "digits"],
        ["audit", "--limit", "0"],
    ],
)
def test_bad_arguments_are_usage_errors(
    fleet: Any, fake_server: FakeServer, args: list[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        fleet(*args)
    assert info.value.code == 2
    assert fake_server.requests == []


def test_drift_tables(fleet: Any, fake_server: FakeServer) -> None:
    status = {
        "model": "digits",
        "version": "1.0.0",
        "detector": "confidence_shift",
        "status": "drift",
        "value": 0.8312,
        "threshold": 0.25,
        "samples": 12000,
        "reference_samples": 72000,
        "since": "2026-11-24T01:00:00Z",
        "evaluated_at": "2026-11-24T01:05:00Z",
        "detail": "TV distance 0.831 over 10 bins",
    }
    alert = {"id": 4, "model": "digits", "version": "1.0.0", "detector": "confidence_shift",
             "value": 0.8312, "threshold": 0.25, "samples": 12000,
             "opened_at": "2026-11-24T01:00:00Z", "closed_at": None, "trigger_status": "sent",
             "trigger_detail": "HTTP 202", "triggered_at": "2026-11-24T01:00:01Z"}  # fmt: skip
    fake_server.route("GET", "/api/v1/drift", json_body={"statuses": [status], "alerts": [alert]})
    result = fleet("drift", "--limit", "5")
    assert result.code == 0, result.err
    assert "drift (1)" in result.out and "drift alerts (1)" in result.out
    assert "0.831" in result.out and "sent HTTP 202" in result.out
    assert fake_server.only_request().query == {"limit": ["5"]}
