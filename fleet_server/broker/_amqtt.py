"""amqtt 0.12 glue: the broker subclass and the guard every TCP connection is read through.

amqtt's broker trusts its clients: it waits forever for a CONNECT packet, reads a packet of any
announced size (up to 256 MB) into memory, never enforces the keep-alive (so a device that loses
power is never declared dead and its Last Will never fires) and leaves a socket open when the
first packet is garbage. :class:`GuardedReader` frames the byte stream itself and closes the
connection on each of those; :class:`GuardedBroker` applies it, caps the connection count, and
stops amqtt from sending a connecting client the retained messages of other clients'
subscriptions. Overrides two amqtt internals (``_client_connected`` is called, and
``_publish_retained_messages_for_subscription`` wrapped): pinned to amqtt 0.12 by the tests.
Imported only when the embedded broker starts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from amqtt.adapters import StreamReaderAdapter, StreamWriterAdapter

from fleet_server.broker._amqtt_held import HeldAckBroker

log = logging.getLogger(__name__)

_HEADER, _LENGTH, _BODY = 0, 1, 2
#: MQTT 3.1.1 CONNECT: protocol name length 4 ("MQTT"), level, flags, then the keep-alive.
_CONNECT_PREFIX = b"\x00\x04MQTT"
_KEEPALIVE_END = 10
#: MQTT 3.1.1 §3.1.2.10: the server disconnects after one and a half keep-alive periods.
_KEEPALIVE_GRACE = 1.5
_MAX_LENGTH_BYTES = 4

#: amqtt logs these for every port probe and every hostile connection, at ERROR or WARNING,
#: and a traceback when its bind fails (which EmbeddedBroker.start reports as one line).
_NOISY_PREFIXES = (
    "Broker startup failed",
    "No data from",
    "[MQTT-3.1.0-1]",
    "Failed to initialize client session",
    "Invalid connection from",
)


class ConnectionRefused(ConnectionResetError):
    """Raised by the guard; amqtt treats it as the peer dropping the connection."""


class GuardedReader(StreamReaderAdapter):  # type: ignore[misc]  # amqtt ships no types
    """Frames MQTT packets as amqtt reads them, enforcing size, CONNECT and keep-alive limits.

    amqtt reads every packet sequentially through ``read(n)`` (one header byte, the
    remaining-length bytes one at a time, then the body), so counting bytes is enough to know
    where each packet starts and how large it says it is. Time limits are kept by one timer per
    connection, not per read: on expiry ``on_expire`` (the transport's ``abort``) ends the
    connection and the pending read fails.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        *,
        max_packet_bytes: int,
        connect_timeout: float,
        on_expire: Callable[[], object],
    ) -> None:
        super().__init__(reader)
        self._loop = asyncio.get_running_loop()
        self._max_packet_bytes = max_packet_bytes
        self._connect_deadline: float | None = self._loop.time() + connect_timeout
        self._keepalive: float | None = None
        self._last_rx = self._loop.time()
        self._state = _HEADER
        self._length = 0
        self._length_bytes = 0
        self._remaining = 0
        self._connect_head = bytearray()
        self._on_expire = on_expire
        self._timer: asyncio.TimerHandle | None = None
        self.refused: str | None = None
        self._arm()

    @property
    def keepalive(self) -> float | None:
        """Seconds the client promised in CONNECT (None before CONNECT or when 0)."""
        return self._keepalive

    @property
    def awaiting_connect(self) -> bool:
        return self._connect_deadline is not None

    def close(self) -> None:
        """Stop the timer; the connection is over."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def read(self, n: int = -1) -> bytes:
        if self.refused is not None:
            raise ConnectionRefused(self.refused)
        try:
            data: bytes = await super().read(n)
        except (asyncio.IncompleteReadError, ConnectionError) as err:
            if self.refused is not None:
                raise ConnectionRefused(self.refused) from err
            raise
        if data:
            self._last_rx = self._loop.time()
            self._track(data)
        return data

    def _deadline(self) -> float | None:
        if self._connect_deadline is not None:
            return self._connect_deadline
        if self._keepalive is not None:
            return self._last_rx + self._keepalive * _KEEPALIVE_GRACE
        return None

    def _arm(self) -> None:
        self.close()
        deadline = self._deadline()
        if deadline is not None and self.refused is None:
            self._timer = self._loop.call_at(deadline, self._check)

    def _check(self) -> None:
        self._timer = None
        deadline = self._deadline()
        if deadline is None or self.refused is not None:
            return
        if self._loop.time() < deadline:  # traffic since the timer was set
            self._arm()
            return
        self.refused = "keep-alive expired" if self._keepalive else "no CONNECT packet in time"
        self._on_expire()

    def _refuse(self, why: str) -> ConnectionRefused:
        self.refused = why
        self.close()
        return ConnectionRefused(why)

    def _track(self, data: bytes) -> None:
        index = 0
        size = len(data)
        while index < size:
            if self._state == _BODY:
                take = min(self._remaining, size - index)
                if self._connect_deadline is not None and len(self._connect_head) < _KEEPALIVE_END:
                    self._connect_head += data[index : index + take]
                self._remaining -= take
                index += take
                if self._remaining == 0:
                    self._packet_done()
                continue
            byte = data[index]
            index += 1
            if self._state == _HEADER:
                self._state, self._length, self._length_bytes = _LENGTH, 0, 0
                continue
            self._length += (byte & 0x7F) << (7 * self._length_bytes)
            self._length_bytes += 1
            if byte & 0x80:
                if self._length_bytes >= _MAX_LENGTH_BYTES:
                    raise self._refuse("malformed remaining length")
                continue
            if self._length > self._max_packet_bytes:
                raise self._refuse(
                    f"packet of {self._length} bytes exceeds {self._max_packet_bytes} bytes"
                )
            self._remaining = self._length
            self._state = _BODY
            if self._remaining == 0:
                self._packet_done()

    def _packet_done(self) -> None:
        self._state = _HEADER
        if self._connect_deadline is None:
            return
        self._connect_deadline = None
        head = bytes(self._connect_head)
        if head.startswith(_CONNECT_PREFIX) and len(head) >= _KEEPALIVE_END:
            keepalive = int.from_bytes(head[8:_KEEPALIVE_END], "big")
            self._keepalive = float(keepalive) if keepalive > 0 else None
        self._connect_head = bytearray()
        self._arm()


class GuardedBroker(HeldAckBroker):
    """amqtt's broker with every TCP connection read through a :class:`GuardedReader`, and a
    device's QoS 1 message acknowledged only once delivered (:mod:`._amqtt_held`)."""

    def __init__(
        self,
        config: dict[str, Any],
        *,
        max_connections: int,
        max_packet_bytes: int,
        connect_timeout: float,
    ) -> None:
        super().__init__(config, loop=asyncio.get_running_loop())
        self._max_connections = max_connections
        self._max_packet_bytes = max_packet_bytes
        self._connect_timeout = connect_timeout
        self._open_connections = 0
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def open_connections(self) -> int:
        return self._open_connections

    def abort_connections(self) -> int:
        """Reset every open client connection; returns how many.

        Done before amqtt's shutdown (see ``embedded._shutdown``), and again if it does not
        finish: amqtt stops a session by cancelling its reader task and waiting for it, and on
        Python 3.11 ``asyncio.wait_for`` can swallow that cancellation when a packet arrives
        at the same moment (gh-86296), so a busy client's reader keeps reading and the
        shutdown waits forever. A reset connection ends the reader with end-of-file instead.
        """
        writers = list(self._writers)
        for writer in writers:
            writer.transport.abort()
        return len(writers)

    async def stream_connected(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, listener_name: str
    ) -> None:
        if self._open_connections >= self._max_connections:
            log.warning("refusing a connection: %d connections are open", self._open_connections)
            writer.close()
            return
        self._open_connections += 1
        self._writers.add(writer)
        guarded = GuardedReader(
            reader,
            max_packet_bytes=self._max_packet_bytes,
            connect_timeout=self._connect_timeout,
            on_expire=writer.transport.abort,
        )
        try:
            await self._client_connected(listener_name, guarded, StreamWriterAdapter(writer))
        except Exception as err:  # a hostile first packet can raise anything amqtt's parser hits
            log.debug("dropped a connection that amqtt could not handle: %r", err)
        finally:
            guarded.close()
            self._open_connections -= 1
            self._writers.discard(writer)
            if guarded.refused is not None:
                log.info("closed a connection: %s", guarded.refused)
            if not writer.is_closing():
                writer.close()

    async def _publish_retained_messages_for_subscription(
        self, subscription: tuple[str, int], session: Any
    ) -> None:
        # amqtt calls this on every CONNECT for every filter *any* client subscribed to, which
        # hands one device the retained state of others: send only for the session's own.
        subscribers = self._subscriptions.get(subscription[0], [])
        if any(sub.client_id == session.client_id for sub, _qos in subscribers):
            await super()._publish_retained_messages_for_subscription(subscription, session)


class QuietProbes(logging.Filter):
    """Demote amqtt's per-connection complaints (port probes, garbage) to DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.DEBUG and str(record.msg).startswith(_NOISY_PREFIXES):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


_QUIET = QuietProbes()


def quiet_amqtt_logging() -> None:
    """amqtt logs every connection at INFO: keep it at WARNING unless someone chose a level."""
    for name in ("amqtt", "transitions"):
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.WARNING)
    broker_logger = logging.getLogger("amqtt.broker")
    if _QUIET not in broker_logger.filters:
        broker_logger.addFilter(_QUIET)


def amqtt_config(*, host: str, port: int, anonymous: bool = True) -> dict[str, Any]:
    """One TCP listener, no $SYS topics and no per-packet logging plugins.

    ``anonymous``: every client is admitted and marked anonymous (amqtt then queues nothing for
    offline persistent sessions). Otherwise amqtt's check only asks for a user name: the real
    one runs earlier (:mod:`fleet_server.broker._amqtt_access`).
    """
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}", "max_connections": 0}},
        "plugins": {
            "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": anonymous}
        },
    }
