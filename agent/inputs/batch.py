"""``type = "batch"``: every file of a folder once, or every row of one ``.npy`` file.

Nothing is dropped (back-pressure); the source ends when all items are yielded, so a file sink
then holds one result line per input (errors included, with the input's name).
"""

from __future__ import annotations

import fnmatch
import os
import threading
import zipfile
from collections.abc import Iterator

import numpy as np

from agent.inputs.base import ErrorReporter, InputItem
from agent.plugin_config import BatchInputConfig


class BatchSource:
    live = False

    def __init__(self, config: BatchInputConfig, *, on_error: ErrorReporter) -> None:
        self.config = config
        self._on_error = on_error

    def items(self, stop: threading.Event) -> Iterator[InputItem]:
        path = self.config.path
        if path.is_file() and path.suffix == ".npy":
            yield from self._rows(stop)
            return
        try:
            names = sorted(
                e.name
                for e in os.scandir(path)
                if e.is_file()
                and not e.name.startswith(".")
                and fnmatch.fnmatchcase(e.name, self.config.pattern)
            )
        except OSError as err:
            self._on_error("input_unavailable", f"{path}: {err.strerror}")
            return
        limit = self.config.max_file_bytes
        for name in names:
            if stop.is_set():
                return
            try:
                with (path / name).open("rb") as fh:
                    data = fh.read(limit + 1)
            except OSError as err:
                self._on_error("input_unreadable", f"{name}: {err.strerror}")
                continue
            if len(data) > limit:
                self._on_error("input_too_large", f"{name}: larger than {limit} bytes")
                continue
            yield InputItem(source=name, data=data)

    def _rows(self, stop: threading.Event) -> Iterator[InputItem]:
        path = self.config.path
        try:
            if path.stat().st_size > self.config.max_file_bytes:
                self._on_error("input_too_large", f"{path.name}: larger than max_file_bytes")
                return
            samples = np.load(path, allow_pickle=False, mmap_mode="r")
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
            self._on_error("bad_tensor", f"{path.name}: unreadable .npy: {err}")
            return
        if samples.ndim == 0:
            self._on_error("bad_tensor", f"{path.name}: a scalar, not a set of samples")
            return
        for i in range(samples.shape[0]):
            if stop.is_set():
                return
            yield InputItem(source=f"{path.name}[{i}]", data=np.array(samples[i]), tensor=True)
