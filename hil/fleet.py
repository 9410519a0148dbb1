"""Many simulated devices on one network thread: paho clients driven by one selector.

A thousand devices as a thousand ``loop_start()`` threads would measure the GIL, not the fleet.
Here one thread owns every paho client (paho's external-loop API: ``loop_read``,
``loop_write``, ``loop_misc`` and the socket callbacks), a small pool downloads bundles, and
everything a worker wants to publish is handed back to the network thread.
"""

from __future__ import annotations

import contextlib
import queue
import selectors
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgefleet.contract import DesiredState
from edgefleet.mqtt import BrokerAddress
from hil.device import Behaviour, DeviceLogic, SimDevice

if TYPE_CHECKING:
    import paho.mqtt.client as paho


@dataclass(frozen=True)
class FleetStats:
    devices: int
    connected: int
    telemetry_sent: int
    updates_committed: int
    updates_failed: int
    running: dict[str, int]


class FleetSimulator:
    """``FleetSimulator(broker_url, server_url, devices=[(id, token), ...])``; start/stop."""

    def __init__(
        self,
        broker_url: str,
        server_url: str,
        devices: Iterable[tuple[str, str]],
        *,
        behaviour: Behaviour | None = None,
        telemetry_interval_s: float = 5.0,
        download_workers: int = 8,
        clear_retained: bool = True,
    ) -> None:
        """``clear_retained``: on stop, the devices empty their retained topics (a shared broker
        is not left holding three retained messages per simulated device)."""
        self.clear_retained = clear_retained
        self.broker = BrokerAddress.from_url(broker_url)
        self.server_url = server_url
        self._calls: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._selector = selectors.DefaultSelector()
        self._pool = ThreadPoolExecutor(max_workers=download_workers, thread_name_prefix="sim-dl")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # id(paho client) → when to try reconnecting it (network thread only).
        self._reconnect_due: dict[int, float] = {}
        self.devices = [
            SimDevice(
                device_id,
                token,
                broker=self.broker,
                schedule=self._calls.put,
                behaviour=behaviour or Behaviour(),
                telemetry_interval_s=telemetry_interval_s,
                seed=index,
            )
            for index, (device_id, token) in enumerate(devices)
        ]
        for index, device in enumerate(self.devices):
            device.on_update = self._on_update
            # Spread telemetry over the interval instead of a thundering herd.
            device.next_telemetry = telemetry_interval_s * index / max(1, len(self.devices))
            self._wire(device.client)

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self, *, connect_timeout: float = 60.0) -> None:
        self._thread = threading.Thread(target=self._run, name="sim-net", daemon=True)
        self._thread.start()
        for device in self.devices:
            self._calls.put(lambda d=device: self._connect(d))  # type: ignore[misc]
        deadline = time.monotonic() + connect_timeout
        while self.stats().connected < len(self.devices):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.stats().connected}/{len(self.devices)} simulated devices connected"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        done = threading.Event()

        def disconnect() -> None:
            for device in self.devices:
                if self.clear_retained and device.client.is_connected():
                    device.clear_retained(qos=0)  # no PUBACK to wait for: flushed below
                device.client.disconnect()
                with contextlib.suppress(OSError):
                    device.client.loop_write()  # flush now: the network thread stops next
            done.set()

        if self._thread is not None and self._thread.is_alive():
            self._calls.put(disconnect)
            done.wait(10)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._selector.close()

    def pids(self) -> list[int]:
        """None: the simulator runs in the caller's process."""
        return []

    def stats(self) -> FleetStats:
        running: dict[str, int] = {}
        for device in self.devices:
            key = str(device.running) if device.running else "-"
            running[key] = running.get(key, 0) + 1
        return FleetStats(
            devices=len(self.devices),
            connected=sum(d.client.is_connected() for d in self.devices),
            telemetry_sent=sum(d.telemetry_sent for d in self.devices),
            updates_committed=sum(d.updates_committed for d in self.devices),
            updates_failed=sum(d.updates_failed for d in self.devices),
            running=running,
        )

    # -- network thread --------------------------------------------------------------------------
    def _connect(self, device: SimDevice) -> None:
        try:
            device.client.connect(self.broker.host, self.broker.port, keepalive=60)
        except OSError:
            self._reconnect_due[id(device.client)] = time.monotonic() + 1.0

    def _run(self) -> None:
        last_misc = 0.0
        while not self._stop.is_set():
            self._drain_calls()
            for key, mask in self._selector.select(timeout=0.02):
                client: paho.Client = key.data
                if mask & selectors.EVENT_READ:
                    client.loop_read()
                if mask & selectors.EVENT_WRITE:
                    client.loop_write()
            now = time.monotonic()
            if now - last_misc >= 0.25:
                last_misc = now
                self._housekeeping(now)

    def _drain_calls(self) -> None:
        while True:
            try:
                call = self._calls.get_nowait()
            except queue.Empty:
                return
            call()

    def _housekeeping(self, now: float) -> None:
        for device in self.devices:
            client = device.client
            client.loop_misc()
            if client.is_connected():
                if now >= device.next_telemetry:
                    device.next_telemetry = now + device.interval
                    device.publish_telemetry()
            elif now >= self._reconnect_due.get(id(client), float("inf")):
                self._reconnect_due[id(client)] = now + 2.0
                try:
                    client.reconnect()
                except OSError:
                    continue

    def _wire(self, client: paho.Client) -> None:
        def opened(c: paho.Client, _u: Any, sock: Any) -> None:
            self._selector.register(sock, selectors.EVENT_READ, c)

        def closed(c: paho.Client, _u: Any, sock: Any) -> None:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(sock)
            if not self._stop.is_set():
                self._reconnect_due[id(c)] = time.monotonic() + 1.0

        def want_write(c: paho.Client, _u: Any, sock: Any) -> None:
            try:
                self._selector.modify(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, c)
            except (KeyError, ValueError):
                self._selector.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, c)

        def done_write(c: paho.Client, _u: Any, sock: Any) -> None:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.modify(sock, selectors.EVENT_READ, c)

        client.on_socket_open = opened
        client.on_socket_close = closed
        client.on_socket_register_write = want_write
        client.on_socket_unregister_write = done_write

    def _on_update(self, device: DeviceLogic, desired: DesiredState) -> None:
        self._pool.submit(device.apply_update, desired, server_url=self.server_url)
