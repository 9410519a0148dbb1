"""Bundles as files under a local directory."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from fleet_server.storage import StoreError

_KEY = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}/[A-Za-z0-9][A-Za-z0-9._+-]{0,62}\.tar\.gz$")


class LocalArtifactStore:
    def __init__(self, *, root: Path) -> None:
        self.root = root.resolve()

    def _path(self, key: str) -> Path:
        if not _KEY.fullmatch(key):
            raise StoreError(f"invalid store key {key[:120]!r}")
        return self.root / key

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
            raise StoreError(f"{key} is not in the store")
        return path

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink(missing_ok=True)
        except OSError as err:
            raise StoreError(f"cannot delete {key}: {err}") from err
