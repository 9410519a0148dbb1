"""Result sinks by config ``type`` (hand-written registry: no plugin discovery).

A sink receives one JSON-able dict per result (or per failed input, with ``error``) from the
inference thread only. ``mqtt`` publishes on the agent's own connection (agent.sinks.mqtt).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from agent.errors import AgentConfigError
from agent.plugin_config import FileSinkConfig, MqttSinkConfig, SinkConfig

if TYPE_CHECKING:
    from agent.sinks.mqtt import ResultTransport


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


@dataclass(frozen=True)
class SinkContext:
    """What a sink may use of the running agent (the MQTT sink: its connection and seq)."""

    device_id: str = ""
    transport: ResultTransport | None = None
    next_seq: Callable[[], int] | None = None
    #: Called with the number of results a full sink dropped.
    on_drop: Callable[[int], None] = lambda n: None


def open_file_sink(path: Path) -> JsonLinesSink:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        stream = path.open("a", encoding="utf-8")
    except OSError as err:
        raise AgentConfigError(f"sink.path: cannot open {path}: {err.strerror}") from err
    return JsonLinesSink(stream, owned=True)


def _file(config: SinkConfig, context: SinkContext) -> ResultSink:
    assert isinstance(config, FileSinkConfig)
    return open_file_sink(config.path)


def _stdout(config: SinkConfig, context: SinkContext) -> ResultSink:
    return JsonLinesSink(sys.stdout, owned=False)


def _mqtt(config: SinkConfig, context: SinkContext) -> ResultSink:
    from agent.sinks.mqtt import MqttResultSink

    assert isinstance(config, MqttSinkConfig)
    if context.transport is None or context.next_seq is None:
        raise AgentConfigError("sink.type = 'mqtt' needs the agent's MQTT connection")
    return MqttResultSink(
        config,
        transport=context.transport,
        device_id=context.device_id,
        next_seq=context.next_seq,
        on_drop=context.on_drop,
    )


SinkFactory = Callable[[SinkConfig, SinkContext], ResultSink]
SINKS: dict[str, SinkFactory] = {
    "file": _file,
    "stdout": _stdout,
    "mqtt": _mqtt,
}


def create_sink(config: SinkConfig, *, context: SinkContext | None = None) -> ResultSink:
    return SINKS[config.type](config, context or SinkContext())


__all__ = [
    "SINKS",
    "JsonLinesSink",
    "ResultSink",
    "SinkContext",
    "create_sink",
    "open_file_sink",
]
