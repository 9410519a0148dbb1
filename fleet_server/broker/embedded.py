"""The embedded broker: amqtt in its own thread and event loop, driven from sync code."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import logging
import socket
import threading
from typing import TYPE_CHECKING, Any

from fleet_server.broker.base import BrokerError
from fleet_server.broker.config import AuthThrottleConfig, EmbeddedBrokerConfig
from fleet_server.broker.throttle import AuthThrottle

if TYPE_CHECKING:
    from fleet_server.broker._amqtt import GuardedBroker
    from fleet_server.broker.access import Authenticator

log = logging.getLogger(__name__)

#: How long ``stop`` waits for amqtt to close its sessions before giving up on the thread.
_STOP_TIMEOUT = 10.0
#: How long amqtt may take to close its sessions before their connections are reset.
_GRACEFUL_STOP_S = 2.0


class EmbeddedBroker:
    """An MQTT 3.1.1 broker (amqtt) serving on ``host:port`` from a daemon thread.

    QoS 0/1, retained messages, Last Will, wildcards. Connections are read through a guard
    that enforces a packet size limit, a CONNECT deadline and the keep-alive.

    Without ``authenticator`` every client is admitted anonymously and may use any topic (tests,
    a closed lab network). With one, each CONNECT needs a user name and password it accepts, and
    the identity it returns confines the client to its topics (:mod:`.access`); repeated
    failures lock the user name and the source address for a while (``auth_throttle``,
    :mod:`.throttle`).

    With ``gate_devices`` (and an authenticator), every start closes the gate: devices are
    refused (CONNACK 0x03, server unavailable; they retry with back-off) until
    :meth:`admit_devices` opens it, which the server calls once its own subscriptions are
    acknowledged. A fresh broker has no sessions, so a device that drained its offline queue
    into it before the server subscribed would have its messages acknowledged and dropped.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 1884,
        max_connections: int = 1000,
        max_packet_bytes: int | None = None,
        connect_timeout: float = 10.0,
        authenticator: Authenticator | None = None,
        gate_devices: bool = False,
        auth_throttle: AuthThrottleConfig | None = None,
    ) -> None:
        self._authenticator = authenticator
        self._gate_devices = gate_devices
        self._devices_open = threading.Event()
        fields: dict[str, object] = {
            "host": host,
            "port": port,
            "max_connections": max_connections,
            "connect_timeout": connect_timeout,
        }
        if max_packet_bytes is not None:
            fields["max_packet_bytes"] = max_packet_bytes
        if auth_throttle is not None:
            fields["auth_throttle"] = auth_throttle
        try:
            self._config = EmbeddedBrokerConfig.model_validate(fields)
        except ValueError as err:
            raise BrokerError(f"invalid embedded broker settings: {err}") from err
        self._port = self._config.port
        #: Failed-login locks; kept across restarts of this broker (one per server process).
        self.auth_throttle = AuthThrottle(self._config.auth_throttle)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._broker: GuardedBroker | None = None

    @classmethod
    def from_config(
        cls, config: EmbeddedBrokerConfig, *, authenticator: Authenticator | None = None
    ) -> EmbeddedBroker:
        return cls(
            host=config.host,
            port=config.port,
            max_connections=config.max_connections,
            max_packet_bytes=config.max_packet_bytes,
            connect_timeout=config.connect_timeout,
            authenticator=authenticator,
            auth_throttle=config.auth_throttle,
        )

    @property
    def requires_auth(self) -> bool:
        """True when clients must authenticate (an authenticator was given)."""
        return self._authenticator is not None

    @property
    def devices_admitted(self) -> bool:
        """False while a gated broker refuses devices (see :meth:`admit_devices`)."""
        return self._devices_open.is_set()

    def admit_devices(self) -> None:
        """Open the device gate (thread-safe; a no-op when already open)."""
        if not self._devices_open.is_set():
            self._devices_open.set()
            log.info("embedded MQTT broker admits devices")

    @property
    def host(self) -> str:
        return self._config.host

    @property
    def port(self) -> int:
        """The listening port (the one picked at start when configured as 0)."""
        return self._port

    @property
    def url(self) -> str:
        host = self._config.host
        if ":" in host:
            host = f"[{host}]"
        return f"mqtt://{host}:{self._port}"

    @property
    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    @property
    def open_connections(self) -> int:
        """TCP connections currently open (0 when stopped)."""
        broker = self._broker
        return broker.open_connections if broker is not None else 0

    def start(self, *, timeout: float = 10.0) -> None:
        """Start serving; return once the listener accepts connections.

        Raises :class:`BrokerError` with one line (port in use, bad address, amqtt missing) and
        leaves no thread behind.
        """
        with self._lock:
            if self.running:
                raise BrokerError(f"embedded broker already running on {self.url}")
            try:
                from fleet_server.broker import _amqtt
            except ModuleNotFoundError as err:
                raise BrokerError(
                    f"the embedded broker needs the {err.name!r} package: "
                    "pip install 'edgefleet[server]'"
                ) from err
            _amqtt.quiet_amqtt_logging()
            if self._gate_devices and self._authenticator is not None:
                self._devices_open.clear()
            else:
                self._devices_open.set()
            self._port = _claim_port(self._config.host, self._config.port)
            ready, abandon = threading.Event(), threading.Event()
            failure: list[BaseException] = []
            thread = threading.Thread(
                target=self._run,
                args=(ready, abandon, failure),
                name=f"edgefleet-broker-{self._port}",
                daemon=True,
            )
            self._thread = thread
            thread.start()
            if not ready.wait(timeout):
                abandon.set()
                self._shutdown(thread)
                raise BrokerError(f"embedded broker did not start within {timeout:g} s")
            if failure:
                thread.join(_STOP_TIMEOUT)
                self._thread = None
                cause = failure[0]
                raise BrokerError(
                    f"embedded broker cannot listen on {self.url}: {cause}"
                ) from cause
        log.info("embedded MQTT broker listening on %s", self.url)

    def stop(self) -> None:
        """Close every session and the listener and join the thread. Safe to call twice."""
        with self._lock:
            thread = self._thread
            if thread is None:
                return
            if self._gate_devices and self._authenticator is not None:
                self._devices_open.clear()  # nobody reconnects into a broker that is stopping
            self._shutdown(thread)
        log.info("embedded MQTT broker on %s stopped", self.url)

    def drop_client(self, username: str, *, timeout: float = 5.0) -> int:
        """Close the connections of the device logged in as ``username`` now (thread-safe): a
        decommissioned device or a rotated token does not keep a connection it opened before
        (the database refuses its next CONNECT). Returns how many; 0 when not running or
        without authentication (no identities to match)."""
        loop, broker = self._loop, self._broker
        drop = getattr(broker, "drop_user", None)
        if loop is None or drop is None:
            return 0

        async def on_the_loop() -> int:
            return int(drop(username))

        try:
            return asyncio.run_coroutine_threadsafe(on_the_loop(), loop).result(timeout)
        except (RuntimeError, TimeoutError, concurrent.futures.CancelledError) as err:
            raise BrokerError(f"embedded broker did not drop {username!r}: {err}") from err

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _shutdown(self, thread: threading.Thread) -> None:
        loop, stop_event = self._loop, self._stop_event
        if loop is not None and stop_event is not None:
            with contextlib.suppress(RuntimeError):  # the loop already closed on its own
                loop.call_soon_threadsafe(stop_event.set)
        thread.join(_STOP_TIMEOUT)
        if thread.is_alive():
            log.warning("embedded broker thread did not stop within %.0f s", _STOP_TIMEOUT)
        self._thread = None
        self._loop = None
        self._stop_event = None
        self._broker = None

    def _run(
        self, ready: threading.Event, abandon: threading.Event, failure: list[BaseException]
    ) -> None:
        try:
            asyncio.run(self._serve(ready, abandon))
        except BaseException as err:  # reported to start(); the thread must not die silently
            if ready.is_set():
                log.exception("embedded broker stopped unexpectedly")
            else:
                failure.append(err)
        finally:
            ready.set()

    async def _serve(self, ready: threading.Event, abandon: threading.Event) -> None:
        from fleet_server.broker._amqtt import GuardedBroker, amqtt_config

        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        config = amqtt_config(
            host=self._config.host, port=self._port, anonymous=self._authenticator is None
        )
        guard: dict[str, Any] = {
            "max_connections": self._config.max_connections,
            "max_packet_bytes": self._config.max_packet_bytes,
            "connect_timeout": self._config.connect_timeout,
        }
        broker: GuardedBroker
        if self._authenticator is None:
            broker = GuardedBroker(config, **guard)
        else:
            from fleet_server.broker._amqtt_access import AccessControlledBroker

            broker = AccessControlledBroker(
                config,
                authenticator=self._authenticator,
                devices_open=self._devices_open if self._gate_devices else None,
                throttle=self.auth_throttle,
                **guard,
            )
        await broker.start()
        self._broker = broker
        ready.set()
        try:
            if not abandon.is_set():  # start() gave up waiting: close again at once
                await self._stop_event.wait()
        finally:
            await _shutdown(broker)


async def _shutdown(broker: GuardedBroker) -> None:
    """Reset every client connection, then amqtt's shutdown (again resetting what it could
    not close in time), so the listener always goes away.

    Resetting first means nothing is acknowledged once stopping has begun: amqtt removes the
    sessions one at a time, and a device still connected after the server's session is gone
    would have its QoS 1 messages acknowledged with nobody to deliver them to. Unacknowledged,
    its client sends them again after reconnecting (ingest de-duplicates)."""
    broker.abort_connections()
    task = asyncio.ensure_future(broker.shutdown())
    done, _pending = await asyncio.wait({task}, timeout=_GRACEFUL_STOP_S)
    if not done:
        aborted = broker.abort_connections()
        log.warning(
            "embedded broker: sessions did not close within %.0f s; reset %d connections",
            _GRACEFUL_STOP_S,
            aborted,
        )
    await task


def _claim_port(host: str, port: int) -> int:
    """Check that ``host:port`` can be bound (and pick a port for 0) before amqtt tries.

    amqtt logs a traceback at ERROR when its bind fails; this turns the common case (port in
    use) into one line and resolves port 0, which amqtt cannot report back.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as err:
        raise BrokerError(f"embedded broker: cannot resolve host {host!r}: {err}") from err
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
            sock.listen(1)
        except OSError as err:
            reason = "port in use" if err.errno == errno.EADDRINUSE else err.strerror or str(err)
            raise BrokerError(f"embedded broker cannot listen on {host}:{port}: {reason}") from err
        return int(sock.getsockname()[1])
