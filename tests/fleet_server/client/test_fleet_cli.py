"""``edgefleet fleet`` against a recording HTTP server: requests, output and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tests.fleet_server.client.conftest import FakeServer

DEVICE: dict[str, Any] = {
    "device_id": "pi-kitchen",
    "device_class": "rpi4",
    "tags": ["canary", "eu"],
    "online": True,
    "last_seen": "2026-11-23T19:00:00Z",
    "phase": "serving",
    "running": {"name": "digits", "version": "1.0.0"},
    "desired": {"name": "digits", "version": "1.1.0"},
    "agent_version": "0.1.0",
    "last_error": None,
    "last_telemetry": {
        "ts": "2026-11-23T19:00:00Z",
        "seq": 41,
        "model": {"name": "digits", "version": "1.0.0"},
        "inference_count": 1200,
        "error_count": 3,
        "latency_ms": {"p50": 1.25, "p95": 4.5},
    },
}
OFFLINE = {**DEVICE, "device_id": "pi-garage", "online": False, "last_telemetry": None,
           "running": None, "desired": None, "tags": []}  # fmt: skip
MODEL: dict[str, Any] = {
    "name": "digits",
    "version": "1.1.0",
    "format": "onnx",
    "precision": "fp32",
    "task": "classification",
    "sha256": "ab" * 32,
    "size": 5 * 1024 * 1024,
    "signed": True,
    "signature_status": "verified",
    "signature_key_id": "5bca89f140c09b2e",
    "created_at": "2026-11-23T18:00:00Z",
    "manifest": {
        "inputs": [{"name": "input", "shape": ["batch", 64], "dtype": "float32"}],
        "outputs": [{"name": "probabilities", "shape": ["batch", 10], "dtype": "float32"}],
        "files": [{"path": "model.onnx", "size": 2600, "sha256": "cd" * 32}],
    },
}
TELEMETRY = [
    {"seq": 42, "ts": "2026-11-23T19:00:10Z", "received_at": "2026-11-23T19:00:11Z",
     "model": {"name": "digits", "version": "1.1.0"}, "inference_count": 77, "error_count": 0,
     "errors": {}, "latency_ms": {"p50": 0.91, "p95": 1.73, "p99": 2.5}},
    {"seq": 41, "ts": "2026-11-23T19:00:00Z", "received_at": "2026-11-23T19:00:01Z",
     "model": None, "inference_count": 0, "error_count": 2, "errors": {"decode": 2},
     "latency_ms": None},
]  # fmt: skip


def test_devices_list_prints_a_table_and_sends_the_token(
    fleet: Any, fake_server: FakeServer
) -> None:
    fake_server.route("GET", "/api/v1/devices", json_body=[DEVICE, OFFLINE])
    result = fleet("devices", "list")
    assert result.code == 0, result.err
    request = fake_server.only_request()
    assert (request.method, request.path) == ("GET", "/api/v1/devices")
    assert request.headers["authorization"] == "Bearer op-token"
    assert "devices (2)" in result.out
    for text in ("pi-kitchen", "pi-garage", "canary, eu", "digits@1.0.0", "digits@1.1.0", "4.50"):
        assert text in result.out
    assert result.err == ""


def test_piped_output_is_plain_rows_never_cut(fleet: Any, fake_server: FakeServer) -> None:
    """Piped (80 columns or none), a table is a header and tab-separated rows, nothing cut;
    a device's tab or newline cannot split its row."""
    long_error = "decode failed: " + "x" * 300
    hostile = {**DEVICE, "device_id": "pi-\ttab", "last_error": long_error + "\nsecond line"}
    fake_server.route("GET", "/api/v1/devices", json_body=[hostile, OFFLINE])
    result = fleet("devices", "list", tty=False)
    assert result.code == 0, result.err
    header, *rows = result.out.splitlines()
    assert header.split("\t")[:3] == ["ID", "CLASS", "TAGS"] and "┃" not in result.out
    assert len(rows) == 2 and all(len(r.split("\t")) == len(header.split("\t")) for r in rows)
    first = dict(zip(header.split("\t"), rows[0].split("\t"), strict=True))
    assert first["ID"] == "pi- tab" and first["RUNNING"] == "digits@1.0.0"
    assert first["DESIRED"] == "digits@1.1.0" and first["LAST ERROR"] == long_error + " second line"
    fake_server.route("GET", "/api/v1/devices/pi-kitchen", json_body=DEVICE)
    shown = fleet("devices", "show", "pi-kitchen", tty=False)
    assert "desired\tdigits@1.1.0" in shown.out.splitlines()


@pytest.mark.parametrize("where", ["before", "after"])
def test_json_output_is_the_servers_json(fleet: Any, fake_server: FakeServer, where: str) -> None:
    fake_server.route("GET", "/api/v1/devices", json_body=[DEVICE, OFFLINE])
    args = ["--json", "devices", "list"] if where == "before" else ["devices", "list", "--json"]
    result = fleet(*args)
    assert result.code == 0
    assert json.loads(result.out) == [DEVICE, OFFLINE]


def test_devices_show(fleet: Any, fake_server: FakeServer) -> None:
    fake_server.route("GET", "/api/v1/devices/pi-kitchen", json_body=DEVICE)
    result = fleet("devices", "show", "pi-kitchen")
    assert result.code == 0
    for text in ("pi-kitchen", "rpi4", "serving", "latency p95 ms", "4.50", "1200"):
        assert text in result.out


def test_ids_cannot_walk_to_another_endpoint(fleet: Any, fake_server: FakeServer) -> None:
    result = fleet("devices", "show", "../models")
    assert result.code == 1
    assert fake_server.only_request().path == "/api/v1/devices/..%2Fmodels"
    assert fleet("devices", "show", "..").code == 1
    assert len(fake_server.requests) == 1  # '..' is refused before any request


def test_devices_add_posts_the_body_and_prints_the_token(
    fleet: Any, fake_server: FakeServer
) -> None:
    created = {
        "device_id": "pi-new",
        "device_class": "rpi5",
        "tags": ["a", "b"],
        "token": "tok-123",
    }
    fake_server.route("POST", "/api/v1/devices", status=201, json_body=created)
    result = fleet("devices", "add", "pi-new", "--class", "rpi5", "--tag", "a", "--tag", "b")
    assert result.code == 0
    request = fake_server.only_request()
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.body) == {
        "device_id": "pi-new",
        "device_class": "rpi5",
        "tags": ["a", "b"],
    }
    assert result.out.splitlines()[-1] == "tok-123"


def test_devices_add_without_class_or_tags(fleet: Any, fake_server: FakeServer) -> None:
    fake_server.route(
        "POST", "/api/v1/devices", status=201, json_body={"device_id": "x", "token": "t"}
    )
    assert fleet("devices", "add", "x", "--json").code == 0
    assert json.loads(fake_server.only_request().body) == {
        "device_id": "x",
        "device_class": None,
        "tags": [],
    }


def test_models_list_and_show(fleet: Any, fake_server: FakeServer) -> None:
    fake_server.route("GET", "/api/v1/models", json_body=[MODEL])
    fake_server.route("GET", "/api/v1/models/digits/1.1.0", json_body=MODEL)
    listed = fleet("models", "list")
    assert listed.code == 0
    for text in ("digits", "1.1.0", "onnx", "5.0 MiB", "abababababab", "verified"):
        assert text in listed.out
    shown = fleet("models", "show", "digits", "1.1.0")
    assert shown.code == 0
    for text in (
        "digits@1.1.0",
        "input float32[batch×64]",
        "model.onnx (2.5 KiB)",
        "ab" * 32,
        "verified",
        "5bca89f140c09b2e",
    ):
        assert text in shown.out


def test_assign_by_devices_and_by_tag(fleet: Any, fake_server: FakeServer) -> None:
    fake_server.route(
        "POST",
        "/api/v1/assignments",
        json_body={"model": "digits", "version": "1.1.0", "devices": ["a", "b"]},
    )
    result = fleet("assign", "digits", "1.1.0", "--device", "a", "--device", "b")
    assert result.code == 0
    assert "digits@1.1.0 → 2 device(s): a, b" in result.out
    assert json.loads(fake_server.requests[-1].body) == {
        "model": "digits",
        "version": "1.1.0",
        "device_ids": ["a", "b"],
        "tag": None,
    }
    assert fleet("assign", "digits", "1.1.0", "--tag", "canary").code == 0
    assert json.loads(fake_server.requests[-1].body) == {
        "model": "digits",
        "version": "1.1.0",
        "device_ids": [],
        "tag": "canary",
    }


def test_assign_matching_nothing_says_so(fleet: Any, fake_server: FakeServer) -> None:
    fake_server.route(
        "POST", "/api/v1/assignments", json_body={"model": "digits", "version": "1", "devices": []}
    )
    result = fleet("assign", "digits", "1", "--tag", "nobody")
    assert result.code == 0
    assert result.err == "edgefleet fleet: digits@1: the assignment matched no device\n"


@pytest.mark.parametrize(
    "args",
    [
        ["assign", "digits", "1"],
        ["assign", "digits", "1", "--device", "a", "--tag", "t"],
        ["telemetry", "pi", "--limit", "0"],
        ["telemetry", "pi", "--limit", "5000"],
        ["telemetry", "pi", "--limit", "ten"],
        ["devices"],
        ["models", "show", "digits"],
        ["--token", "a", "--token-file", "b", "devices", "list"],
    ],
)
def test_bad_arguments_are_usage_errors(
    fleet: Any, fake_server: FakeServer, args: list[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        fleet(*args)
    assert info.value.code == 2
    assert fake_server.requests == []


def test_telemetry_passes_the_limit_and_tabulates(fleet: Any, fake_server: FakeServer) -> None:
    fake_server.route("GET", "/api/v1/devices/pi-kitchen/telemetry", json_body=TELEMETRY)
    result = fleet("telemetry", "pi-kitchen", "--limit", "5")
    assert result.code == 0
    assert fake_server.only_request().query == {"limit": ["5"]}
    for text in (
        "telemetry of pi-kitchen (2)",
        "2026-11-23 19:00:11",
        "digits@1.1.0",
        "0.91",
        "2.50",
    ):
        assert text in result.out


def test_token_from_environment_and_server_from_environment(
    fleet: Any, fake_server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_server.route("GET", "/api/v1/models", json_body=[])
    monkeypatch.setenv("EDGEFLEET_TOKEN", "env-token")
    monkeypatch.setenv("EDGEFLEET_SERVER", fake_server.url)
    from tests.fleet_server.client.conftest import run_fleet

    assert run_fleet(["fleet", "models", "list"]) == 0
    assert fake_server.only_request().headers["authorization"] == "Bearer env-token"


def test_token_file(fleet: Any, fake_server: FakeServer, tmp_path: Path) -> None:
    fake_server.route("GET", "/api/v1/models", json_body=[])
    token_file = tmp_path / "token"
    token_file.write_text("file-token\n")
    assert fleet("models", "list", "--token-file", str(token_file), token=None).code == 0
    assert fake_server.only_request().headers["authorization"] == "Bearer file-token"


def test_no_token_sends_no_authorization(fleet: Any, fake_server: FakeServer) -> None:
    fake_server.route(
        "GET", "/api/v1/models", status=401, json_body={"detail": "missing bearer token"}
    )
    result = fleet("models", "list", token=None)
    assert result.code == 1
    assert "authorization" not in fake_server.only_request().headers
    assert result.err == "edgefleet fleet: 401: missing bearer token\n"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read token file"),
        (b"", "is empty"),
        (b"  \n", "is empty"),
        (b"x" * 5000, "larger than 4096 bytes"),
        (b"\xff\xfe", "not ASCII"),
    ],
)
def test_bad_token_files_exit_2(
    fleet: Any, fake_server: FakeServer, tmp_path: Path, content: bytes | None, message: str
) -> None:
    path = tmp_path / "token"
    if content is not None:
        path.write_bytes(content)
    result = fleet("devices", "list", "--token-file", str(path), token=None)
    assert result.code == 2
    assert message in result.err and result.err.count("\n") == 1
    assert fake_server.requests == []


def test_token_with_a_newline_is_refused_locally(fleet: Any, fake_server: FakeServer) -> None:
    result = fleet("devices", "list", token="abc\nInjected: header")  # noqa: S106
    assert result.code == 1
    assert "printable ASCII" in result.err
    assert fake_server.requests == []


def test_help_needs_neither_httpx_nor_rich() -> None:
    code = (
        "import sys; sys.modules['httpx'] = None; sys.modules['rich'] = None\n"
        "from edgefleet.cli import main\n"
        "try:\n    main(['fleet', 'devices', 'list', '--help'])\n"
        "except SystemExit as e:\n    assert e.code == 0\n"
        "sys.exit(main(['fleet', '--server', 'http://127.0.0.1:9', 'devices', 'list']))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert "usage: edgefleet fleet devices list" in proc.stdout
    assert proc.returncode == 3, proc.stderr
    assert "'cli' extra" in proc.stderr
