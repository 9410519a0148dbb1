"""The embedded broker's life cycle: start, fail to start, stop, restart on the same port."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

from fleet_server.broker import BrokerError, EmbeddedBroker
from tests.utils.net import free_port, wait_for_port

if TYPE_CHECKING:
    from tests.fleet_server.broker.conftest import ClientFactory

pytestmark = pytest.mark.integration


def _broker_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("edgefleet-broker-")]


def test_start_serves_and_reports_its_url() -> None:
    port = free_port()
    broker = EmbeddedBroker(host="127.0.0.1", port=port)
    broker.start(timeout=10.0)
    try:
        assert broker.url == f"mqtt://127.0.0.1:{port}"
        assert broker.running
        wait_for_port("127.0.0.1", port, timeout=1)
    finally:
        broker.stop()
    assert not broker.running


def test_port_zero_picks_a_free_port(start_broker: Callable[..., EmbeddedBroker]) -> None:
    broker = start_broker(port=0)
    assert broker.port > 0
    assert broker.url == f"mqtt://127.0.0.1:{broker.port}"
    wait_for_port("127.0.0.1", broker.port, timeout=1)


def test_busy_port_fails_with_one_line_and_no_thread(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen(1)
        port = squatter.getsockname()[1]
        before = _broker_threads()
        broker = EmbeddedBroker(host="127.0.0.1", port=port)
        with caplog.at_level(logging.DEBUG), pytest.raises(BrokerError) as info:
            broker.start(timeout=5.0)
    message = str(info.value)
    assert "\n" not in message
    assert f"127.0.0.1:{port}" in message and "port in use" in message
    assert _broker_threads() == before
    assert not broker.running
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    broker.stop()  # stopping a broker that never started is harmless


def test_a_bind_failure_inside_amqtt_is_one_line_too(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from fleet_server.broker import embedded

    # Lose the race between the pre-flight bind check and amqtt's own bind.
    monkeypatch.setattr(embedded, "_claim_port", lambda host, port: port)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen(1)
        port = squatter.getsockname()[1]
        before = _broker_threads()
        broker = EmbeddedBroker(host="127.0.0.1", port=port)
        with caplog.at_level(logging.INFO), pytest.raises(BrokerError) as info:
            broker.start(timeout=5.0)
    assert str(info.value).startswith(f"embedded broker cannot listen on mqtt://127.0.0.1:{port}")
    assert "\n" not in str(info.value)
    assert _broker_threads() == before
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_stop_is_idempotent_and_frees_the_port_for_a_restart() -> None:
    before = _broker_threads()
    port = free_port()
    first = EmbeddedBroker(host="127.0.0.1", port=port)
    first.start()
    with socket.create_connection(("127.0.0.1", port)) as held:  # a client still connected
        held.sendall(b"\x10")
        first.stop()
        first.stop()
    assert _broker_threads() == before
    second = EmbeddedBroker(host="127.0.0.1", port=port)
    second.start(timeout=5.0)
    second.stop()
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))


def test_a_stopped_broker_can_start_again() -> None:
    broker = EmbeddedBroker(host="127.0.0.1", port=free_port())
    with broker:
        wait_for_port("127.0.0.1", broker.port, timeout=1)
    with broker:
        wait_for_port("127.0.0.1", broker.port, timeout=1)
    assert not broker.running


def test_starting_twice_is_refused(start_broker: Callable[..., EmbeddedBroker]) -> None:
    broker = start_broker()
    with pytest.raises(BrokerError, match="already running"):
        broker.start()


@pytest.mark.parametrize(
    "settings",
    [
        {"port": 70000},
        {"port": -1},
        {"host": ""},
        {"max_connections": 0},
        {"max_packet_bytes": 10},
        {"connect_timeout": 0},
    ],
)
def test_bad_settings_are_refused_before_starting(settings: dict[str, object]) -> None:
    with pytest.raises(BrokerError, match="invalid embedded broker settings"):
        EmbeddedBroker(**settings)  # type: ignore[arg-type]


def test_unresolvable_host_is_one_line() -> None:
    before = _broker_threads()
    broker = EmbeddedBroker(host="no-such-host.invalid", port=free_port())
    with pytest.raises(BrokerError, match="cannot resolve host"):
        broker.start(timeout=5.0)
    assert _broker_threads() == before


def test_amqtt_does_not_log_connections_at_info(
    start_broker: Callable[..., EmbeddedBroker], caplog: pytest.LogCaptureFixture
) -> None:
    broker = start_broker()
    with caplog.at_level(logging.INFO):
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", broker.port)):
                pass
        broker.stop()
    noisy = [r for r in caplog.records if r.name.startswith(("amqtt", "transitions"))]
    assert noisy == []


def test_stop_ends_even_when_a_session_reader_ignores_its_cancellation(
    monkeypatch: pytest.MonkeyPatch, connect: ClientFactory
) -> None:
    """Python 3.11's ``asyncio.wait_for`` can swallow the cancellation amqtt uses to stop a
    busy client's reader (gh-86296): amqtt's shutdown then waits forever and the listener
    stays up. Simulated here by a reader that swallows it every time."""
    import asyncio
    import time

    from fleet_server.broker import _amqtt

    original = _amqtt.GuardedReader.read

    async def stubborn_read(self: _amqtt.GuardedReader, n: int = -1) -> bytes:
        while True:
            try:
                return await original(self, n)
            except asyncio.CancelledError:
                continue

    monkeypatch.setattr(_amqtt.GuardedReader, "read", stubborn_read)
    broker = EmbeddedBroker(host="127.0.0.1", port=free_port())
    broker.start(timeout=10)
    try:
        connect(broker.url, "busy-client")
        started = time.monotonic()
        broker.stop()
        assert time.monotonic() - started < 8  # not the 10 s thread-join give-up
        assert not broker.running
        with pytest.raises(OSError):  # the listener is gone: a restart can take the port
            socket.create_connection(("127.0.0.1", broker.port), timeout=1).close()
    finally:
        broker.stop()
