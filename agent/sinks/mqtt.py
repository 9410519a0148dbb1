"""``type = "mqtt"``: each result as a contract ``Result`` on ``edgefleet/v1/<device>/results``.

The sink publishes on the agent's own MQTT connection from one sender thread, so the inference
thread only appends to a bounded queue. Results are **not** stored and forwarded (they are
high-rate and lose value with age, unlike telemetry): while the broker is away they wait in
memory, and when ``max_queued`` are waiting the oldest is dropped and counted. A result whose
payload would exceed the contract's 64 KiB keeps its envelope and says how big its output was.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from agent.plugin_config import MqttSinkConfig
from edgefleet.contract import MAX_PAYLOAD_BYTES, Channel, ModelRef, Result, encode, topic
from edgefleet.contract.manifest import Task

log = logging.getLogger(__name__)

#: QoS 1 results published but not yet acknowledged before the sender waits (broker back-pressure).
MAX_UNACKNOWLEDGED = 200
#: Keys of a sink dict that are the envelope, not the postprocessed output.
_ENVELOPE_KEYS = frozenset({"source", "model", "task", "error", "kind"})
_TASKS: frozenset[str] = frozenset(Task.__args__)  # type: ignore[attr-defined]


class ResultTransport(Protocol):
    """What the sink needs of :class:`edgefleet.mqtt.MqttTransport`."""

    @property
    def connected(self) -> bool: ...

    @property
    def unacknowledged(self) -> int: ...

    def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> None: ...


@dataclass
class SinkStats:
    published: int = 0
    dropped: int = 0
    oversized: int = 0
    failed: int = 0


class MqttResultSink:
    def __init__(
        self,
        config: MqttSinkConfig,
        *,
        transport: ResultTransport,
        device_id: str,
        next_seq: Callable[[], int],
        on_drop: Callable[[int], None] = lambda n: None,
    ) -> None:
        self.config = config
        self._transport = transport
        self._device_id = device_id
        self._topic = topic(device_id, Channel.RESULTS)
        self._next_seq = next_seq
        self._on_drop = on_drop
        self._queue: deque[dict[str, Any]] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self.stats = SinkStats()
        self._thread = threading.Thread(target=self._run, name="results", daemon=True)
        self._thread.start()

    # -- inference thread ----------------------------------------------------------------------
    def write(self, result: dict[str, Any]) -> None:
        dropped = 0
        with self._cond:
            if self._closing:
                return
            while len(self._queue) >= self.config.max_queued:
                self._queue.popleft()  # fresh results matter more than old ones
                dropped += 1
            self._queue.append(result)
            self.stats.dropped += dropped
            self._cond.notify()
        if dropped:
            self._on_drop(dropped)

    def close(self, timeout: float = 2.0) -> None:
        """Stop; what is queued gets ``timeout`` seconds to go out while connected."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout)

    @property
    def queued(self) -> int:
        return len(self._queue)

    # -- sender thread -------------------------------------------------------------------------
    def _run(self) -> None:
        deadline: float | None = None
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return
                if self._closing and deadline is None:
                    deadline = time.monotonic() + 2.0
            if deadline is not None and time.monotonic() > deadline:
                return
            if not self._ready():
                time.sleep(0.05)  # offline or the broker is behind: results wait (bounded)
                continue
            with self._cond:
                if not self._queue:
                    continue
                result = self._queue.popleft()
            self._send(result)

    def _ready(self) -> bool:
        transport = self._transport
        if not transport.connected:
            return False
        return self.config.qos == 0 or transport.unacknowledged < MAX_UNACKNOWLEDGED

    def _send(self, result: dict[str, Any]) -> None:
        try:
            payload = self.encode(result)
            self._transport.publish(self._topic, payload, qos=self.config.qos, retain=False)
        except Exception as err:  # a bad result or a refused publish must not end the sender
            self.stats.failed += 1
            log.warning("result not published", extra={"error": str(err)[:300]})
            return
        self.stats.published += 1

    def encode(self, result: dict[str, Any]) -> bytes:
        """The ``Result`` payload for one sink dict (over 64 KiB: the output is summarised)."""
        error = result.get("error")
        output = (
            None
            if error is not None
            else {k: v for k, v in result.items() if k not in _ENVELOPE_KEYS}
        )
        task = result.get("task")
        message = Result(
            device_id=self._device_id,
            seq=self._next_seq(),
            model=_model_ref(result.get("model")),
            input_id=str(result.get("source", ""))[:512],
            task=task if task in _TASKS else None,
            output=output,
            error=None if error is None else str(error)[:2000],
        )
        payload = encode(message)
        if len(payload) > MAX_PAYLOAD_BYTES:
            self.stats.oversized += 1
            message = message.model_copy(update={"output": {"omitted_bytes": len(payload)}})
            payload = encode(message)
        return payload


def _model_ref(value: object) -> ModelRef | None:
    """``name@version`` (as results carry it) → a ModelRef; anything else → None."""
    if not isinstance(value, str) or "@" not in value:
        return None
    name, version = value.split("@", 1)
    try:
        return ModelRef(name=name, version=version)
    except ValueError:
        return None
