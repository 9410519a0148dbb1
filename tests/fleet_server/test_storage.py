"""The local artifact store."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleet_server.settings import ServerSettings
from fleet_server.storage import STORES, StoreError, bundle_key, create_store
from fleet_server.storage.local import LocalArtifactStore


def test_put_get_delete(tmp_path: Path) -> None:
    store = LocalArtifactStore(root=tmp_path / "store")
    source = tmp_path / "b.tar.gz"
    source.write_bytes(b"bundle")
    key = bundle_key("digits", "1.0.0")
    assert key == "digits/1.0.0.tar.gz" and not store.exists(key)
    store.put(key, source)
    assert not source.exists() and store.exists(key)
    assert store.local_path(key).read_bytes() == b"bundle"
    other = tmp_path / "c.tar.gz"
    other.write_bytes(b"other")
    with pytest.raises(StoreError, match="already exists"):
        store.put(key, other)
    assert store.local_path(key).read_bytes() == b"bundle"
    assert sorted(p.name for p in (tmp_path / "store" / "digits").iterdir()) == ["1.0.0.tar.gz"]
    store.delete(key)
    store.delete(key)
    with pytest.raises(StoreError):
        store.local_path(key)


@pytest.mark.parametrize(
    "key", ["../x.tar.gz", "digits/../../x.tar.gz", "/etc/passwd", "a/b/c.tar.gz", "A/1.tar.gz"]
)
def test_hostile_keys(tmp_path: Path, key: str) -> None:
    store = LocalArtifactStore(root=tmp_path)
    with pytest.raises(StoreError, match="invalid store key"):
        store.local_path(key)


def test_registry(tmp_path: Path) -> None:
    assert sorted(STORES) == ["local"]
    store = create_store(ServerSettings(data_dir=tmp_path))
    assert isinstance(store, LocalArtifactStore)
    assert store.root == (tmp_path / "artifacts").resolve()
