"""Test input sources: a fixed list of items, live or not."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from agent.inputs import InputItem


@dataclass
class ListSource:
    items_: list[InputItem]
    live: bool = False
    yielded: list[str] = field(default_factory=list)

    def items(self, stop: threading.Event) -> Iterator[InputItem]:
        for item in self.items_:
            if stop.is_set():
                return
            self.yielded.append(item.source)
            yield item
