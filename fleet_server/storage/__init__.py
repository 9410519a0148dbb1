"""Artifact stores: where uploaded bundles live. A Protocol plus a hand-written registry."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from fleet_server.settings import ServerSettings, StoreConfig


class StoreError(Exception):
    """The store could not save, find or remove a bundle."""


class ArtifactStore(Protocol):
    """Keys are ``<name>/<version>.tar.gz``; both parts are validated by the contract."""

    def put(self, key: str, source: Path) -> None:
        """Move the finished file ``source`` into the store under ``key`` (atomic; no overwrite)."""
        ...

    def exists(self, key: str) -> bool: ...

    def local_path(self, key: str) -> Path:
        """A local file holding the bundle, for serving with Range support; StoreError if absent."""
        ...

    def delete(self, key: str) -> None:
        """Remove ``key`` if present."""
        ...


def bundle_key(name: str, version: str) -> str:
    return f"{name}/{version}.tar.gz"


def _local(config: StoreConfig, settings: ServerSettings) -> ArtifactStore:
    from fleet_server.storage.local import LocalArtifactStore

    return LocalArtifactStore(root=config.root or settings.artifact_root)


#: store kind → factory (hand-written; an S3-compatible store adds a line here).
STORES: dict[str, Callable[[StoreConfig, ServerSettings], ArtifactStore]] = {
    "local": _local,
}


def create_store(settings: ServerSettings) -> ArtifactStore:
    config = settings.artifact_store
    factory = STORES.get(config.kind)
    if factory is None:
        raise StoreError(f"unknown artifact store {config.kind!r}; known: {sorted(STORES)}")
    return factory(config, settings)
