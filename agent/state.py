"""What the agent is doing now: the served model (swapped by reference) and the reported state."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from agent.engine import LoadedModel
from agent.errors import ModelLoadError
from agent.plugin_config import PostprocessConfig
from agent.postprocess import Geometry, Postprocessor, create_postprocessor
from agent.preprocess import Preprocessor
from edgefleet.contract import ModelRef
from edgefleet.contract.payloads import Phase


@dataclass(frozen=True)
class Serving:
    """A model with its preprocessor and postprocessor, swapped together as one reference."""

    model: LoadedModel
    preprocess: Preprocessor
    postprocess: Postprocessor

    @classmethod
    def of(cls, model: LoadedModel, postprocess: PostprocessConfig | None = None) -> Serving:
        """Pair a model with its pre- and postprocessing; ModelLoadError if they cannot fit."""
        pre = Preprocessor(model.manifest.preprocessing, model.manifest.inputs[0])
        problem = pre.mismatch()
        if problem is not None:
            raise ModelLoadError(f"{model.ref}: {problem}")
        return cls(model, pre, create_postprocessor(model, postprocess))

    def results(
        self, outputs: dict[str, np.ndarray], geometry: list[Geometry]
    ) -> list[dict[str, Any]]:
        """Postprocessed results, one per batch row, each naming the model."""
        results = self.postprocess(self.model.real(outputs), geometry)
        ref, task = str(self.model.ref), self.model.manifest.task
        for result in results:
            result["model"] = ref
            result["task"] = task
        return results


class ModelSlot:
    """Holds the served model. Readers take :attr:`current` once per item; a swap replaces the
    reference, so an inference already running on the old model completes on it."""

    def __init__(self) -> None:
        self.current: Serving | None = None
        self.ready = threading.Event()

    def swap(self, serving: Serving | None) -> Serving | None:
        old, self.current = self.current, serving
        if serving is None:
            self.ready.clear()
        else:
            self.ready.set()
        return old


@dataclass(frozen=True)
class Snapshot:
    phase: Phase = "idle"
    running: ModelRef | None = None
    desired: ModelRef | None = None
    last_error: str | None = None


class AgentState:
    """The reported state; every change calls ``on_change`` with the new snapshot."""

    def __init__(self, on_change: Callable[[Snapshot], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._snapshot = Snapshot()
        self.on_change = on_change

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    def update(self, **changes: object) -> Snapshot:
        with self._lock:
            new = replace(self._snapshot, **changes)  # type: ignore[arg-type]
            changed = new != self._snapshot
            self._snapshot = new
        if changed and self.on_change is not None:
            self.on_change(new)
        return new
