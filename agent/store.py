"""The agent's data directory: artifacts, downloads and the committed-model pointer.

```
<data_dir>/seq.json                    sequence numbers (agent.seq)
<data_dir>/current.json                committed model: {"name", "version", "path"}, plus
                                       "announced": false until update.committed is queued
<data_dir>/artifacts/<name>/<version>/ unpacked, verified artifacts
<data_dir>/downloads/                  bundles being fetched (*.part)
```
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from agent.seq import write_json_atomic
from edgefleet.contract import ModelRef

log = logging.getLogger(__name__)

POINTER_FILE = "current.json"
MAX_POINTER_BYTES = 64 * 1024


@dataclass(frozen=True)
class Committed:
    ref: ModelRef
    path: Path
    #: False: committed, but the agent stopped before ``update.committed`` was queued.
    announced: bool = True


class DataDir:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.artifacts = root / "artifacts"
        self.downloads = root / "downloads"
        for path in (root, self.artifacts, self.downloads):
            path.mkdir(parents=True, exist_ok=True)

    def artifact_dir(self, ref: ModelRef) -> Path:
        # name and version are contract-validated: one safe path segment each.
        return self.artifacts / ref.name / ref.version

    def clear_downloads(self, *, keep: Collection[Path] | None = None) -> None:
        """Delete abandoned downloads; what is in ``keep`` stays.

        At start-up (``keep`` None) partial (``.part``) and finished (``.tar.gz``) bundles stay:
        the update they belong to is retried from the retained desired state, resumes the part
        or reuses the finished bundle once its hash is checked again. Before a new download
        everything but its own part and bundle goes, so at most one bundle takes disk at a time.
        """
        for entry in self.downloads.iterdir():
            if not entry.is_file() or (keep is not None and entry in keep):
                continue
            if keep is None and entry.name.endswith((".part", ".tar.gz")):
                continue
            entry.unlink(missing_ok=True)

    def read_pointer(self) -> Committed | None:
        """The committed model, or None if there is none or the pointer is unusable."""
        path = self.root / POINTER_FILE
        try:
            if path.stat().st_size > MAX_POINTER_BYTES:
                raise ValueError("pointer file too large")
            data = json.loads(path.read_text())
            if data.get("name") is None:
                return None
            ref = ModelRef(name=data["name"], version=data["version"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            log.warning("ignoring unusable model pointer", extra={"error": str(err)[:200]})
            return None
        announced = data.get("announced", True) is not False
        return Committed(ref=ref, path=self.artifact_dir(ref), announced=announced)

    def write_pointer(self, ref: ModelRef | None, *, announced: bool = True) -> None:
        """Commit ``ref`` (None: no model) atomically, fsync + rename. ``announced=False``
        marks a commit whose ``update.committed`` event is not queued yet: a restart sends it."""
        data: dict[str, str | bool | None] = {"name": None, "version": None, "path": None}
        if ref is not None:
            path = self.artifact_dir(ref).relative_to(self.root)
            data = {"name": ref.name, "version": ref.version, "path": str(path)}
            if not announced:
                data["announced"] = False
        write_json_atomic(self.root / POINTER_FILE, data)

    def prune(
        self,
        keep: Sequence[ModelRef],
        *,
        max_count: int = 2,
        max_bytes: int | None = None,
        always: Sequence[ModelRef] = (),
    ) -> None:
        """Delete unpacked artifacts to stay within ``max_count`` versions and ``max_bytes``.

        ``keep`` in order of importance (the serving model, then the previous one): the first
        always stays; the rest of ``keep`` and then the other versions, newest first, stay while
        both limits hold. ``always`` (a shadow model running beside the serving one) stays too,
        counted against the limits. What is left over is deleted.
        """
        dirs = [v for n in self.artifacts.iterdir() if n.is_dir() for v in n.iterdir()]
        pinned = {self.artifact_dir(r) for r in always}
        ranked = [self.artifact_dir(r) for r in keep]
        ranked = [ranked[0], *pinned - {ranked[0]}, *(d for d in ranked[1:] if d not in pinned)]
        others = sorted(
            (d for d in dirs if d not in ranked), key=lambda d: d.stat().st_mtime, reverse=True
        )
        kept, used = 0, 0
        for index, version_dir in enumerate([*ranked, *others]):
            if not version_dir.is_dir():
                continue
            size = dir_bytes(version_dir)
            fits = kept < max_count and (max_bytes is None or used + size <= max_bytes)
            if index == 0 or version_dir in pinned or fits:
                kept, used = kept + 1, used + size
                continue
            log.info("pruning artifact", extra={"path": str(version_dir), "bytes": size})
            shutil.rmtree(version_dir, ignore_errors=True)
        for name_dir in self.artifacts.iterdir():
            if name_dir.is_dir() and not any(name_dir.iterdir()):
                name_dir.rmdir()

    def artifact_bytes(self, ref: ModelRef) -> int:
        path = self.artifact_dir(ref)
        return dir_bytes(path) if path.is_dir() else 0


def dir_bytes(path: Path) -> int:
    """Bytes of the regular files under ``path`` (symlinks not followed)."""
    total = 0
    for entry in path.rglob("*"):
        try:
            if entry.is_file() and not entry.is_symlink():
                total += entry.stat().st_size
        except OSError:
            continue
    return total
