"""The agent's error types: each boundary converts third-party failures into one of these."""

from __future__ import annotations


class AgentError(Exception):
    """Base class; the message is one line fit for a log, an event detail or a CLI error."""


class AgentConfigError(AgentError):
    """The configuration file is missing, unreadable, not TOML, or has invalid fields."""


class ModelLoadError(AgentError):
    """An artifact could not be verified, loaded, warmed up or failed its self-test."""


class InferenceError(AgentError):
    """A batch does not fit the model's inputs, or the runtime failed on it."""


class InputError(AgentError):
    """An input item (image or tensor file) could not be read or turned into a tensor.

    ``kind`` is a short stable label used as the telemetry error key.
    """

    def __init__(self, message: str, *, kind: str = "input") -> None:
        super().__init__(message)
        self.kind = kind


class UpdateError(AgentError):
    """A desired-state update failed: download, verification, unpack, load or commit."""


class ModelUnavailableError(AgentError):
    """No model is serving (none committed yet, or the agent is stopping)."""
