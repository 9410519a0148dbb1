"""A broker outage under steady telemetry, end to end: the scenario the e2e test asserts on and
``bench/outage_bench.py`` prints figures for.

A real fleet server (in-process, SQLite or PostgreSQL), a real broker (a private Mosquitto, or
the server's embedded amqtt broker), N real agent processes (``edgefleet agent run``, telemetry
every ``interval_s``) registered on the server and logging in with their own credentials. The
broker stops until every agent has ``min_buffered`` telemetry messages in its outbox (optionally
one agent is SIGKILLed mid-outage and restarted offline), then starts again on the same port.

Ground truth is what each agent logged as queued (debug line ``queued`` with channel and seq);
the database must hold every queued telemetry and event seq. State is coalesced in the outbox
by design (only the newest unsent state is kept), so state seqs are not expected one by one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tests.utils.agent_process import Device, agent_toml
from tests.utils.mosquitto import PrivateMosquitto
from tests.utils.net import restartable_port
from tests.utils.server import LiveServer, live_server

BrokerKind = Literal["mosquitto", "embedded"]


@dataclass(frozen=True)
class OutageOptions:
    broker: BrokerKind = "mosquitto"
    database_url: str | None = None  # None: SQLite in the work directory
    agents: int = 3
    interval_s: float = 0.2
    min_buffered: int = 20
    #: SIGKILL agent 0 once it has buffered half of ``min_buffered``, restart it offline.
    kill_one: bool = False
    #: Mosquitto: ``persistence true`` (sessions survive the restart). False shows the failure.
    broker_persistence: bool = True
    #: Stop Mosquitto with SIGKILL (a crash: nothing saved since the last autosave).
    broker_crash: bool = False
    #: Extra mosquitto.conf lines (e.g. ``autosave_interval 1``).
    broker_conf: str = ""
    #: Server settings over the scenario's (a kept session: ``mqtt_session_expiry_s=300``;
    #: ``0`` is the old clean session).
    server_settings: dict[str, Any] = field(default_factory=dict)
    drain_timeout_s: float = 90.0


@dataclass(frozen=True)
class DeviceFigures:
    device_id: str
    queued: int  # telemetry + events the agent logged as queued
    buffered: int  # telemetry + events in the outbox when the broker came back
    drained: int  # of those, stored in the database afterwards
    lost: tuple[int, ...]  # queued telemetry/event seqs not in the database (gaps)
    unlogged: int  # stored seqs the agent never logged (a put just before SIGKILL)
    first_seq: int
    last_seq: int  # the last seq the agent logged as queued (any channel)
    unused: int  # numbers in first..last never queued (the seq block skipped after SIGKILL)


@dataclass(frozen=True)
class OutageResult:
    broker: str
    database: str
    outage_s: float
    drain_s: float | None  # broker back → every seq queued so far stored; None: never
    redelivered: int  # telemetry/event messages the server's MQTT client received again
    devices: tuple[DeviceFigures, ...]

    @property
    def buffered(self) -> int:
        return sum(d.buffered for d in self.devices)

    @property
    def drained(self) -> int:
        return sum(d.drained for d in self.devices)

    @property
    def lost(self) -> int:
        return sum(len(d.lost) for d in self.devices)

    @property
    def skipped(self) -> int:
        return sum(d.unused for d in self.devices)

    def line(self) -> str:
        drain = f"{self.drain_s:.2f}" if self.drain_s is not None else "never"
        return (
            f"broker={self.broker} db={self.database} outage={self.outage_s:.1f}s "
            f"buffered={self.buffered} drained={self.drained} lost={self.lost} "
            f"duplicates={self.redelivered} skipped_seqs={self.skipped} drain_s={drain}"
        )


class _Broker:
    """Stop and start whichever broker the scenario runs on, on the same port."""

    def __init__(self, options: OutageOptions, work: Path) -> None:
        self.options = options
        self.mosquitto: PrivateMosquitto | None = None
        self.server: LiveServer | None = None
        if options.broker == "mosquitto":
            self.mosquitto = PrivateMosquitto(
                work,
                persistent=options.broker_persistence,
                extra=options.broker_conf,
                port=restartable_port(),  # nobody else's free_port() takes it mid-outage
            )

    def stop(self) -> None:
        if self.mosquitto is not None:
            (self.mosquitto.kill if self.options.broker_crash else self.mosquitto.stop)()
        else:
            assert self.server is not None
            self.server.runtime.broker.stop()

    def start(self) -> None:
        if self.mosquitto is not None:
            self.mosquitto.start()
        else:
            assert self.server is not None
            self.server.runtime.broker.start(timeout=10)


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds until ``predicate`` held; TimeoutError naming ``what`` otherwise."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.05)
    return time.monotonic() - start


def _stored(server: LiveServer, device_ids: list[str]) -> dict[str, list[int]]:
    from sqlalchemy import text

    rows: dict[str, list[int]] = {d: [] for d in device_ids}
    with server.runtime.engine.connect() as conn:
        for table in ("telemetry", "event"):
            result = conn.execute(
                text(f"SELECT device_id, seq FROM {table}")  # noqa: S608 - constant names
            )
            for device_id, seq in result:
                if device_id in rows:
                    rows[device_id].append(int(seq))
    return rows


class _Tap:
    """Counts every telemetry/event (device, seq) the server's MQTT client receives, then
    hands the message to ingest as before (re-subscribing a filter replaces its handler)."""

    def __init__(self, runtime: Any) -> None:
        from edgefleet.contract import Channel
        from edgefleet.contract.topics import fleet_filter

        self.seen: dict[tuple[str, int], int] = {}
        self._submit = runtime.writer.submit
        for channel in (Channel.TELEMETRY, Channel.EVENTS):
            runtime.bus._transport.subscribe(fleet_filter(channel), self._handle, qos=1)

    def _handle(self, topic: str, payload: bytes, retained: bool) -> None:
        try:
            key = (topic.split("/")[2], int(json.loads(payload)["seq"]))
        except (ValueError, KeyError, IndexError, TypeError):
            key = None
        if key is not None:
            self.seen[key] = self.seen.get(key, 0) + 1
        self._submit(topic, payload, retained)

    @property
    def redelivered(self) -> int:
        return sum(n - 1 for n in self.seen.values())


def _expected(device: Device) -> set[int]:
    queued = device.queued()
    return set(queued.get("telemetry", [])) | set(queued.get("events", []))


@contextmanager
def _started(options: OutageOptions, work: Path) -> Iterator[tuple[_Broker, LiveServer]]:
    broker = _Broker(options, work)
    with ExitStack() as stack:
        broker_url = None
        if broker.mosquitto is not None:
            stack.callback(broker.mosquitto.cleanup)
            broker.mosquitto.start()
            broker_url = broker.mosquitto.url
        # The server keeps its session (MQTT v5, 5 minutes: enough for the outage, and a
        # random test client id leaves nothing behind for long).
        settings = {"mqtt_session_expiry_s": 300, **options.server_settings}
        if broker_url is None:
            settings.setdefault("embedded_broker_port", restartable_port())
        server = stack.enter_context(
            live_server(work, database_url=options.database_url, broker_url=broker_url, **settings)
        )
        broker.server = server
        yield broker, server


def run_outage(options: OutageOptions, work: Path) -> OutageResult:
    """Run the scenario in ``work`` and return its figures (agents are always stopped)."""
    from fleet_server.client.api import FleetClient

    with _started(options, work) as (broker, server):
        client = FleetClient(server.url, server.token, timeout=30)
        tag = f"og{time.time_ns() % 10**10}"
        devices: list[Device] = []
        for i in range(options.agents):
            created = client.add_device(f"{tag}-{i}")
            device = Device(
                device_id=str(created["device_id"]),
                token=str(created["token"]),
                data_dir=work / f"agent-{i}",
                config=work / f"agent-{i}.toml",
            )
            device.config.write_text(
                agent_toml(
                    device,
                    mqtt_url=server.broker_url,
                    server_url=server.url,
                    interval_s=options.interval_s,
                )
            )
            devices.append(device)
        try:
            return _scenario(options, broker, server, devices)
        finally:
            for device in devices:
                if device.run is not None:
                    device.run.kill()


def _scenario(
    options: OutageOptions, broker: _Broker, server: LiveServer, devices: list[Device]
) -> OutageResult:
    ids = [d.device_id for d in devices]
    for device in devices:
        device.start()
    wait_until(
        lambda: all(len(s) >= 3 for s in _stored(server, ids).values()),
        60,
        "telemetry from every agent before the outage",
    )
    runtime = server.runtime
    tap = _Tap(runtime)
    broker.stop()
    down = time.monotonic()
    if options.kill_one:
        victim = devices[0]
        half = max(1, options.min_buffered // 2)
        wait_until(lambda: victim.outbox("telemetry") >= half, 60, "buffering before the kill")
        assert victim.run is not None
        victim.run.kill()
        victim.start()  # offline: it queues behind what the killed process left
    wait_until(
        lambda: all(d.outbox("telemetry") >= options.min_buffered for d in devices),
        120,
        f"{options.min_buffered} buffered messages per agent",
    )
    buffered = {d.device_id: d.outbox_seqs() for d in devices}
    broker.start()
    up = time.monotonic()
    outage_s = up - down
    # Drained: every seq queued before the restart is stored (the outbox may hold newer ones).
    wanted = {d.device_id: _expected(d) for d in devices}
    drain_s: float | None
    try:
        wait_until(
            lambda: all(wanted[k] <= set(v) for k, v in _stored(server, ids).items()),
            options.drain_timeout_s,
            "every buffered seq stored",
        )
        drain_s = time.monotonic() - up
    except TimeoutError:
        drain_s = None
    for device in devices:
        assert device.run is not None
        device.run.stop()
    runtime.writer.flush(10)
    stored = _stored(server, ids)
    figures = []
    for device in devices:
        queued = device.queued()
        expected = _expected(device)
        every = sorted({s for seqs in queued.values() for s in seqs})
        have = set(stored[device.device_id])
        first, last = (every[0], every[-1]) if every else (0, 0)
        unused = (last - first + 1) - len(set(every)) if every else 0
        figures.append(
            DeviceFigures(
                device_id=device.device_id,
                queued=len(expected),
                buffered=len(buffered[device.device_id]),
                drained=len(buffered[device.device_id] & have),
                lost=tuple(sorted(expected - have)),
                unlogged=len(have - expected),
                first_seq=first,
                last_seq=last,
                unused=unused,
            )
        )
    return OutageResult(
        broker=options.broker
        + ("" if options.broker == "embedded" or options.broker_persistence else "-volatile")
        + ("-crash" if options.broker_crash else ""),
        database=(options.database_url or "sqlite").split(":", 1)[0].split("+")[0],
        outage_s=outage_s,
        drain_s=drain_s,
        redelivered=tap.redelivered,
        devices=tuple(figures),
    )
