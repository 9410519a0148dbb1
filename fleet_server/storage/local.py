"""Bundles as files under a local directory."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from fleet_server.storage import CHUNK, MissingBundle, StoreError, check_key


class LocalArtifactStore:
    def __init__(self, *, root: Path) -> None:
        self.root = root.resolve()

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put(self, key: str, source: Path) -> None:
        target = self._path(key)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            staged = target.with_name(f".{target.name}.{os.getpid()}.part")
            # A copy into the target directory first, so the final rename is atomic even
            # when source lives on another file system; link() refuses to overwrite.
            if source.stat().st_dev == target.parent.stat().st_dev:
                os.replace(source, staged)
            else:
                shutil.copyfile(source, staged)
                source.unlink()
            try:
                os.link(staged, target)
            finally:
                staged.unlink(missing_ok=True)
        except FileExistsError as err:
            raise StoreError(f"{key} already exists in the store") from err
        except OSError as err:
            raise StoreError(f"cannot store {key}: {err}") from err

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def local_path(self, key: str) -> Path:
        path = self._path(key)
        if not path.is_file():
            raise MissingBundle(f"{key} is not in the store")
        return path

    def size(self, key: str) -> int:
        try:
            return self.local_path(key).stat().st_size
        except FileNotFoundError as err:
            raise MissingBundle(f"{key} is not in the store") from err

    def read(self, key: str, start: int, end: int) -> Iterator[bytes]:
        try:
            handle = self.local_path(key).open("rb")
        except FileNotFoundError as err:
            raise MissingBundle(f"{key} is not in the store") from err
        except OSError as err:
            raise StoreError(f"cannot read {key}: {err.strerror}") from err
        handle.seek(start)
        return _chunks(handle, end - start)

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink(missing_ok=True)
        except OSError as err:
            raise StoreError(f"cannot delete {key}: {err}") from err


def _chunks(handle: BinaryIO, length: int) -> Iterator[bytes]:
    with handle:
        while length > 0:
            chunk = handle.read(min(CHUNK, length))
            if not chunk:
                raise StoreError("the bundle shrank while it was read")
            length -= len(chunk)
            yield chunk
