"""The ingest writer: device messages from the MQTT thread → batched, idempotent DB writes.

The MQTT handler only enqueues ``(topic, payload, received_at)``; one writer thread decodes a
batch (up to ``batch_size`` messages or ``interval_s`` of waiting), drops what is malformed or
from unknown devices (counted by reason), and writes the rest in one transaction. Telemetry and
events are keyed by (device_id, seq), so a QoS 1 redelivery is counted as a duplicate, not stored
twice; state only moves forward by seq and liveness by the server's clock, and device
timestamps outside a window of the server's clock are refused (:mod:`.sanity`).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from edgefleet.contract import (
    CHANNELS,
    MAX_PAYLOAD_BYTES,
    Channel,
    ContractError,
    Event,
    Payload,
    State,
    Status,
    Telemetry,
    decode,
    parse_topic,
)
from edgefleet.contract.parsing import load_json_object
from fleet_server.messaging.sanity import DeviceClock, clock_problem
from fleet_server.messaging.stats import IngestStats
from fleet_server.messaging.writes import write_batch
from fleet_server.models.types import utcnow

log = logging.getLogger(__name__)

_INGESTED = {Channel.TELEMETRY, Channel.STATE, Channel.EVENTS, Channel.STATUS}
_STOP = object()


@dataclass(frozen=True)
class Inbound:
    topic: str
    payload: bytes
    received_at: datetime
    #: With a manual-ack bus: the broker's PUBACK, sent once the batch is stored (or dropped).
    ack: Callable[[], None] | None = None


class IngestWriter:
    def __init__(
        self,
        *,
        engine: Engine,
        stats: IngestStats,
        batch_size: int = 500,
        interval_s: float = 0.2,
        queue_size: int = 20_000,
        submit_timeout_s: float = 5.0,
        retries: int = 3,
        clock: DeviceClock | None = None,
    ) -> None:
        self._engine = engine
        self._clock = clock or DeviceClock()
        self._stats = stats
        self._batch_size = batch_size
        self._interval_s = interval_s
        self._submit_timeout_s = submit_timeout_s
        self._retries = retries
        self._queue: queue.Queue[Inbound | object] = queue.Queue(maxsize=queue_size)
        self._thread: threading.Thread | None = None
        self._idle = threading.Condition()
        self._pending = 0

    # -- called from the MQTT network thread ----------------------------------------------
    def submit(
        self,
        topic: str,
        payload: bytes,
        retained: bool = False,
        ack: Callable[[], None] | None = None,
    ) -> None:
        """Hand one message to the writer; blocks (back-pressure) up to ``submit_timeout_s``.
        ``ack`` (a manual-ack bus) is called after the message's batch is committed, so a crash
        before that leaves it with the broker, which sends it again."""
        self._stats.add(received=1)
        with self._idle:
            self._pending += 1
        try:
            self._queue.put(Inbound(topic, payload, utcnow(), ack), timeout=self._submit_timeout_s)
        except queue.Full:
            self._stats.reject("overloaded")
            self._done(1)
            if ack is not None:
                ack()
            log.warning("ingest queue full; message dropped", extra={"topic": topic[:200]})
        self._stats.queue_depth = self._queue.qsize()

    def write_now(self, messages: list[Inbound]) -> None:
        """Decode and write ``messages`` on the caller's thread, without the queue (ingest
        workers: they acknowledge to the broker after this returns)."""
        self._stats.add(received=len(messages))
        try:
            self._process(messages)
        except Exception:  # noqa: BLE001 - as in the writer thread: count, log, go on
            self._stats.reject("db_error", len(messages))
            log.exception("ingest batch failed", extra={"messages": len(messages)})

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("ingest writer already started")
        self._thread = threading.Thread(target=self._run, name="edgefleet-ingest", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop the thread."""
        if self._thread is None:
            return
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            log.error("ingest queue stayed full; stopping without draining it")
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("ingest writer did not stop in time", extra={"timeout_s": timeout})
        self._thread = None

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything submitted so far is written or dropped; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    # -- writer thread -----------------------------------------------------------------------
    def _run(self) -> None:
        running = True
        while running:
            first = self._queue.get()
            if first is _STOP:
                break
            batch = [first]
            deadline = time.monotonic() + self._interval_s
            while len(batch) < self._batch_size:
                remaining = deadline - time.monotonic()
                try:
                    if remaining > 0:
                        item = self._queue.get(timeout=remaining)
                    else:
                        item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    running = False
                    break
                batch.append(item)
            self._stats.queue_depth = self._queue.qsize()
            inbound = [m for m in batch if isinstance(m, Inbound)]
            try:
                self._process(inbound)
            except Exception:  # noqa: BLE001 - the writer must outlive any one bad batch
                log.exception("ingest batch failed", extra={"messages": len(inbound)})
            finally:
                for message in inbound:  # stored, or refused for good: the broker may forget it
                    if message.ack is not None:
                        message.ack()
                self._done(len(inbound))

    def _done(self, count: int) -> None:
        with self._idle:
            self._pending -= count
            if self._pending <= 0:
                self._idle.notify_all()

    def _process(self, batch: list[Inbound]) -> None:
        items: list[tuple[Payload, datetime]] = []
        for message in batch:
            payload = self._decode(message)
            if payload is not None:
                items.append((payload, message.received_at))
        if not items:
            return
        for attempt in range(self._retries + 1):
            try:
                result = write_batch(
                    engine=self._engine,
                    items=items,
                    seq_reset_window=self._clock.seq_reset_window,
                )
            except SQLAlchemyError as err:
                if attempt == self._retries:
                    self._stats.reject("db_error", len(items))
                    log.error(
                        "ingest batch dropped after database errors",
                        extra={"messages": len(items), "error": str(err)[:300]},
                    )
                    return
                log.warning("ingest database error; retrying", extra={"error": str(err)[:300]})
                time.sleep(0.5 * 2**attempt)
                continue
            self._stats.add(
                stored=result.stored, duplicates=result.duplicates, seq_resets=result.seq_resets
            )
            if result.unknown_devices:
                self._stats.reject("unknown_device", result.unknown_devices)
            self._stats.batch_done()
            return

    def _decode(self, message: Inbound) -> Payload | None:
        try:
            device_id, channel = parse_topic(message.topic)
        except ContractError:
            self._reject("bad_topic", message, "not an ingest topic")
            return None
        if channel not in _INGESTED:
            if CHANNELS[channel].from_device:
                return None  # a device channel the server does not store (results): not an error
            self._reject("bad_topic", message, f"{channel.value} is not ingested")
            return None
        if len(message.payload) > MAX_PAYLOAD_BYTES:
            self._reject("oversized", message, f"{len(message.payload)} bytes")
            return None
        try:
            payload = decode(channel, message.payload, device_id=device_id)
        except ContractError as err:
            self._reject(_classify(message.payload, device_id), message, str(err))
            return None
        if not isinstance(payload, Telemetry | State | Event | Status):
            self._reject("schema", message, "not a device payload")
            return None
        clock = clock_problem(payload, message.received_at, self._clock)
        if clock is not None:
            self._reject(clock, message, f"ts {payload.ts.isoformat()}")
            return None
        return payload

    def _reject(self, reason: str, message: Inbound, detail: str) -> None:
        self._stats.reject(reason)
        log.debug(
            "ingest rejected a message",
            extra={"reason": reason, "topic": message.topic[:200], "detail": detail[:300]},
        )


def _classify(raw: bytes, device_id: str) -> str:
    """Why ``decode`` refused ``raw`` (only called on the error path)."""
    try:
        data = load_json_object(raw, what="payload", max_bytes=MAX_PAYLOAD_BYTES)
    except ContractError:
        return "bad_json"
    if "device_id" in data and data["device_id"] != device_id:
        return "device_mismatch"
    return "schema"
