"""A fleet server whose artifact store is a real S3-compatible server (moto over HTTP): bundles
go up into the bucket and come back to devices through the server, whole or by Range, and a
store that fails says so in one line."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from agent.download import download
from fleet_server.runtime import Runtime, StartupError
from tests.fleet_server.helpers import (
    bearer,
    make_settings,
    operator,
    running_app,
    unique_id,
    upload,
)
from tests.utils.artifacts import build_digits_artifact, bundle_of
from tests.utils.net import free_port, wait_for_port
from tests.utils.s3 import SECRET_ACCESS_KEY, S3Server
from tests.utils.server import live_server

pytestmark = pytest.mark.integration
URL = "/api/v1/models/digits/1.0.0/bundle"


@pytest.fixture
def bucket(s3_server: S3Server) -> str:
    return s3_server.new_bucket()


@pytest.fixture
def s3_app(
    tmp_path: Path, database_url: str, s3_server: S3Server, bucket: str
) -> Iterator[tuple[TestClient, Runtime]]:
    store = s3_server.store_config(bucket, prefix="bundles")
    with running_app(make_settings(tmp_path, database_url, artifact_store=store)) as started:
        yield started


def test_upload_then_download_whole_and_by_range(
    s3_app: tuple[TestClient, Runtime], s3_server: S3Server, bucket: str, digits_bundle: Path
) -> None:
    client, runtime = s3_app
    data = digits_bundle.read_bytes()
    size, etag = len(data), f'"{hashlib.sha256(data).hexdigest()}"'
    created = upload(client, data)
    assert created.status_code == 201, created.text
    # The bundle is in the bucket under the prefix, and nowhere on the server's disk.
    s3 = s3_server.client()
    stored = s3.get_object(Bucket=bucket, Key="bundles/digits/1.0.0.tar.gz")["Body"].read()
    assert stored == data
    assert not runtime.settings.artifact_root.exists()
    assert list((runtime.settings.data_dir / "tmp").iterdir()) == []

    full = client.get(URL, headers=operator())
    assert full.status_code == 200 and full.content == data
    assert full.headers["content-type"] == "application/gzip"
    assert full.headers["content-length"] == str(size)
    assert full.headers["etag"] == etag and full.headers["accept-ranges"] == "bytes"
    assert "content-range" not in full.headers

    def ranged(value: str, **extra: str) -> httpx.Response:
        return client.get(URL, headers={**operator(), "Range": value, **extra})

    part = ranged("bytes=100-199")
    assert part.status_code == 206 and part.content == data[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{size}"
    assert part.headers["content-length"] == "100"
    tail = ranged("bytes=1000-")
    assert tail.status_code == 206 and tail.content == data[1000:]
    assert tail.headers["content-range"] == f"bytes 1000-{size - 1}/{size}"
    suffix = ranged("bytes=-10")
    assert suffix.status_code == 206 and suffix.content == data[-10:]
    past_end = ranged(f"bytes=10-{size + 500}")  # clipped to the body
    assert past_end.status_code == 206 and past_end.content == data[10:]
    # Not satisfiable: 416 with the size.
    beyond = ranged(f"bytes={size}-")
    assert beyond.status_code == 416 and beyond.headers["content-range"] == f"bytes */{size}"
    # Ranges the server may ignore get the whole body.
    for ignored in ["bytes=0-1,5-9", "items=0-5", "bytes=9-2", "bytes=x-", "bytes=" + "9" * 30]:
        whole = ranged(ignored)
        assert whole.status_code == 200 and whole.content == data, ignored
    # If-Range: the same ETag resumes; another representation gets the whole body.
    assert ranged("bytes=5-", **{"If-Range": etag}).status_code == 206
    stale = ranged("bytes=5-", **{"If-Range": '"0000"'})
    assert stale.status_code == 200 and stale.content == data


def test_devices_download_only_what_is_assigned(
    s3_app: tuple[TestClient, Runtime], digits_bundle: Path
) -> None:
    client, _ = s3_app
    assert upload(client, digits_bundle).status_code == 201
    device_id = unique_id()
    token = client.post(
        "/api/v1/devices", json={"device_id": device_id}, headers=operator()
    ).json()["token"]
    # Not assigned: the same 404 as a version that does not exist (no version oracle, #11).
    assert client.get(URL, headers=bearer(token)).status_code == 404
    assigned = client.post(
        "/api/v1/assignments",
        json={"model": "digits", "version": "1.0.0", "device_ids": [device_id]},
        headers=operator(),
    )
    assert assigned.status_code == 200, assigned.text
    got = client.get(URL, headers={**bearer(token), "Range": "bytes=50-"})
    assert got.status_code == 206 and got.content == digits_bundle.read_bytes()[50:]
    assert client.get(URL).status_code == 401


def test_a_failing_store_is_a_clear_request_error(
    s3_app: tuple[TestClient, Runtime],
    s3_server: S3Server,
    bucket: str,
    digits_bundle: Path,
    tmp_path: Path,
) -> None:
    client, _ = s3_app
    assert upload(client, digits_bundle).status_code == 201
    s3 = s3_server.client()
    # The object vanished behind the server's back: 404, not a 500 or an empty 200.
    s3.delete_object(Bucket=bucket, Key="bundles/digits/1.0.0.tar.gz")
    missing = client.get(URL, headers=operator())
    assert missing.status_code == 404 and "missing from the store" in missing.json()["detail"]
    # The whole bucket is gone: an upload is a 503 with one line naming the S3 error, no
    # secret, and nothing is recorded.
    s3.delete_bucket(Bucket=bucket)
    refused = upload(client, _other_version(tmp_path))
    assert refused.status_code == 503, refused.text
    detail = refused.json()["detail"]
    assert detail.startswith("cannot store the bundle: cannot store digits/2.0.0.tar.gz in S3")
    assert "NoSuchBucket" in detail and SECRET_ACCESS_KEY not in detail
    assert client.get("/api/v1/models/digits/2.0.0", headers=operator()).status_code == 404


def _other_version(work: Path) -> Path:
    artifact = build_digits_artifact(work / "digits-2.0.0", version="2.0.0")
    return bundle_of(artifact, work / "digits-2.0.0.tar.gz")


def test_startup_fails_clearly_without_the_bucket(tmp_path: Path, s3_server: S3Server) -> None:
    store = s3_server.store_config("edgefleet-no-such-bucket")
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}", artifact_store=store)
    with pytest.raises(StartupError, match="artifact store: cannot use S3 bucket.*NoSuchBucket"):
        with running_app(settings):
            pass


def test_agent_resumes_a_bundle_streamed_from_s3(
    tmp_path: Path, s3_server: S3Server, bucket: str, digits_bundle: Path
) -> None:
    """The real agent downloader over real HTTP: half a bundle on disk, the rest by Range."""
    data = digits_bundle.read_bytes()
    store = s3_server.store_config(bucket)
    with live_server(tmp_path, artifact_store=store) as server:
        auth = {"Authorization": f"Bearer {server.token}"}
        files = {"bundle": ("b.tar.gz", data, "application/gzip")}
        created = httpx.post(f"{server.url}/api/v1/models", files=files, headers=auth)
        assert created.status_code == 201, created.text
        dest = tmp_path / "device" / "bundle.tar.gz"
        dest.parent.mkdir()
        half = len(data) // 2
        dest.with_name("bundle.tar.gz.part").write_bytes(data[:half])
        seen: list[int] = []
        download(
            url=f"{server.url}{URL}",
            token=server.token,
            dest=dest,
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            on_progress=seen.append,
        )
        assert dest.read_bytes() == data
        assert seen and seen[-1] == len(data) and min(seen) > half - 1


def test_an_unreachable_store_is_a_503(tmp_path: Path, digits_bundle: Path) -> None:
    """The S3 server goes away after start-up: downloads and uploads are 503 with one line
    (the details, never a secret, go to the log)."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    try:
        wait_for_port("127.0.0.1", port)
        own = S3Server(endpoint_url=f"http://127.0.0.1:{port}")
        store = own.store_config(own.new_bucket(), timeout_s=2.0)
        settings = make_settings(
            tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}", artifact_store=store
        )
        with running_app(settings) as (client, _):
            assert upload(client, digits_bundle).status_code == 201
            assert client.get(URL, headers=operator()).status_code == 200
            moto.stop()
            gone = client.get(URL, headers={**operator(), "Range": "bytes=10-"})
            assert gone.status_code == 503
            assert gone.json()["detail"] == "the artifact store is unavailable; try again later"
            refused = upload(client, _other_version(tmp_path))
            detail = refused.json()["detail"]
            assert refused.status_code == 503 and "Could not connect" in detail, detail
            assert SECRET_ACCESS_KEY not in detail and "\n" not in detail
    finally:
        moto.stop()
