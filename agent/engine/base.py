"""The inference-backend plugin boundary: a :class:`Backend` loads a model file into a
:class:`Session` that runs named numpy feeds.

Backends are registered by hand in :data:`agent.engine.registry.BACKENDS`, keyed by the
manifest's ``format``. A backend module imports its runtime inside :meth:`Backend.load`, so a
device only pays for the runtime its model needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class BackendOptions:
    """Runtime settings shared by every backend."""

    threads: int = 1


class Session(Protocol):
    """A loaded model, ready to run."""

    @property
    def input_names(self) -> list[str]: ...

    @property
    def output_names(self) -> list[str]: ...

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run once; returns the outputs in :attr:`output_names` order."""
        ...


class Backend(Protocol):
    """Turns a model file into a :class:`Session`; raises ModelLoadError on failure."""

    name: str

    def load(self, path: Path, options: BackendOptions) -> Session: ...
