"""Backends by manifest ``format`` (hand-written: no plugin discovery)."""

from __future__ import annotations

from agent.engine.base import Backend
from agent.engine.litert import LiteRTBackend
from agent.engine.onnx import OnnxBackend
from agent.errors import ModelLoadError

BACKENDS: dict[str, Backend] = {
    "onnx": OnnxBackend(),
    "tflite": LiteRTBackend(),
}


def backend_for(fmt: str) -> Backend:
    backend = BACKENDS.get(fmt)
    if backend is None:
        known = ", ".join(sorted(BACKENDS))
        raise ModelLoadError(f"no backend for model format {fmt!r} (this agent has: {known})")
    return backend
