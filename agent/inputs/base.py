"""The input-source plugin boundary: an :class:`InputSource` yields input items until stopped.

Sources never raise for a bad item: they report it through ``on_error(kind, detail)`` and go on.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

ErrorReporter = Callable[[str, str], None]
"""Called with (kind, one-line detail) for an item that could not be read."""


@dataclass(frozen=True)
class InputItem:
    """One input: where it came from and its raw bytes (an encoded image or a .npy file)."""

    source: str
    data: bytes


class InputSource(Protocol):
    def items(self, stop: threading.Event) -> Iterator[InputItem]:
        """Yield items until ``stop`` is set (or the source is exhausted)."""
        ...
