"""Bundle upload, listing and download over HTTP; hostile bundles are refused and change nothing."""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from edgefleet.artifact import pack_bundle, read_manifest
from edgefleet.signing import generate_keypair, sign_manifest
from fleet_server.runtime import Runtime
from tests.fleet_server.helpers import (
    bearer,
    file_member,
    make_settings,
    operator,
    rebundle,
    running_app,
    tar_gz,
    unique_id,
    upload,
)
from tests.utils.artifacts import build_digits_artifact

pytestmark = pytest.mark.integration


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_upload_list_show_download(app: tuple[TestClient, Runtime], digits_bundle: Path) -> None:
    client, runtime = app
    data = digits_bundle.read_bytes()
    created = upload(client, data)
    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["name"], body["version"], body["format"], body["precision"]) == (
        "digits",
        "1.0.0",
        "onnx",
        "fp32",
    )
    assert body["task"] == "classification" and body["signed"] is False
    assert body["sha256"] == _sha(data) and body["size"] == len(data)
    assert body["manifest"]["model_file"] == "model.onnx"

    listed = client.get("/api/v1/models", headers=operator()).json()
    assert [(m["name"], m["version"]) for m in listed] == [("digits", "1.0.0")]
    shown = client.get("/api/v1/models/digits/1.0.0", headers=operator())
    assert shown.status_code == 200 and shown.json()["manifest"] == body["manifest"]
    assert client.get("/api/v1/models/digits/9.9.9", headers=operator()).status_code == 404

    stored = runtime.settings.artifact_root / "digits" / "1.0.0.tar.gz"
    assert stored.read_bytes() == data

    full = client.get("/api/v1/models/digits/1.0.0/bundle", headers=operator())
    assert full.status_code == 200 and full.content == data
    assert full.headers["content-type"] == "application/gzip"
    assert full.headers["content-length"] == str(len(data))
    assert full.headers["etag"] == f'"{_sha(data)}"'

    part = client.get(
        "/api/v1/models/digits/1.0.0/bundle", headers={**operator(), "Range": "bytes=100-199"}
    )
    assert part.status_code == 206 and part.content == data[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(data)}"
    tail = client.get(
        "/api/v1/models/digits/1.0.0/bundle", headers={**operator(), "Range": "bytes=1000-"}
    )
    assert tail.status_code == 206 and tail.content == data[1000:]
    # The upload left no scratch files behind.
    assert list((runtime.settings.data_dir / "tmp").iterdir()) == []


def test_bundle_download_needs_assignment(
    app: tuple[TestClient, Runtime], digits_bundle: Path
) -> None:
    client, _ = app
    assert upload(client, digits_bundle).status_code == 201
    device_id = unique_id()
    token = client.post(
        "/api/v1/devices", json={"device_id": device_id}, headers=operator()
    ).json()["token"]
    url = "/api/v1/models/digits/1.0.0/bundle"
    assert client.get(url).status_code == 401
    assert client.get(url, headers=bearer("not-a-token")).status_code == 401
    denied = client.get(url, headers=bearer(token))
    assert denied.status_code == 404 and "for this device" in denied.json()["detail"]
    assigned = client.post(
        "/api/v1/assignments",
        json={"model": "digits", "version": "1.0.0", "device_ids": [device_id]},
        headers=operator(),
    )
    assert assigned.status_code == 200, assigned.text
    allowed = client.get(url, headers=bearer(token))
    assert allowed.status_code == 200 and allowed.content == digits_bundle.read_bytes()
    missing = client.get("/api/v1/models/digits/2.0.0/bundle", headers=bearer(token))
    assert missing.status_code == 404
    # A device token is not an operator token.
    assert client.get("/api/v1/models", headers=bearer(token)).status_code == 401


def _answer(response: Any) -> tuple[int, bytes, dict[str, str]]:
    """What a client can observe, less what differs between any two answers (the date)."""
    headers = {k: v for k, v in response.headers.items() if k.lower() != "date"}
    return response.status_code, response.content, headers


def test_a_device_cannot_tell_which_versions_exist(
    app: tuple[TestClient, Runtime], digits_bundle: Path
) -> None:
    """To a device, a version that exists but is not assigned to it and a version (or model)
    that does not exist get the same answer (status, body, headers), with or without Range or
    If-Range, and for HEAD; it used to be 403 "not assigned" against 404 "not found"."""
    client, _ = app
    assert upload(client, digits_bundle).status_code == 201
    device_id = unique_id()
    token = client.post(
        "/api/v1/devices", json={"device_id": device_id}, headers=operator()
    ).json()["token"]
    variants: list[tuple[str, dict[str, str]]] = [
        ("GET", {}),
        ("GET", {"Range": "bytes=0-"}),
        ("GET", {"Range": "bytes=10-19"}),
        ("GET", {"Range": "bytes=999999999-"}),
        ("GET", {"Range": "bytes=0-", "If-Range": '"not-the-etag"'}),
        ("HEAD", {}),
        ("HEAD", {"Range": "bytes=0-"}),
    ]

    def answers(name: str, version: str) -> list[tuple[int, bytes, dict[str, str]]]:
        url = f"/api/v1/models/{name}/{version}/bundle"
        return [
            _answer(client.request(method, url, headers={**bearer(token), **extra}))
            for method, extra in variants
        ]

    exists = answers("digits", "1.0.0")
    assert {status for status, _, _ in exists} <= {404, 405}, exists
    # Same length names, so the bodies (which echo the path) match byte for byte once renamed.
    missing_version = answers("digits", "9.9.9")
    missing_model = answers("zzzzzz", "1.0.0")
    rename = {b"digits@9.9.9": b"digits@1.0.0", b"zzzzzz@1.0.0": b"digits@1.0.0"}

    def renamed(rows: list[tuple[int, bytes, dict[str, str]]]) -> list[Any]:
        out = []
        for status, body, headers in rows:
            for old, new in rename.items():
                body = body.replace(old, new)
            out.append((status, body, headers))
        return out

    assert renamed(missing_version) == exists
    assert renamed(missing_model) == exists
    get = exists[0]
    assert get[0] == 404 and json.loads(get[1]) == {
        "detail": "no bundle digits@1.0.0 for this device"
    }

    # Once assigned, the device gets its version (ranges included); other names still 404.
    assigned = client.post(
        "/api/v1/assignments",
        json={"model": "digits", "version": "1.0.0", "device_ids": [device_id]},
        headers=operator(),
    )
    assert assigned.status_code == 200, assigned.text
    url = "/api/v1/models/digits/1.0.0/bundle"
    assert client.get(url, headers=bearer(token)).status_code == 200
    part = client.get(url, headers={**bearer(token), "Range": "bytes=10-19"})
    assert part.status_code == 206 and len(part.content) == 10
    assert renamed(answers("digits", "9.9.9")) == exists
    # An operator still learns what exists: 404 names the missing version, 416 the size.
    assert client.get("/api/v1/models/digits/9.9.9/bundle", headers=operator()).status_code == 404
    beyond = client.get(url, headers={**operator(), "Range": "bytes=999999999-"})
    size = digits_bundle.stat().st_size
    assert beyond.status_code == 416 and beyond.headers["content-range"] == f"bytes */{size}"
    assert beyond.json() == {"detail": f"range not satisfiable: the bundle has {size} bytes"}


def _hostile_bundles(artifact: Path, valid: bytes) -> dict[str, bytes]:
    manifest = json.loads((artifact / "manifest.json").read_text())
    symlink = file_member("link")
    symlink.type = tarfile.SYMTYPE
    symlink.linkname = "/etc/passwd"
    hardlink = file_member("hard")
    hardlink.type = tarfile.LNKTYPE
    hardlink.linkname = "model.onnx"
    bad_sha = dict(manifest)
    bad_sha["files"] = [dict(f, sha256="0" * 64) for f in manifest["files"]]
    wrong_type = dict(manifest, version=["not", "a", "string"])
    return {
        "manifest not json": rebundle(artifact, extra=[], manifest=b"{not json"),
        "manifest out of schema": rebundle(
            artifact, extra=[], manifest=json.dumps(wrong_type).encode()
        ),
        "sha mismatch": rebundle(artifact, extra=[], manifest=json.dumps(bad_sha).encode()),
        "truncated": valid[: len(valid) // 2],
        "corrupt": bytes(range(256)) * 20,
        "empty tar": tar_gz([]),
        "path traversal": rebundle(artifact, extra=[(file_member("../evil.txt"), b"x")]),
        "absolute path": rebundle(artifact, extra=[(file_member("/tmp/evil.txt"), b"x")]),
        "symlink": rebundle(artifact, extra=[(symlink, None)]),
        "hardlink": rebundle(artifact, extra=[(hardlink, None)]),
        "unlisted file": rebundle(artifact, extra=[(file_member("extra.bin"), b"x")]),
    }


def test_hostile_bundles_are_refused(
    app: tuple[TestClient, Runtime], digits_artifact: Path, digits_bundle: Path
) -> None:
    client, runtime = app
    valid = digits_bundle.read_bytes()
    assert upload(client, valid).status_code == 201
    # The same name and version again (different bytes): refused, original kept.
    other = build_digits_artifact(runtime.settings.data_dir.parent / "other", seed=1)
    other_bundle = pack_bundle(other, runtime.settings.data_dir.parent / "other.tar.gz")
    conflict = upload(client, other_bundle)
    assert conflict.status_code == 409 and "already exists" in conflict.json()["detail"]

    for label, data in _hostile_bundles(digits_artifact, valid).items():
        response = upload(client, data)
        assert response.status_code == 400, (label, response.text)
        detail = response.json()["detail"]
        assert detail.startswith("invalid bundle") and "\n" not in detail, (label, detail)

    assert upload(client, b"").status_code == 400
    no_field = client.post("/api/v1/models", files={"other": ("x", b"123")}, headers=operator())
    assert no_field.status_code == 400 and "bundle" in no_field.json()["detail"]
    not_multipart = client.post("/api/v1/models", content=valid, headers=operator())
    assert not_multipart.status_code == 415
    broken = client.post(
        "/api/v1/models",
        content=b'--xyz\r\nContent-Disposition: form-data; name="bundle"\r\n\r\nabc',
        headers={**operator(), "content-type": "multipart/form-data; boundary=xyz"},
    )
    assert broken.status_code == 400
    assert upload(client, valid, headers=bearer("wrong")).status_code == 401

    # Nothing stored was lost or replaced; nothing new appeared; no scratch files remain.
    listed = client.get("/api/v1/models", headers=operator()).json()
    assert [(m["name"], m["version"], m["sha256"]) for m in listed] == [
        ("digits", "1.0.0", _sha(valid))
    ]
    download = client.get("/api/v1/models/digits/1.0.0/bundle", headers=operator())
    assert download.content == valid
    files = sorted(
        p.relative_to(runtime.settings.artifact_root).as_posix()
        for p in runtime.settings.artifact_root.rglob("*")
        if p.is_file()
    )
    assert files == ["digits/1.0.0.tar.gz"]
    assert list((runtime.settings.data_dir / "tmp").iterdir()) == []


def _multipart(data: bytes, boundary: str = "edgefleetboundary") -> tuple[bytes, str]:
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="bundle"; '
        f'filename="b.tar.gz"\r\nContent-Type: application/gzip\r\n\r\n'
    ).encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), boundary


def test_oversized_upload_is_refused_while_streaming(
    tmp_path: Path, database_url: str, digits_bundle: Path
) -> None:
    data = digits_bundle.read_bytes()
    settings = make_settings(tmp_path, database_url, max_bundle_bytes=len(data) - 1)
    with running_app(settings) as (client, runtime):
        declared = upload(client, data)
        assert declared.status_code == 413, declared.text
        body, boundary = _multipart(data)
        chunks = [body[i : i + 4096] for i in range(0, len(body), 4096)]
        streamed = client.post(
            "/api/v1/models",
            content=iter(chunks),  # chunked: no Content-Length, the limit applies as bytes arrive
            headers={**operator(), "content-type": f"multipart/form-data; boundary={boundary}"},
        )
        assert streamed.status_code == 413, streamed.text
        assert "limit" in streamed.json()["detail"]
        assert client.get("/api/v1/models", headers=operator()).json() == []
        assert list((settings.data_dir / "tmp").iterdir()) == []
    with running_app(settings.model_copy(update={"max_bundle_bytes": len(data)})) as (client, _):
        body, boundary = _multipart(data)
        ok = client.post(
            "/api/v1/models",
            content=iter([body[i : i + 4096] for i in range(0, len(body), 4096)]),
            headers={**operator(), "content-type": f"multipart/form-data; boundary={boundary}"},
        )
        assert ok.status_code == 201, ok.text


def test_signed_bundles(tmp_path: Path, database_url: str, digits_artifact: Path) -> None:
    keys = tmp_path / "keys"
    generate_keypair(keys / "trusted.pem", keys / "trusted.pub.pem")
    generate_keypair(keys / "rogue.pem", keys / "rogue.pub.pem")

    def signed_bundle(version: str, private: Path) -> bytes:
        work = tmp_path / f"signed-{version}-{private.stem}"
        shutil.copytree(digits_artifact, work)
        manifest = read_manifest(work).model_copy(update={"version": version})
        signed = sign_manifest(manifest, private.read_bytes())
        (work / "manifest.json").write_text(signed.to_json())
        return pack_bundle(work, tmp_path / f"{work.name}.tar.gz").read_bytes()

    settings = make_settings(
        tmp_path, database_url, trusted_keys=[keys / "trusted.pub.pem"], require_signed=True
    )
    with running_app(settings) as (client, _):
        good = upload(client, signed_bundle("2.0.0", keys / "trusted.pem"))
        assert good.status_code == 201, good.text
        assert good.json()["signed"] is True
        rogue = upload(client, signed_bundle("2.0.1", keys / "rogue.pem"))
        assert rogue.status_code == 400 and "untrusted key" in rogue.json()["detail"]
        unsigned = upload(client, build_and_pack(tmp_path, "2.0.2"))
        assert unsigned.status_code == 400 and "signature" in unsigned.json()["detail"]
        versions = [m["version"] for m in client.get("/api/v1/models", headers=operator()).json()]
        assert versions == ["2.0.0"]


def build_and_pack(tmp_path: Path, version: str) -> bytes:
    artifact = build_digits_artifact(tmp_path / f"plain-{version}", version=version)
    return pack_bundle(artifact, tmp_path / f"plain-{version}.tar.gz").read_bytes()
