"""A signature counts only once a trusted key verified it (issue #11, finding 7), on SQLite and
PostgreSQL.

Before: on a server without trusted keys (the default) a bundle with 64 random bytes as its
signature was stored with ``signed: true`` and a rollout of it was created (201).
"""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from edgefleet.artifact import pack_bundle, read_manifest
from edgefleet.contract import Signature
from fleet_server.models import ModelVersion
from fleet_server.models.rollouts import Rollout
from fleet_server.runtime import Runtime
from tests.fleet_server.helpers import make_settings, operator, running_app, unique_id, upload
from tests.utils.artifacts import build_digits_artifact, signed_digits_bundles

pytestmark = pytest.mark.integration


def _garbage_signed_bundle(tmp_path: Path, version: str) -> bytes:
    artifact = build_digits_artifact(tmp_path / f"garbage-{version}", version=version)
    forged = Signature(key_id=secrets.token_hex(8), value=base64.b64encode(os.urandom(64)).decode())
    manifest = read_manifest(artifact).model_copy(update={"signature": forged})
    (artifact / "manifest.json").write_text(manifest.to_json())
    return pack_bundle(artifact, tmp_path / f"garbage-{version}.tar.gz").read_bytes()


def _device(client: TestClient, tag: str) -> None:
    body = {"device_id": unique_id("sig"), "device_class": "rpi4", "tags": [tag]}
    assert client.post("/api/v1/devices", json=body, headers=operator()).status_code == 201


def _rollout(client: TestClient, version: str, tag: str) -> tuple[int, str]:
    response = client.post(
        "/api/v1/rollouts",
        json={"model": "digits", "version": version, "selector": {"tags": [tag]}},
        headers=operator(),
    )
    return response.status_code, response.text


def test_a_random_signature_is_not_signed_and_cannot_be_rolled_out(
    app: tuple[TestClient, Runtime], tmp_path: Path
) -> None:
    client, runtime = app
    assert runtime.trusted_keys == []  # the default
    stored = upload(client, _garbage_signed_bundle(tmp_path, "6.6.6"))
    assert stored.status_code == 201, stored.text
    body = stored.json()
    assert body["signed"] is False, body
    assert body["signature_status"] == "unverified", body
    assert body["signature_key_id"] is not None
    listed = client.get("/api/v1/models", headers=operator()).json()
    assert [(m["signed"], m["signature_status"]) for m in listed] == [(False, "unverified")]

    tag = unique_id("fleet")
    _device(client, tag)
    status, text = _rollout(client, "6.6.6", tag)
    assert status == 422, text
    assert "unverified signature" in text and "no trusted keys" in text, text
    assert client.get("/api/v1/rollouts", headers=operator()).json() == []


def test_a_signature_counts_once_a_trusted_key_verifies_it(
    tmp_path: Path, database_url: str
) -> None:
    (bundle,), key = signed_digits_bundles(tmp_path / "signed", ["2.0.0"])
    tag = unique_id("fleet")
    # Uploaded to a server that trusts no key: recorded, not verified, not rolled out.
    with running_app(make_settings(tmp_path, database_url)) as (client, _):
        body = upload(client, bundle).json()
        assert (body["signed"], body["signature_status"]) == (False, "unverified"), body
        _device(client, tag)
        status, text = _rollout(client, "2.0.0", tag)
        assert status == 422 and "no trusted keys" in text, text
    # The same database, now trusting the key: the signature is checked again and counts.
    with running_app(make_settings(tmp_path, database_url, trusted_keys=[key])) as (client, rt):
        status, text = _rollout(client, "2.0.0", tag)
        assert status == 201, text
        shown = client.get("/api/v1/models/digits/2.0.0", headers=operator()).json()
        assert (shown["signed"], shown["signature_status"]) == (True, "verified")
        # On a server with trusted keys, a signature no key verifies is refused at upload.
        refused = upload(client, _garbage_signed_bundle(tmp_path, "6.6.7"))
        assert refused.status_code == 400 and "untrusted key" in refused.json()["detail"]
        assert rt.engine is not None
        with Session(rt.engine) as session:
            assert len(session.exec(select(Rollout)).all()) == 1
            versions = session.exec(select(ModelVersion)).all()
            assert [(v.version, v.signed) for v in versions] == [("2.0.0", True)]


def test_a_bad_trusted_key_stops_the_server_at_start(tmp_path: Path, database_url: str) -> None:
    from fleet_server.app import create_app
    from fleet_server.runtime import StartupError

    bad = tmp_path / "not-a-key.pem"
    bad.write_text("-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n")
    app = create_app(make_settings(tmp_path, database_url, trusted_keys=[bad]))
    with pytest.raises(StartupError, match="not-a-key.pem"), TestClient(app):
        pass
