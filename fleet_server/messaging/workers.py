"""Ingest worker processes: telemetry and events ingested in parallel, outside the server's GIL.

Each worker is a spawned process with its own MQTT v5 connection in a shared-subscription group
(``$share/<group>/edgefleet/v1/+/telemetry`` and ``.../events``) and its own database engine:
the broker deals messages out between the workers (and between replicas, when they share the
group), and no Python lock is shared. The server process keeps the retained channels (state,
status) and desired state. Each worker sends its counters to the server every ``_REPORT_S``
(``/metrics`` shows the sum); a worker that dies is started again.

A worker is one thread: :class:`~fleet_server.messaging.batch_mqtt.BatchSubscriber` hands it
what the socket holds, it decodes and writes that batch in one transaction, and only then
acknowledges the batch to the broker. A worker killed mid-batch leaves those messages
unacknowledged (what the broker does with them then is its choice: MQTT v5 lets it hand them to
another member of the group; a clean start drops them from the dead session). While the
database is unreachable a worker keeps its batch, retries with back-off and acknowledges
nothing; it keeps the broker connection alive meanwhile and reports ``stalled`` (``/readyz``).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as connection_wait
from multiprocessing.process import BaseProcess
from typing import Any

from edgefleet.contract import Channel
from edgefleet.contract.topics import shared_filter
from fleet_server.messaging.sanity import DeviceClock
from fleet_server.messaging.statements import StatementsName
from fleet_server.messaging.stats import IngestStats

log = logging.getLogger(__name__)

#: Channels the workers take over from the server process.
WORKER_CHANNELS = (Channel.TELEMETRY, Channel.EVENTS)
_REPORT_S = 0.2
_STOP = "stop"


@dataclass(frozen=True)
class WorkerConfig:
    """Everything a worker needs (picklable: it crosses into a spawned process)."""

    name: str
    database_url: str
    broker_url: str
    username: str | None
    password: str | None
    client_id: str
    group: str
    batch_size: int
    clock: DeviceClock
    statements: StatementsName
    connect_timeout_s: float
    log_level: str


def worker_main(config: WorkerConfig, pipe: Connection) -> None:
    """The worker process: receive a batch, write it, acknowledge it, until the server says
    stop (or goes away); reconnect with back-off when the broker connection fails."""
    from dataclasses import replace

    from edgefleet.contract import MAX_PAYLOAD_BYTES
    from edgefleet.logs import configure_logging
    from edgefleet.mqtt import BrokerAddress, MqttError
    from fleet_server.db import make_engine
    from fleet_server.messaging.batch_mqtt import BatchSubscriber
    from fleet_server.messaging.ingest import Inbound, IngestWriter
    from fleet_server.models.types import utcnow

    configure_logging(config.log_level, quiet=("paho",))
    stats = IngestStats()
    engine = make_engine(config.database_url)
    writer = IngestWriter(
        engine=engine,
        stats=stats,
        batch_size=config.batch_size,
        clock=config.clock,
        statements=config.statements,
    )
    address = BrokerAddress.from_url(config.broker_url)
    if address.username is None and config.username is not None:
        address = replace(address, username=config.username, password=config.password)
    subscriber = BatchSubscriber(
        address,
        client_id=config.client_id,
        filters=[shared_filter(config.group, channel) for channel in WORKER_CHANNELS],
        receive_maximum=min(65_535, 2 * config.batch_size),
        # Larger than any payload ingest accepts, so oversized ones arrive and are counted.
        max_packet_bytes=4 * MAX_PAYLOAD_BYTES + 1024,
    )
    backoff, reported, connected_once = 0.5, 0.0, False

    def wait(delay: float) -> bool:
        """Between attempts to reach the database: keep the broker connection alive, report
        (``/readyz`` sees the stall), watch for the stop word; False to give up."""
        deadline = time.monotonic() + delay
        while True:
            with contextlib.suppress(OSError):
                pipe.send(stats.export())
            if subscriber.connected:
                try:
                    subscriber.keep_alive()
                except MqttError as err:  # the batch is still stored; its acks cannot be sent
                    log.warning("ingest worker lost the broker", extra={"error": str(err)})
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return True
            if _stop_requested(pipe, min(remaining, 1.0)):
                return False

    try:
        while not _stop_requested(pipe, 0):
            if not subscriber.connected:
                try:
                    subscriber.connect(timeout=config.connect_timeout_s)
                except MqttError as err:
                    log.warning("ingest worker cannot connect", extra={"error": str(err)})
                    if _stop_requested(pipe, backoff):
                        break
                    backoff = min(backoff * 2, 30.0)
                    continue
                backoff, connected_once = 0.5, True
                log.info("ingest worker connected", extra={"worker": config.name})
            try:
                batch = subscriber.receive(max_messages=config.batch_size, timeout=_REPORT_S)
                if batch:
                    now = utcnow()
                    inbound = [Inbound(m.topic, m.payload, now) for m in batch]
                    if not writer.write_now(inbound, wait=wait):
                        break  # stop asked while the database was down: nothing acked
                    if subscriber.connected:
                        subscriber.ack([m.packet_id for m in batch])  # stored first, then acked
            except MqttError as err:
                log.warning("ingest worker lost the broker", extra={"error": str(err)})
            if connected_once and time.monotonic() - reported >= _REPORT_S:
                pipe.send(stats.export())
                reported = time.monotonic()
    finally:
        subscriber.close()
        with contextlib.suppress(OSError):
            pipe.send(stats.export())
        pipe.close()
        engine.dispose()


def _stop_requested(pipe: Connection, timeout: float) -> bool:
    """Wait up to ``timeout`` for a stop word; the server process gone counts as one."""
    try:
        return pipe.poll(timeout) and pipe.recv() == _STOP
    except (EOFError, OSError):
        return True


class IngestWorkers:
    """Starts, watches (restarts the dead) and stops the worker processes.

    Each worker talks through a pipe of its own (counters up, the stop word down): a worker
    killed mid-write breaks only its own pipe, where a shared ``multiprocessing.Queue`` or
    ``Event`` would stay locked by it."""

    def __init__(self, configs: list[WorkerConfig], stats: IngestStats) -> None:
        self._configs = {config.name: config for config in configs}
        self._stats = stats
        self._ctx = mp.get_context("spawn")  # no fork of a threaded server process
        self._procs: dict[str, BaseProcess] = {}
        self._pipes: dict[str, Connection] = {}
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self.restarts = 0

    def start(self) -> None:
        for name in self._configs:
            self._spawn(name)
        self._thread = threading.Thread(target=self._watch, name="edgefleet-workers", daemon=True)
        self._thread.start()

    def _spawn(self, name: str) -> None:
        ours, theirs = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(
            target=worker_main,
            args=(self._configs[name], theirs),
            name=f"edgefleet-{name}",
            daemon=True,
        )
        proc.start()
        theirs.close()  # the worker holds the only other end: EOF here when it exits
        self._procs[name] = proc
        self._pipes[name] = ours

    @property
    def alive(self) -> bool:
        return bool(self._procs) and all(p.is_alive() for p in self._procs.values())

    def pids(self) -> dict[str, int | None]:
        return {name: proc.pid for name, proc in self._procs.items()}

    def wait_reporting(self, timeout: float) -> bool:
        """True once every worker has reported (it is connected and subscribed)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if set(self._stats.sources()) >= set(self._procs):
                return True
            if any(p.exitcode is not None for p in self._procs.values()):
                return False
            time.sleep(0.05)
        return False

    def _watch(self) -> None:
        while not self._closing.is_set():
            self._drain(timeout=0.5)
            for name, proc in list(self._procs.items()):
                if proc.exitcode is None or self._closing.is_set():
                    continue
                log.error(
                    "ingest worker died; starting it again",
                    extra={"worker": name, "exitcode": proc.exitcode},
                )
                self.restarts += 1
                self._drain(timeout=0)
                self._pipes.pop(name).close()
                # Its counts so far stay in the totals under a retired name.
                last = self._stats.sources().get(name)
                if last is not None:
                    # Its counters stay; its gauges do not (a worker that died while the
                    # database was down must not keep /readyz at "stalled").
                    retired = {**last, "queue_depth": 0, "stalled": False}
                    self._stats.merge(f"{name}.{self.restarts}", retired)
                    self._stats.merge(name, _zero(last))
                self._spawn(name)

    def _drain(self, timeout: float) -> None:
        by_pipe = {pipe: name for name, pipe in self._pipes.items()}
        for pipe in connection_wait(list(by_pipe), timeout=timeout):
            assert isinstance(pipe, Connection)
            try:
                while pipe.poll():
                    self._stats.merge(by_pipe[pipe], pipe.recv())
            except (EOFError, OSError):
                continue  # the worker exited; _watch sees it

    def stop(self, timeout: float = 20.0) -> None:
        """Ask every worker to drain and exit; kill what is still running after ``timeout``."""
        self._closing.set()
        if self._thread is not None:
            self._thread.join(5)
        for pipe in self._pipes.values():
            with contextlib.suppress(OSError):
                pipe.send(_STOP)
        deadline = time.monotonic() + timeout
        for name, proc in self._procs.items():
            while proc.is_alive() and time.monotonic() < deadline:
                self._drain(timeout=0.1)  # keep its pipe from filling while it drains
            if proc.is_alive():
                log.error("ingest worker did not stop in time; killing it", extra={"worker": name})
                proc.kill()
            proc.join(5)
        self._drain(timeout=0)
        for pipe in self._pipes.values():
            pipe.close()


def _zero(exported: dict[str, Any]) -> dict[str, Any]:
    return {
        key: (dict.fromkeys(value, 0) if isinstance(value, dict) else 0)
        for key, value in exported.items()
    }
