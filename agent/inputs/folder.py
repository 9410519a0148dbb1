"""``type = "folder"``: images and ``.npy`` files from a folder, in name order.

Each pass lists the folder again, so new files are picked up. With ``loop = true`` the folder is
cycled forever; otherwise every file is yielded once and the folder is watched for new ones.
Hidden files and ``*.part`` files (writes in progress) are skipped. Items are paced to
``rate_hz``.
"""

from __future__ import annotations

import fnmatch
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from agent.config import FolderInputConfig
from agent.inputs.base import ErrorReporter, InputItem


class FolderSource:
    live = True  # paced at rate_hz: a backlog is dropped oldest-first

    def __init__(self, config: FolderInputConfig, *, on_error: ErrorReporter) -> None:
        self.config = config
        self._on_error = on_error
        self._period = 1.0 / config.rate_hz

    def list_files(self) -> list[Path]:
        """Candidate files in name order; a missing folder is reported and yields nothing."""
        try:
            entries = list(os.scandir(self.config.path))
        except OSError as err:
            self._on_error("input_unavailable", f"{self.config.path}: {err.strerror}")
            return []
        names = sorted(
            e.name
            for e in entries
            if not e.name.startswith(".")
            and not e.name.endswith(".part")
            and fnmatch.fnmatchcase(e.name, self.config.pattern)
            and e.is_file()
        )
        return [self.config.path / n for n in names]

    def read(self, path: Path) -> bytes | None:
        limit = self.config.max_file_bytes
        try:
            with path.open("rb") as fh:
                data = fh.read(limit + 1)
        except OSError as err:
            self._on_error("input_unreadable", f"{path.name}: {err.strerror}")
            return None
        if len(data) > limit:
            self._on_error("input_too_large", f"{path.name}: larger than {limit} bytes")
            return None
        return data

    def items(self, stop: threading.Event) -> Iterator[InputItem]:
        seen: set[str] = set()
        next_at = time.monotonic()
        while not stop.is_set():
            files = self.list_files()
            if not self.config.loop:
                files = [f for f in files if f.name not in seen]
            if not files:
                stop.wait(self.config.poll_s)
                continue
            for path in files:
                if stop.is_set():
                    return
                delay = next_at - time.monotonic()
                if delay > 0 and stop.wait(delay):
                    return
                next_at = max(next_at, time.monotonic()) + self._period
                seen.add(path.name)
                data = self.read(path)
                if data is not None:
                    yield InputItem(source=path.name, data=data)
