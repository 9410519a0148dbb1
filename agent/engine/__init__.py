"""Inference engine: backends by format, verified model loading, the served model."""

from agent.engine.base import Backend, BackendOptions, Session
from agent.engine.model import LoadedModel, load_model, run_self_test
from agent.engine.registry import BACKENDS, backend_for

__all__ = [
    "BACKENDS",
    "Backend",
    "BackendOptions",
    "LoadedModel",
    "Session",
    "backend_for",
    "load_model",
    "run_self_test",
]
