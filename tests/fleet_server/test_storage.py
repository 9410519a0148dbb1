"""The artifact stores: one contract, run against the local directory and a real S3-compatible
server (moto over HTTP); then what only S3 has (multipart, conditional writes, credentials)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fleet_server.settings import ServerSettings
from fleet_server.storage import (
    STORES,
    ArtifactStore,
    MissingBundle,
    StoreError,
    bundle_key,
    create_store,
)
from fleet_server.storage.config import S3StoreConfig
from fleet_server.storage.local import LocalArtifactStore
from fleet_server.storage.s3 import S3ArtifactStore
from tests.utils.net import free_port
from tests.utils.s3 import SECRET_ACCESS_KEY, S3Server

MIB = 1024 * 1024
KEY = bundle_key("digits", "1.0.0")


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    if request.param == "local":
        return LocalArtifactStore(root=tmp_path / "store")
    s3: S3Server = request.getfixturevalue("s3_server")
    config = S3StoreConfig(**s3.store_config(s3.new_bucket(), prefix="fleet/a"))
    return create_store(ServerSettings(data_dir=tmp_path, artifact_store=config))


def _file(tmp_path: Path, data: bytes, name: str = "b.tar.gz") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _read(store: ArtifactStore, key: str, start: int, end: int) -> bytes:
    return b"".join(store.read(key, start, end))


def test_put_read_delete(store: ArtifactStore, tmp_path: Path) -> None:
    data = os.urandom(700_000)  # several read chunks
    assert KEY == "digits/1.0.0.tar.gz" and not store.exists(KEY)
    source = _file(tmp_path, data)
    store.put(KEY, source)
    assert not source.exists() and store.exists(KEY)
    assert store.size(KEY) == len(data)
    assert _read(store, KEY, 0, len(data)) == data
    assert _read(store, KEY, 100, 200) == data[100:200]
    assert _read(store, KEY, len(data) - 1, len(data)) == data[-1:]
    assert _read(store, KEY, 5, 5) == b""
    # No overwrite: the first bundle stays.
    other = _file(tmp_path, b"other", "c.tar.gz")
    with pytest.raises(StoreError, match="already exists"):
        store.put(KEY, other)
    assert _read(store, KEY, 0, len(data)) == data
    store.delete(KEY)
    store.delete(KEY)  # idempotent
    assert not store.exists(KEY)
    with pytest.raises(MissingBundle, match="not in the store"):
        store.size(KEY)
    with pytest.raises(MissingBundle, match="not in the store"):
        store.read(KEY, 0, 1)  # raised by the call itself, before any byte is sent


@pytest.mark.parametrize(
    "key",
    ["../x.tar.gz", "digits/../../x.tar.gz", "/etc/passwd", "a/b/c.tar.gz", "A/1.tar.gz", ""],
)
def test_hostile_keys(store: ArtifactStore, tmp_path: Path, key: str) -> None:
    source = _file(tmp_path, b"x")
    actions: list[Callable[[], Any]] = [
        lambda: store.exists(key),
        lambda: store.size(key),
        lambda: store.read(key, 0, 1),
        lambda: store.put(key, source),
        lambda: store.delete(key),
    ]
    for action in actions:
        with pytest.raises(StoreError, match="invalid store key"):
            action()
    assert source.exists()


def test_local_layout(tmp_path: Path) -> None:
    store = LocalArtifactStore(root=tmp_path / "store")
    store.put(KEY, _file(tmp_path, b"bundle"))
    assert store.local_path(KEY).read_bytes() == b"bundle"
    assert sorted(p.name for p in (tmp_path / "store" / "digits").iterdir()) == ["1.0.0.tar.gz"]


def test_registry(tmp_path: Path) -> None:
    assert sorted(STORES) == ["local", "s3"]
    store = create_store(ServerSettings(data_dir=tmp_path))
    assert isinstance(store, LocalArtifactStore)
    assert store.root == (tmp_path / "artifacts").resolve()


def _s3_store(s3: S3Server, bucket: str, **overrides: Any) -> S3ArtifactStore:
    store = S3ArtifactStore(S3StoreConfig(**s3.store_config(bucket, **overrides)))
    store.check()
    return store


def test_s3_layout_and_multipart(s3_server: S3Server, tmp_path: Path) -> None:
    bucket = s3_server.new_bucket()
    store = _s3_store(s3_server, bucket, prefix="fleet", multipart_threshold_bytes=5 * MIB)
    small, big = os.urandom(1000), os.urandom(11 * MIB + 3)
    store.put(KEY, _file(tmp_path, small))
    big_key = bundle_key("digits", "2.0.0")
    store.put(big_key, _file(tmp_path, big))
    client = s3_server.client()
    listed = client.list_objects_v2(Bucket=bucket)["Contents"]
    assert sorted(o["Key"] for o in listed) == [
        "fleet/digits/1.0.0.tar.gz",
        "fleet/digits/2.0.0.tar.gz",
    ]
    # One PUT below the threshold; three parts (5 + 5 + 1 MiB) above it.
    assert "-" not in client.head_object(Bucket=bucket, Key=f"fleet/{KEY}")["ETag"]
    head = client.head_object(Bucket=bucket, Key=f"fleet/{big_key}")
    assert head["ETag"].strip('"').endswith("-3") and head["ContentType"] == "application/gzip"
    assert store.size(big_key) == len(big)
    assert _read(store, big_key, 0, len(big)) == big
    assert _read(store, big_key, 5 * MIB - 10, 5 * MIB + 10) == big[5 * MIB - 10 : 5 * MIB + 10]


@pytest.mark.parametrize("size", [1000, 6 * MIB], ids=["put", "multipart"])
def test_s3_conditional_write_refuses_a_racing_upload(
    s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    """Another server stored the key between our existence check and our write: the
    server-side If-None-Match refuses it, and a failed multipart upload is aborted."""
    bucket = s3_server.new_bucket()
    store = _s3_store(s3_server, bucket, multipart_threshold_bytes=5 * MIB)
    first = os.urandom(size)
    store.put(KEY, _file(tmp_path, first))
    monkeypatch.setattr(store, "exists", lambda key: False)
    with pytest.raises(StoreError, match="already exists"):
        store.put(KEY, _file(tmp_path, os.urandom(size)))
    assert _read(store, KEY, 0, size) == first
    assert s3_server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_s3_missing_bucket_and_unreachable_endpoint(s3_server: S3Server, tmp_path: Path) -> None:
    config = S3StoreConfig(**s3_server.store_config("no-such-bucket-here"))
    settings = ServerSettings(data_dir=tmp_path, artifact_store=config)
    with pytest.raises(StoreError, match="'no-such-bucket-here'.*NoSuchBucket \\(the bucket does"):
        create_store(settings)
    dead = S3StoreConfig(
        **s3_server.store_config("b-1", endpoint_url=f"http://127.0.0.1:{free_port()}")
    )
    with pytest.raises(StoreError, match="cannot use S3 bucket 'b-1'.*Could not connect") as err:
        create_store(ServerSettings(data_dir=tmp_path, artifact_store=dead))
    assert "\n" not in str(err.value) and SECRET_ACCESS_KEY not in str(err.value)


def test_s3_wrong_credentials(
    s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With IAM authentication on, an unknown key id and a wrong secret each give one clear
    line at start-up, and the secret appears nowhere in it; without keys in the settings the
    standard AWS environment variables are used."""
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    import boto3
    from moto.core import enable_iam_authentication

    admin = boto3.session.Session().client(
        "iam",
        endpoint_url=s3_server.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="y",  # noqa: S106 - moto does not check before IAM is on
    )
    user = f"edgefleet-{os.urandom(3).hex()}"
    admin.create_user(UserName=user)
    admin.put_user_policy(
        UserName=user,
        PolicyName="all",
        PolicyDocument='{"Version":"2012-10-17","Statement":[{"Effect":"Allow",'
        '"Action":"*","Resource":"*"}]}',
    )
    made = admin.create_access_key(UserName=user)["AccessKey"]
    key_id, secret = made["AccessKeyId"], made["SecretAccessKey"]
    bucket = s3_server.new_bucket()
    wrong_secret = "wrong-secret-" + secret[:8]

    def start(key: str, secret_value: str) -> None:
        config = S3StoreConfig(
            **s3_server.store_config(bucket, access_key_id=key, secret_access_key=secret_value)
        )
        create_store(ServerSettings(data_dir=tmp_path, artifact_store=config))

    def start_from_environment(key: str, secret_value: str) -> None:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret_value)
        config = S3StoreConfig(
            **s3_server.store_config(bucket, access_key_id=None, secret_access_key=None)
        )
        create_store(ServerSettings(data_dir=tmp_path, artifact_store=config))

    with enable_iam_authentication():
        start(key_id, secret)  # the right pair works
        start_from_environment(key_id, secret)
        with pytest.raises(StoreError, match="SignatureDoesNotMatch"):
            start_from_environment(key_id, wrong_secret)
        with pytest.raises(StoreError) as unknown:
            start("AKIAUNKNOWNKEY000000", secret)
        with pytest.raises(StoreError) as wrong:
            start(key_id, wrong_secret)
    for err in (unknown.value, wrong.value):
        text = str(err)
        assert text.startswith(f"cannot use S3 bucket {bucket!r}") and "\n" not in text
        assert secret not in text and wrong_secret not in text
    assert str(unknown.value).endswith(
        "InvalidAccessKeyId (the server does not know this access key id)"
    )
    assert str(wrong.value).endswith("SignatureDoesNotMatch (the secret access key is wrong)")


def test_s3_without_boto3_is_one_clear_startup_error(
    s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)
    monkeypatch.delitem(sys.modules, "fleet_server.storage.s3")
    config = S3StoreConfig(**s3_server.store_config("some-bucket"))
    with pytest.raises(StoreError, match=r"needs boto3.*pip install 'edgefleet\[server,s3\]'"):
        create_store(ServerSettings(data_dir=tmp_path, artifact_store=config))
    # The local store never needs it.
    assert isinstance(create_store(ServerSettings(data_dir=tmp_path)), LocalArtifactStore)


def test_local_bundle_shrinking_mid_read_is_an_error(tmp_path: Path) -> None:
    """Fewer bytes than announced must not end a response early and silently."""
    store = LocalArtifactStore(root=tmp_path / "store")
    store.put(KEY, _file(tmp_path, os.urandom(700_000)))
    chunks = store.read(KEY, 0, 700_000)
    first = next(chunks)
    os.truncate(store.local_path(KEY), len(first) + 10)
    with pytest.raises(StoreError, match="shrank"):
        list(chunks)
