"""Input sources by config ``type`` (hand-written registry: no plugin discovery)."""

from __future__ import annotations

from collections.abc import Callable

from agent.inputs.base import ErrorReporter, InputItem, InputSource, Reply, SourceContext
from agent.plugin_config import (
    BatchInputConfig,
    CameraInputConfig,
    FolderInputConfig,
    HttpInputConfig,
    InputConfig,
    StreamInputConfig,
    VideoInputConfig,
)

SourceFactory = Callable[[InputConfig, SourceContext], InputSource]


def _folder(config: InputConfig, context: SourceContext) -> InputSource:
    from agent.inputs.folder import FolderSource

    assert isinstance(config, FolderInputConfig)
    return FolderSource(config, on_error=context.on_error)


def _video(config: InputConfig, context: SourceContext) -> InputSource:
    from agent.inputs.capture import VideoSource

    assert isinstance(config, VideoInputConfig)
    return VideoSource(config, on_error=context.on_error)


def _camera(config: InputConfig, context: SourceContext) -> InputSource:
    from agent.inputs.capture import camera_source

    assert isinstance(config, CameraInputConfig)
    return camera_source(config, on_error=context.on_error)


def _stream(config: InputConfig, context: SourceContext) -> InputSource:
    from agent.inputs.capture import stream_source

    assert isinstance(config, StreamInputConfig)
    return stream_source(config, on_error=context.on_error)


def _http(config: InputConfig, context: SourceContext) -> InputSource:
    from agent.inputs.http import HttpSource

    assert isinstance(config, HttpInputConfig)
    return HttpSource(config, context=context)


def _batch(config: InputConfig, context: SourceContext) -> InputSource:
    from agent.inputs.batch import BatchSource

    assert isinstance(config, BatchInputConfig)
    return BatchSource(config, on_error=context.on_error)


SOURCES: dict[str, SourceFactory] = {
    "folder": _folder,
    "video": _video,
    "camera": _camera,
    "stream": _stream,
    "http": _http,
    "batch": _batch,
}


def create_source(config: InputConfig, *, context: SourceContext) -> InputSource:
    return SOURCES[config.type](config, context)


__all__ = [
    "SOURCES",
    "ErrorReporter",
    "InputItem",
    "InputSource",
    "Reply",
    "SourceContext",
    "create_source",
]
