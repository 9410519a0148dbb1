"""Input sources by config ``type`` (hand-written registry: no plugin discovery)."""

from __future__ import annotations

from collections.abc import Callable

from agent.config import FolderInputConfig, InputConfig
from agent.inputs.base import ErrorReporter, InputItem, InputSource
from agent.inputs.folder import FolderSource

SourceFactory = Callable[[InputConfig, ErrorReporter], InputSource]


def _folder(config: InputConfig, on_error: ErrorReporter) -> InputSource:
    assert isinstance(config, FolderInputConfig)
    return FolderSource(config, on_error=on_error)


SOURCES: dict[str, SourceFactory] = {
    "folder": _folder,
}


def create_source(config: InputConfig, *, on_error: ErrorReporter) -> InputSource:
    return SOURCES[config.type](config, on_error)


__all__ = ["SOURCES", "ErrorReporter", "InputItem", "InputSource", "create_source"]
