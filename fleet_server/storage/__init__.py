"""Artifact stores: where uploaded bundles live. A Protocol plus a hand-written registry."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from fleet_server.storage.config import LocalStoreConfig, S3StoreConfig, StoreConfig

if TYPE_CHECKING:
    # Annotations only: the settings import this package's config.
    from fleet_server.settings import ServerSettings

#: ``<name>/<version>.tar.gz`` with the contract's name and version patterns, or a captured
#: sample's content ``samples/<sha256>`` (one object per distinct content: deduplicated).
_KEY = re.compile(
    r"^(?:[a-z0-9][a-z0-9._-]{0,62}/[A-Za-z0-9][A-Za-z0-9._+-]{0,62}\.tar\.gz"
    r"|samples/[0-9a-f]{64})$"
)
#: Bytes per chunk when a bundle is streamed out of a store.
CHUNK = 256 * 1024


class StoreError(Exception):
    """The store could not save, find or remove a bundle (one line, never a credential)."""


class MissingBundle(StoreError):
    """The key is not in the store."""


class ArtifactStore(Protocol):
    """Keys are ``<name>/<version>.tar.gz``; both parts are validated by the contract."""

    def put(self, key: str, source: Path) -> None:
        """Move the finished file ``source`` into the store under ``key`` (no overwrite:
        StoreError if it exists). ``source`` is gone afterwards."""
        ...

    def exists(self, key: str) -> bool: ...

    def size(self, key: str) -> int:
        """Size of the stored bundle in bytes; MissingBundle if absent."""
        ...

    def read(self, key: str, start: int, end: int) -> Iterator[bytes]:
        """Bytes ``start`` to ``end - 1`` of the bundle, in chunks. The store is asked at once
        (MissingBundle/StoreError are raised by this call, not by the first ``next``)."""
        ...

    def delete(self, key: str) -> None:
        """Remove ``key`` if present."""
        ...


def bundle_key(name: str, version: str) -> str:
    return f"{name}/{version}.tar.gz"


def sample_key(sha256: str) -> str:
    """Where a sample's content lives: by its sha256, so equal contents are stored once.
    (``samples`` cannot clash with a bundle key: those end in ``.tar.gz``.)"""
    return f"samples/{sha256}"


def check_key(key: str) -> str:
    if not _KEY.fullmatch(key):
        raise StoreError(f"invalid store key {key[:120]!r}")
    return key


def _local(config: StoreConfig, settings: ServerSettings) -> ArtifactStore:
    from fleet_server.storage.local import LocalArtifactStore

    assert isinstance(config, LocalStoreConfig)
    return LocalArtifactStore(root=config.root or settings.artifact_root)


def _s3(config: StoreConfig, settings: ServerSettings) -> ArtifactStore:
    assert isinstance(config, S3StoreConfig)
    try:
        from fleet_server.storage.s3 import S3ArtifactStore
    except ImportError as err:
        raise StoreError(
            f"the s3 artifact store needs boto3 ({err.name} is missing): "
            "pip install 'edgefleet[server,s3]'"
        ) from err
    store = S3ArtifactStore(config)
    store.check()
    return store


#: store kind → factory (hand-written).
STORES: dict[str, Callable[[StoreConfig, ServerSettings], ArtifactStore]] = {
    "local": _local,
    "s3": _s3,
}


def create_store(settings: ServerSettings) -> ArtifactStore:
    """The configured store, checked where that is cheap (the S3 bucket is reachable)."""
    config = settings.artifact_store
    factory = STORES.get(config.kind)
    if factory is None:
        raise StoreError(f"unknown artifact store {config.kind!r}; known: {sorted(STORES)}")
    return factory(config, settings)
