"""The inference-backend plugin boundary: a :class:`Backend` loads a model file into a
:class:`Session` that runs named numpy feeds.

Backends are registered by hand in :data:`agent.engine.registry.BACKENDS`, keyed by the
manifest's ``format``. A backend module imports its runtime inside :meth:`Backend.load`, so a
device only pays for the runtime its model needs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

GraphOptimization = Literal["disable", "basic", "extended", "all"]
#: A pre-bound runner for a one-input, one-output model: input array → output array.
SingleRunner = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class BackendOptions:
    """Runtime settings; a backend uses the ones it understands (the device profile fills them)."""

    threads: int = 1
    #: onnxruntime graph optimisation level.
    graph_optimization: GraphOptimization = "all"
    #: onnxruntime execution providers, in order of preference.
    execution_providers: tuple[str, ...] = ("CPUExecutionProvider",)
    #: onnxruntime CPU memory arena (off: every tensor is malloc'd and freed).
    cpu_mem_arena: bool = True
    #: onnxruntime memory pattern: pre-plans one block for the intermediate tensors.
    mem_pattern: bool = True
    #: Artifact formats this device runs (its profile's ``engine.backends``): a 32-bit ARM
    #: board has no onnxruntime wheel, so its profile lists only "tflite".
    formats: tuple[str, ...] = ("onnx", "tflite")
    #: RSS in MiB the agent stays under with this model loaded beside what it holds (its
    #: profile's ``budgets.memory_mb``); None: no limit. See :mod:`agent.memory`.
    memory_budget_mb: float | None = None


class Session(Protocol):
    """A loaded model, ready to run."""

    @property
    def input_names(self) -> list[str]: ...

    @property
    def output_names(self) -> list[str]: ...

    def dtypes(self) -> dict[str, np.dtype]:
        """Element type of every input and output, by name (to check against the manifest)."""
        ...

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run once; returns the outputs in :attr:`output_names` order."""
        ...

    def single(self) -> SingleRunner | None:
        """For a one-input, one-output model: a runner with everything per-model bound once
        (names, tensor indices), for inputs the engine has already checked; None otherwise.
        It raises InferenceError like :meth:`run`."""
        ...


class Backend(Protocol):
    """Turns a model file into a :class:`Session`; raises ModelLoadError on failure."""

    name: str

    def load(self, path: Path, options: BackendOptions) -> Session: ...
