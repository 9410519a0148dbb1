"""The ingest writer: device messages from the MQTT thread → batched, idempotent DB writes.

The MQTT handler only enqueues ``(topic, payload, received_at)``; one writer thread decodes a
batch (up to ``batch_size`` messages or ``interval_s`` of waiting), drops what is malformed or
from unknown devices (counted by reason), and writes the rest in one transaction. Telemetry and
events are keyed by (device_id, seq), so a QoS 1 redelivery is counted as a duplicate, not stored
twice; state only moves forward by seq and liveness by the server's clock, and device
timestamps outside a window of the server's clock are refused (:mod:`.sanity`).

A message is acknowledged (``Inbound.ack``) only once its fate is decided: stored, a duplicate,
or refused for good. Two kinds of database failure are told apart (:func:`is_transient`):

* the database is unreachable (refused or cut connection, shutdown, SQLite locked): the batch
  is kept and tried again with capped exponential back-off for as long as that lasts, its
  acknowledgements held, so the broker stops at its receive window and queues the rest for the
  server's session; ``stalled`` is set meanwhile (``/readyz`` says not ready). Before, a batch
  was dropped after 3 retries: PostgreSQL down 8 s at 20 msg/s lost 75 of 246 acknowledged
  messages (test_ingest_db_outage).
* the database refuses the rows (a data or integrity error): the batch is split in halves
  until the refused message stands alone, which is counted as ``db_refused`` and dropped;
  every other message is stored. Bisection rather than a dead-letter table: the refusals known
  in advance (non-finite numbers, counters past BIGINT, NUL in text) are refused before the
  write (:mod:`.screen`), so what bisection meets is rare, and a dead-letter table would be one
  more table a hostile device could fill. Before, such a message cost its whole batch: 4 NaN
  and 2 refused messages cost 712 of 795 good ones of two devices (test_ingest_poison).
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
from edgefleet.contract.errors import NonFiniteNumberError
from edgefleet.contract.parsing import load_json_object
from fleet_server.messaging.sanity import DeviceClock, clock_problem
from fleet_server.messaging.screen import refusal
from fleet_server.messaging.statements import StatementsName
from fleet_server.messaging.stats import IngestStats
from fleet_server.messaging.writes import is_transient, write_batch
from fleet_server.models.types import utcnow

log = logging.getLogger(__name__)

_INGESTED = {Channel.TELEMETRY, Channel.STATE, Channel.EVENTS, Channel.STATUS}
_STOP = object()

#: Waits ``delay`` seconds between attempts to reach the database; False: give up (stopping).
RetryWait = Callable[[float], bool]


class _Unavailable(Exception):
    """The database could not be reached; the batch is to be tried again."""


@dataclass(frozen=True)
class Inbound:
    topic: str
    payload: bytes
    received_at: datetime
    #: With a manual-ack bus: the broker's PUBACK, sent once the message is stored (or refused
    #: for good), never while the database is unreachable.
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
        retry_initial_s: float = 0.25,
        retry_max_s: float = 2.0,
        clock: DeviceClock | None = None,
        statements: StatementsName = "arrays",
    ) -> None:
        """``retry_initial_s`` doubling up to ``retry_max_s``: the wait between attempts while
        the database is unreachable (the batch is drained at most ``retry_max_s`` after it is
        back; 2 s keeps that short at the cost of one connection attempt per 2 s).
        ``statements``: how a batch reaches PostgreSQL (:mod:`.statements`)."""
        self._engine = engine
        self._statements: StatementsName = statements
        self._clock = clock or DeviceClock()
        self._stats = stats
        self._batch_size = batch_size
        self._interval_s = interval_s
        self._submit_timeout_s = submit_timeout_s
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self._queue: queue.Queue[Inbound | object] = queue.Queue(maxsize=queue_size)
        self._thread: threading.Thread | None = None
        self._abandon = threading.Event()
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
        before that leaves it with the broker, which sends it again. A message that finds the
        queue full is dropped (counted ``overloaded``); with ``ack`` it is left unacknowledged,
        so the broker still holds it (the bus's receive window is the queue's size, so this
        takes redeliveries on top of a full window)."""
        self._stats.add(received=1)
        with self._idle:
            self._pending += 1
        try:
            self._queue.put(Inbound(topic, payload, utcnow(), ack), timeout=self._submit_timeout_s)
        except queue.Full:
            self._stats.reject("overloaded")
            self._done(1)
            log.warning("ingest queue full; message dropped", extra={"topic": topic[:200]})
        self._stats.queue_depth = self._queue.qsize()

    def write_now(self, messages: list[Inbound], *, wait: RetryWait | None = None) -> bool:
        """Decode and write ``messages`` on the caller's thread, without the queue (ingest
        workers: they acknowledge to the broker after this returns True). While the database
        is unreachable this keeps trying, calling ``wait(delay)`` between attempts (default:
        sleep); False when ``wait`` gave up: nothing was decided, acknowledge nothing."""
        self._stats.add(received=len(messages))
        try:
            return self._process(messages, wait or _sleep)
        except Exception:  # noqa: BLE001 - as in the writer thread: count, log, go on
            log.exception("ingest batch failed", extra={"messages": len(messages)})
            return True

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("ingest writer already started")
        self._thread = threading.Thread(target=self._run, name="edgefleet-ingest", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop the thread. If the database is unreachable the
        writer gives up after ``timeout``: what it holds stays unacknowledged (with a kept
        session the broker sends it again to the next server)."""
        if self._thread is None:
            return
        deadline = time.monotonic() + timeout
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            log.error("ingest queue stayed full; stopping without draining it")
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():
            log.error(
                "ingest writer did not drain in time; leaving the rest unacknowledged",
                extra={"timeout_s": timeout},
            )
            self._abandon.set()
            self._thread.join(5)
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
            decided = True
            try:
                decided = self._process(inbound, self._wait_retry)
            except Exception:  # noqa: BLE001 - the writer must outlive any one bad batch
                log.exception("ingest batch failed", extra={"messages": len(inbound)})
            finally:
                if decided:  # stored, or refused for good: the broker may forget them
                    for message in inbound:
                        if message.ack is not None:
                            message.ack()
                self._done(len(inbound))

    def _wait_retry(self, delay: float) -> bool:
        return not self._abandon.wait(delay)

    def _done(self, count: int) -> None:
        with self._idle:
            self._pending -= count
            if self._pending <= 0:
                self._idle.notify_all()

    def _process(self, batch: list[Inbound], wait: RetryWait) -> bool:
        """Decode and store ``batch``; True once every message's fate is decided, False if
        ``wait`` gave up while the database was unreachable."""
        items: list[tuple[Payload, datetime]] = []
        for message in batch:
            payload = self._decode(message)
            if payload is not None:
                items.append((payload, message.received_at))
        if not items:
            return True
        delay = self._retry_initial_s
        while True:
            try:
                self._write(items)
            except _Unavailable as err:
                self._stats.db_retry()
                if not self._stats.stalled:
                    log.error(
                        "database unreachable; ingest holds its batch and retries",
                        extra={"messages": len(items), "error": str(err)},
                    )
                self._stats.stalled = True
                if not wait(delay):
                    return False
                delay = min(delay * 2, self._retry_max_s)
                continue
            if self._stats.stalled:
                log.warning("database reachable again; ingest resumed")
                self._stats.stalled = False
            return True

    def _write(self, items: list[tuple[Payload, datetime]]) -> None:
        """One transaction for ``items``; if the database refuses it, each half on its own
        (recursively), so a refused message costs only itself."""
        try:
            result = write_batch(
                engine=self._engine,
                items=items,
                seq_reset_window=self._clock.seq_reset_window,
                statements=self._statements,
            )
        except Exception as err:  # noqa: BLE001 - sorted below: unreachable or refused
            if is_transient(err):
                raise _Unavailable(str(err)[:300]) from err
            if len(items) > 1:
                middle = len(items) // 2
                self._write(items[:middle])
                self._write(items[middle:])
                return
            payload = items[0][0]
            self._stats.reject("db_refused")
            log.warning(
                "the database refused a message; dropped",
                extra={
                    "device_id": payload.device_id,
                    "kind": payload.kind,
                    "seq": getattr(payload, "seq", None),
                    "error": " ".join(str(err).split())[:300],
                },
            )
            return
        self._stats.add(
            stored=result.stored, duplicates=result.duplicates, seq_resets=result.seq_resets
        )
        if result.unknown_devices:
            self._stats.reject("unknown_device", result.unknown_devices)
        self._stats.batch_done()

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
        except NonFiniteNumberError as err:
            self._reject("non_finite", message, str(err))
            return None
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
        reason = refusal(payload)
        if reason is not None:
            self._reject(reason, message, "the database would refuse it")
            return None
        return payload

    def _reject(self, reason: str, message: Inbound, detail: str) -> None:
        self._stats.reject(reason)
        log.debug(
            "ingest rejected a message",
            extra={"reason": reason, "topic": message.topic[:200], "detail": detail[:300]},
        )


def _sleep(delay: float) -> bool:
    time.sleep(delay)
    return True


def _classify(raw: bytes, device_id: str) -> str:
    """Why ``decode`` refused ``raw`` (only called on the error path)."""
    try:
        data = load_json_object(raw, what="payload", max_bytes=MAX_PAYLOAD_BYTES)
    except ContractError:
        return "bad_json"
    if "device_id" in data and data["device_id"] != device_id:
        return "device_mismatch"
    return "schema"
