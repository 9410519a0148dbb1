"""Thousands of simulated devices: light MQTT clients on one asyncio loop per process.

:class:`hil.fleet.FleetSimulator` drives a paho client per device from one thread; past ~1,000
devices that thread is the bottleneck, not the server. Here each device is a
:class:`hil.mqtt_lite.LiteClient` (a few hundred bytes of state, no thread, no lock), each
worker process runs one event loop for its share of the fleet, and the devices speak exactly
what :class:`hil.device.DeviceLogic` speaks (status with a Last Will, retained state, desired
state, a real bundle download with the token checked by size and SHA-256, events, telemetry).

    swarm = Swarm(broker_url, server_url, [(device_id, token), ...], processes=2)
    swarm.start(); swarm.stats(); swarm.stop()

Worker processes are spawned (not forked: the caller may be running a server in threads).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import resource
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from edgefleet.contract import DesiredState
from edgefleet.mqtt import BrokerAddress
from hil.device import Behaviour, DeviceLogic, will_of
from hil.fleet import FleetStats
from hil.mqtt_lite import LiteClient, Message, Will

#: Connections opening at once per process (a SYN burst of 5,000 overflows the listen backlog).
CONNECTING_AT_ONCE = 128
KEEPALIVE_S = 60
STATS_TIMEOUT_S = 180.0


def raise_fd_limit(wanted: int) -> int:
    """Raise this process's open-file soft limit towards ``wanted`` (never above the hard
    limit); returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(max(soft, wanted), hard) if hard != resource.RLIM_INFINITY else max(soft, wanted)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@dataclass(frozen=True)
class ShardConfig:
    """What one worker process is given (pickled to it)."""

    host: str
    port: int
    server_url: str
    devices: list[tuple[str, str]]
    behaviour: Behaviour
    telemetry_interval_s: float
    download_workers: int
    first_seed: int
    clear_retained: bool


class _LiteDevice:
    """One device: its protocol behaviour and its connection, with reconnect bookkeeping."""

    def __init__(self, logic: DeviceLogic, client: LiteClient) -> None:
        self.logic = logic
        self.client = client
        self.reconnect_at: float | None = None
        self.connecting = False


class _Shard:
    def __init__(self, config: ShardConfig, conn: Connection) -> None:
        self.config = config
        self.conn = conn
        self.stopping = asyncio.Event()
        self.pool = ThreadPoolExecutor(config.download_workers, thread_name_prefix="swarm-dl")
        self.gate = asyncio.Semaphore(CONNECTING_AT_ONCE)
        self.devices: list[_LiteDevice] = []

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        raise_fd_limit(len(self.config.devices) + 256)
        count = max(1, len(self.config.devices))

        def schedule(call: Callable[[], None]) -> None:
            loop.call_soon_threadsafe(call)

        for index, (device_id, token) in enumerate(self.config.devices):
            will_topic, will_payload = will_of(device_id)
            client = LiteClient(
                device_id,
                username=device_id,
                password=token,
                will=Will(will_topic, will_payload),
                keepalive=KEEPALIVE_S,
            )
            logic = DeviceLogic(
                device_id,
                token,
                wire=client,
                schedule=schedule,
                behaviour=self.config.behaviour,
                telemetry_interval_s=self.config.telemetry_interval_s,
                seed=self.config.first_seed + index,
            )
            logic.on_update = self._on_update
            # Spread telemetry over the interval instead of a thundering herd.
            logic.next_telemetry = loop.time() + self.config.telemetry_interval_s * index / count
            device = _LiteDevice(logic, client)
            self._wire(device)
            self.devices.append(device)
        loop.add_reader(self.conn.fileno(), self._command)
        tasks = [asyncio.create_task(self._connect(d)) for d in self.devices]
        housekeeping = asyncio.create_task(self._housekeeping())
        await self.stopping.wait()
        housekeeping.cancel()
        for task in tasks:
            task.cancel()
        if self.config.clear_retained:
            await self._clear_retained()
        for device in self.devices:
            device.client.disconnect()
        await asyncio.sleep(0.2)  # let the DISCONNECTs go out
        loop.remove_reader(self.conn.fileno())
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.conn.send({"stopped": True})

    async def _clear_retained(self) -> None:
        """Empty the retained status, state and desired topics of this shard's devices: a
        shared broker otherwise keeps 30,000 retained messages per 10,000-device run, and every
        server that subscribes later is flooded with them (Mosquitto then drops its queue)."""
        for device in self.devices:
            device.logic.clear_retained()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        while loop.time() < deadline and any(
            d.client.connected and d.client.unacked for d in self.devices
        ):
            await asyncio.sleep(0.1)

    def _wire(self, device: _LiteDevice) -> None:
        def lost(_reason: str) -> None:
            if not self.stopping.is_set():
                device.reconnect_at = asyncio.get_running_loop().time() + 1.0

        def message(msg: Message) -> None:
            device.logic.handle_desired(msg.payload)

        device.client.on_connect = device.logic.announce
        device.client.on_message = message
        device.client.on_lost = lost

    async def _connect(self, device: _LiteDevice) -> None:
        loop = asyncio.get_running_loop()
        device.connecting = True
        try:
            async with self.gate:
                await loop.create_connection(
                    lambda: device.client, self.config.host, self.config.port
                )
        except OSError:
            device.reconnect_at = loop.time() + 1.0
        finally:
            device.connecting = False

    async def _housekeeping(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(0.25)
            now = loop.time()
            for device in self.devices:
                client, logic = device.client, device.logic
                if client.connected:
                    if now >= logic.next_telemetry:
                        logic.next_telemetry = now + logic.interval
                        logic.publish_telemetry()
                    elif now - client.last_sent > KEEPALIVE_S / 2:
                        client.ping()
                elif (
                    device.reconnect_at is not None
                    and now >= device.reconnect_at
                    and not device.connecting
                    and client.transport is None
                ):
                    device.reconnect_at = None
                    asyncio.create_task(self._connect(device))  # noqa: RUF006 (kept by the loop until done)

    def _on_update(self, logic: DeviceLogic, desired: DesiredState) -> None:
        self.pool.submit(logic.apply_update, desired, server_url=self.config.server_url)

    def _command(self) -> None:
        try:
            command = self.conn.recv()
        except EOFError:
            self.stopping.set()
            return
        if command == "stats":
            self.conn.send(self._stats())
        elif command == "stop":
            self.stopping.set()

    def _stats(self) -> dict[str, Any]:
        running: dict[str, int] = {}
        for device in self.devices:
            logic = device.logic
            key = str(logic.running) if logic.running else "-"
            running[key] = running.get(key, 0) + 1
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "devices": len(self.devices),
            "connected": sum(d.client.connected for d in self.devices),
            "telemetry_sent": sum(d.logic.telemetry_sent for d in self.devices),
            "updates_committed": sum(d.logic.updates_committed for d in self.devices),
            "updates_failed": sum(d.logic.updates_failed for d in self.devices),
            "running": running,
            "cpu_s": usage.ru_utime + usage.ru_stime,
            "max_rss_kb": usage.ru_maxrss,
        }


def _worker(conn: Connection, config: ShardConfig) -> None:
    asyncio.run(_Shard(config, conn).run())


@dataclass(frozen=True)
class SwarmUsage:
    """The simulator's own cost: CPU seconds and peak RSS summed over its processes."""

    cpu_s: float
    max_rss_mb: float


class Swarm:
    """``Swarm(broker_url, server_url, devices=[(id, token), ...], processes=N)``; start/stop.
    The same ``stats()`` as :class:`hil.fleet.FleetSimulator`."""

    def __init__(
        self,
        broker_url: str,
        server_url: str,
        devices: Iterable[tuple[str, str]],
        *,
        behaviour: Behaviour | None = None,
        telemetry_interval_s: float = 5.0,
        processes: int = 2,
        download_workers: int = 8,
        clear_retained: bool = True,
    ) -> None:
        """``clear_retained``: on stop, the devices empty their retained topics."""
        broker = BrokerAddress.from_url(broker_url)
        if broker.tls:
            raise ValueError("the light simulator speaks plain MQTT only (mqtt://)")
        everyone = list(devices)
        processes = max(1, min(processes, len(everyone) or 1))
        self.size = len(everyone)
        self._configs = [
            ShardConfig(
                host=broker.host,
                port=broker.port,
                server_url=server_url,
                devices=everyone[shard::processes],
                behaviour=behaviour or Behaviour(),
                telemetry_interval_s=telemetry_interval_s,
                download_workers=download_workers,
                first_seed=shard * len(everyone),
                clear_retained=clear_retained,
            )
            for shard in range(processes)
        ]
        self._procs: list[Any] = []
        self._conns: list[Connection] = []
        self._last: list[dict[str, Any]] = []

    def start(self, *, connect_timeout: float = 120.0) -> None:
        context = multiprocessing.get_context("spawn")
        for index, config in enumerate(self._configs):
            parent, child = context.Pipe()
            proc = context.Process(
                target=_worker, args=(child, config), name=f"swarm-{index}", daemon=True
            )
            proc.start()
            child.close()
            self._procs.append(proc)
            self._conns.append(parent)
        deadline = time.monotonic() + connect_timeout
        while self.stats().connected < self.size:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.stats().connected}/{self.size} simulated devices connected"
                )
            time.sleep(0.1)

    def pids(self) -> list[int]:
        """The simulator's worker processes."""
        return [proc.pid for proc in self._procs if proc.pid is not None]

    def _ask(self) -> list[dict[str, Any]]:
        answers = []
        for index, conn in enumerate(self._conns):
            if not self._procs[index].is_alive():
                raise RuntimeError(
                    f"simulator process {index} died (exit {self._procs[index].exitcode})"
                )
            conn.send("stats")
            # Generous: on a 2-core machine at load 30+ a worker busy with 5,000 devices'
            # downloads waited > 30 s for the CPU (a 10,000-device run stopped there).
            if not conn.poll(STATS_TIMEOUT_S):
                raise TimeoutError(
                    f"simulator process {index} did not answer in {STATS_TIMEOUT_S:g} s"
                )
            answers.append(conn.recv())
        self._last = answers
        return answers

    def stats(self) -> FleetStats:
        answers = self._ask()
        running: dict[str, int] = {}
        for answer in answers:
            for key, count in answer["running"].items():
                running[key] = running.get(key, 0) + count
        return FleetStats(
            devices=sum(a["devices"] for a in answers),
            connected=sum(a["connected"] for a in answers),
            telemetry_sent=sum(a["telemetry_sent"] for a in answers),
            updates_committed=sum(a["updates_committed"] for a in answers),
            updates_failed=sum(a["updates_failed"] for a in answers),
            running=running,
        )

    def usage(self) -> SwarmUsage:
        """CPU and peak RSS of the simulator processes (as of the last ``stats()``)."""
        answers = self._last or self._ask()
        return SwarmUsage(
            cpu_s=sum(a["cpu_s"] for a in answers),
            max_rss_mb=sum(a["max_rss_kb"] for a in answers) / 1024,
        )

    def stop(self) -> None:
        for conn, proc in zip(self._conns, self._procs, strict=True):
            if proc.is_alive():
                with contextlib.suppress(OSError, EOFError):
                    conn.send("stop")
                    conn.poll(30)
        for proc in self._procs:
            proc.join(15)
            if proc.is_alive():
                proc.terminate()
                proc.join(5)
        for conn in self._conns:
            conn.close()
        self._procs.clear()
        self._conns.clear()
