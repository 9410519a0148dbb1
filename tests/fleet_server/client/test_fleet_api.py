"""FleetClient: what it sends for each endpoint, and model pushes (bundle file or artifact dir)."""

from __future__ import annotations

import io
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from edgefleet.artifact import unpack_bundle
from fleet_server.client.api import FleetClient, FleetClientError, FleetUnreachableError
from tests.utils.artifacts import build_digits_artifact

if TYPE_CHECKING:
    from tests.fleet_server.client.conftest import FakeServer, Recorded

PUSHED = {"name": "digits", "version": "2.0.0", "format": "onnx", "precision": "fp32",
          "task": "classification", "sha256": "ef" * 32, "size": 4096, "signed": False,
          "created_at": "2026-11-23T19:00:00Z", "manifest": {}}  # fmt: skip


def _upload(request: Recorded) -> tuple[str, str, bytes]:
    """(field name, filename, bytes) of the single multipart part."""
    message = BytesParser(policy=HTTP).parsebytes(
        f"Content-Type: {request.headers['content-type']}\r\n\r\n".encode() + request.body
    )
    parts = list(message.iter_parts())
    assert len(parts) == 1
    part = parts[0]
    payload = part.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return (
        str(part.get_param("name", header="content-disposition")),
        str(part.get_filename()),
        payload,
    )


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_digits_artifact(tmp_path_factory.mktemp("artifact") / "digits", version="2.0.0")


def test_push_an_artifact_directory_packs_it(
    fake_server: FakeServer, artifact: Path, tmp_path: Path
) -> None:
    fake_server.route("POST", "/api/v1/models", status=201, json_body=PUSHED)
    with FleetClient(fake_server.url, "t") as client:
        assert client.push_model(artifact) == PUSHED
    name, filename, data = _upload(fake_server.only_request())
    assert (name, filename) == ("bundle", "digits.tar.gz")
    manifest = unpack_bundle(io.BytesIO(data), tmp_path / "unpacked")
    assert (manifest.name, manifest.version) == ("digits", "2.0.0")


def test_push_a_bundle_file_sends_it_unchanged(fake_server: FakeServer, tmp_path: Path) -> None:
    bundle = tmp_path / "m.tar.gz"
    bundle.write_bytes(b"\x1f\x8b not really gzip, the server decides")
    fake_server.route("POST", "/api/v1/models", status=201, json_body=PUSHED)
    with FleetClient(fake_server.url, "t") as client:
        client.push_model(bundle)
    assert _upload(fake_server.only_request()) == ("bundle", "m.tar.gz", bundle.read_bytes())


def test_push_cli_prints_a_summary(fleet: Any, fake_server: FakeServer, artifact: Path) -> None:
    fake_server.route("POST", "/api/v1/models", status=201, json_body=PUSHED)
    result = fleet("models", "push", str(artifact))
    assert result.code == 0
    assert "registered digits@2.0.0 (4096 bytes, sha256 efefefefefef…, unsigned)" in result.out


def test_push_cli_says_when_a_signature_is_not_verified(
    fleet: Any, fake_server: FakeServer, artifact: Path
) -> None:
    body = {**PUSHED, "signature_status": "unverified", "signature_key_id": "0123456789abcdef"}
    fake_server.route("POST", "/api/v1/models", status=201, json_body=body)
    result = fleet("models", "push", str(artifact))
    assert result.code == 0
    assert "sha256 efefefefefef…, signature NOT verified)" in result.out
    assert "0123456789abcdef" in result.err and "rollouts refuse" in result.err


def test_push_server_refusal(fleet: Any, fake_server: FakeServer, artifact: Path) -> None:
    fake_server.route(
        "POST", "/api/v1/models", status=409, json_body={"detail": "digits@2.0.0 exists"}
    )
    result = fleet("models", "push", str(artifact))
    assert (result.code, result.err) == (1, "edgefleet fleet: 409: digits@2.0.0 exists\n")


def test_push_a_broken_artifact_fails_locally(
    fleet: Any, fake_server: FakeServer, artifact: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    for item in artifact.iterdir():
        (broken / item.name).write_bytes(item.read_bytes())
    model = next(p for p in broken.iterdir() if p.suffix == ".onnx")
    model.write_bytes(model.read_bytes()[:-1] + b"!")
    result = fleet("models", "push", str(broken))
    assert result.code == 1
    assert "cannot pack" in result.err and "sha256" in result.err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no manifest.json" in fleet("models", "push", str(empty)).err
    missing = fleet("models", "push", str(tmp_path / "missing.tar.gz"))
    assert missing.code == 1 and "is not a bundle file or an artifact directory" in missing.err
    assert fake_server.requests == []


def test_every_endpoint_path_and_method(fake_server: FakeServer) -> None:
    fake_server.route("GET", "/healthz", json_body={"status": "ok"})
    fake_server.route(
        "GET",
        "/api/v1/ingest/stats",
        json_body={"received": 1, "stored": 1, "duplicates": 0, "rejected": {}},
    )
    fake_server.route("GET", "/api/v1/models/a%20b/1%2B2", json_body=PUSHED)
    fake_server.route(
        "POST", "/api/v1/assignments", json_body={"model": "m", "version": "1", "devices": ["d"]}
    )
    with FleetClient(fake_server.url + "/", "t") as client:
        assert client.health() == {"status": "ok"}
        assert client.ingest_stats()["received"] == 1
        assert client.get_model("a b", "1+2") == PUSHED
        assert client.assign("m", "1", device_ids=["d"])["devices"] == ["d"]
    assert [(r.method, r.path) for r in fake_server.requests] == [
        ("GET", "/healthz"),
        ("GET", "/api/v1/ingest/stats"),
        ("GET", "/api/v1/models/a%20b/1%2B2"),
        ("POST", "/api/v1/assignments"),
    ]


def test_a_base_path_is_kept(fake_server: FakeServer) -> None:
    fake_server.route("GET", "/fleet/api/v1/models", json_body=[])
    with FleetClient(fake_server.url + "/fleet", None) as client:
        assert client.list_models() == []


@pytest.mark.parametrize("bad", ["", ".", ".."])
def test_empty_and_dot_identifiers_are_refused(fake_server: FakeServer, bad: str) -> None:
    with FleetClient(fake_server.url, "t") as client, pytest.raises(FleetClientError):
        client.get_device(bad)
    assert fake_server.requests == []


def test_uploads_may_take_longer_than_other_requests(
    fake_server: FakeServer, tmp_path: Path
) -> None:
    bundle = tmp_path / "m.tar.gz"
    bundle.write_bytes(b"bundle")
    fake_server.route("POST", "/api/v1/models", status=201, json_body=PUSHED, delay=0.6)
    fake_server.route("GET", "/api/v1/models", json_body=[], delay=0.6)
    with FleetClient(fake_server.url, "t", timeout=0.3, upload_timeout=3.0) as client:
        assert client.push_model(bundle) == PUSHED
        with pytest.raises(FleetUnreachableError, match="timed out"):
            client.list_models()
