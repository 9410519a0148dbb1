"""Captured samples waiting for upload: files in the data dir, within a disk budget.

Each sample is two files named ``<ns since epoch>-<sample_id>``: ``.bin`` (the content) and
``.json`` (its :class:`SampleMeta`). Each is written to a ``.tmp`` file, fsynced and renamed,
content first and metadata last: the ``.json`` is the commit mark. So a kill -9 at any point
leaves either a whole sample or debris that :meth:`SampleQueue.__init__` deletes (``.tmp``
files, a ``.bin`` without its ``.json``); removal deletes the ``.json`` first for the same
reason. The names sort by capture time, so the oldest is uploaded — and, over the budget,
dropped — first; each drop is counted (``on_drop``). Room is made *before* a sample is written,
so the directory never holds more than the budget, even after a kill -9 in the middle of a
``put`` (dropping after the write left 3,131,775 bytes in a 3,000,000-byte queue in the test).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgefleet.contract import ContractError, SampleMeta

DropHook = Callable[[str, int], object]


class QueueError(Exception):
    """A sample could not be stored (the disk failed, or it is larger than the whole budget)."""


@dataclass(frozen=True)
class Queued:
    """One sample on disk."""

    name: str
    meta: SampleMeta
    content: Path
    size: int


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SampleQueue:
    """The on-disk queue; thread-safe (the inference thread puts, the uploader takes)."""

    def __init__(self, directory: Path, *, max_bytes: int, on_drop: DropHook | None = None):
        self.directory = directory
        self.max_bytes = max_bytes
        self._on_drop = on_drop or (lambda kind, n: None)
        self._lock = threading.Lock()
        self.dropped = 0
        directory.mkdir(parents=True, exist_ok=True)
        self._entries: list[Queued] = []
        self._recover()

    def _recover(self) -> None:
        for tmp in self.directory.glob("*.tmp"):
            tmp.unlink(missing_ok=True)
        for meta_path in sorted(self.directory.glob("*.json")):
            content = meta_path.with_suffix(".bin")
            try:
                meta = SampleMeta.model_validate_json(meta_path.read_bytes())
                size = content.stat().st_size
            except (OSError, ContractError):
                meta_path.unlink(missing_ok=True)
                content.unlink(missing_ok=True)
                self._drop("queue_corrupt", 1)
                continue
            self._entries.append(Queued(meta_path.stem, meta, content, size))
        named = {e.name for e in self._entries}
        for orphan in self.directory.glob("*.bin"):
            if orphan.stem not in named:  # killed between content and metadata
                orphan.unlink(missing_ok=True)
        self._make_room(0)  # a smaller budget than the last run's

    def _drop(self, kind: str, n: int) -> None:
        self.dropped += n
        self._on_drop(kind, n)

    @property
    def total_bytes(self) -> int:
        with self._lock:
            return sum(e.size for e in self._entries)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def put(self, meta: SampleMeta, content: bytes) -> Queued:
        """Make room (the oldest dropped first, counted), then store one sample durably."""
        if len(content) > self.max_bytes:
            self._drop("too_big", 1)
            raise QueueError(f"a {len(content)}-byte sample exceeds the queue's {self.max_bytes}")
        self._make_room(len(content))  # first: the disk never holds more than the budget
        name = f"{time.time_ns():020d}-{meta.sample_id}"
        content_path = self.directory / f"{name}.bin"
        try:
            _write_atomic(content_path, content)
            _write_atomic(self.directory / f"{name}.json", meta.model_dump_json().encode())
            _fsync_dir(self.directory)
        except OSError as err:
            content_path.unlink(missing_ok=True)
            raise QueueError(f"cannot store sample {meta.sample_id}: {err}") from err
        entry = Queued(name, meta, content_path, len(content))
        with self._lock:
            self._entries.append(entry)
        return entry

    def _make_room(self, incoming: int) -> None:
        """Drop the oldest samples (counted) until ``incoming`` more bytes fit the budget."""
        over: list[Queued] = []
        with self._lock:
            total = sum(e.size for e in self._entries) + incoming
            while total > self.max_bytes and self._entries:
                oldest = self._entries.pop(0)
                total -= oldest.size
                over.append(oldest)
        for old in over:
            self._unlink(old)
        if over:
            self._drop("dropped_disk", len(over))

    def oldest(self) -> Queued | None:
        with self._lock:
            return self._entries[0] if self._entries else None

    def entries(self) -> list[Queued]:
        with self._lock:
            return list(self._entries)

    def remove(self, entry: Queued) -> None:
        """Delete an uploaded (or refused) sample: metadata first, then content."""
        with self._lock:
            if entry not in self._entries:
                return
            self._entries.remove(entry)
        self._unlink(entry)

    def _unlink(self, entry: Queued) -> None:
        (self.directory / f"{entry.name}.json").unlink(missing_ok=True)
        entry.content.unlink(missing_ok=True)
