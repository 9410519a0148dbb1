"""Result sinks by config ``type`` (hand-written registry: no plugin discovery).

A sink receives one JSON-able dict per result (or per failed input, with ``error``) from the
inference thread only. There is no MQTT sink yet: results need a topic in the contract first.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TextIO

from agent.errors import AgentConfigError
from agent.plugin_config import FileSinkConfig, SinkConfig


class ResultSink(Protocol):
    def write(self, result: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class JsonLinesSink:
    """One compact JSON object per line, flushed per line (a crash loses at most one)."""

    def __init__(self, stream: TextIO, *, owned: bool) -> None:
        self._stream = stream
        self._owned = owned

    def write(self, result: dict[str, Any]) -> None:
        self._stream.write(json.dumps(result, separators=(",", ":")) + "\n")
        self._stream.flush()

    def close(self) -> None:
        if self._owned:
            self._stream.close()


def open_file_sink(path: Path) -> JsonLinesSink:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        stream = path.open("a", encoding="utf-8")
    except OSError as err:
        raise AgentConfigError(f"sink.path: cannot open {path}: {err.strerror}") from err
    return JsonLinesSink(stream, owned=True)


def _file(config: SinkConfig) -> ResultSink:
    assert isinstance(config, FileSinkConfig)
    return open_file_sink(config.path)


def _stdout(config: SinkConfig) -> ResultSink:
    return JsonLinesSink(sys.stdout, owned=False)


SINKS: dict[str, Callable[[SinkConfig], ResultSink]] = {
    "file": _file,
    "stdout": _stdout,
}


def create_sink(config: SinkConfig) -> ResultSink:
    return SINKS[config.type](config)


__all__ = ["SINKS", "JsonLinesSink", "ResultSink", "create_sink", "open_file_sink"]
