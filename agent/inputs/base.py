"""The input-source plugin boundary: an :class:`InputSource` yields input items until stopped.

Sources never raise for a bad item: they report it through ``on_error(kind, detail)`` and go on.
A source is ``live`` when its items lose value with age (cameras, streams): the pipeline then
drops the oldest queued item when full; otherwise (files, batch, HTTP) it waits for room.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

ErrorReporter = Callable[[str, str], None]
"""Called with (kind, one-line detail) for an item that could not be read."""

Reply = Callable[[list[dict[str, Any]] | None, Exception | None], None]
"""Called once per item that wants its result back (HTTP): (results, None) or (None, error)."""


@dataclass(frozen=True)
class InputItem:
    """One input: where it came from and its data, encoded bytes (image or .npy) or a decoded
    8-bit BGR frame; ``reply`` receives the result when the caller waits for it."""

    source: str
    data: bytes | np.ndarray
    reply: Reply | None = None
    #: ``data`` is a ready tensor (one sample, with or without its batch axis), not a frame.
    tensor: bool = False


@dataclass(frozen=True)
class SourceContext:
    """What a source may call back into: error counting, and status for device endpoints."""

    on_error: ErrorReporter
    health: Callable[[], tuple[bool, dict[str, Any]]] = field(
        default=lambda: (True, {"status": "ok"})
    )
    metrics: Callable[[], str] = field(default=lambda: "")


class InputSource(Protocol):
    live: bool

    def items(self, stop: threading.Event) -> Iterator[InputItem]:
        """Yield items until ``stop`` is set (or the source is exhausted)."""
        ...
