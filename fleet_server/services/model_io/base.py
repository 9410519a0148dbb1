"""What a model file declares about its inputs and outputs, and the reader Protocol."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


class ModelIOError(Exception):
    """The model file cannot be read (truncated, corrupt, hostile): one line."""


@dataclass(frozen=True)
class TensorIO:
    name: str
    #: numpy-style name (float32, int8, ...); None for a non-tensor value (an ONNX sequence).
    dtype: str | None
    #: None: the file records no shape; a None dim is dynamic.
    shape: list[int | None] | None


@dataclass(frozen=True)
class ModelIO:
    inputs: list[TensorIO]
    outputs: list[TensorIO]


class ModelIOReader(Protocol):
    """Reads a model file's declared inputs and outputs without running it."""

    def __call__(self, path: Path) -> ModelIO: ...
