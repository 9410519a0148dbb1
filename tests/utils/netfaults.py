"""Network faults end to end: the scenarios ``tests/hil/test_netfaults.py`` asserts on (short)
and ``bench/netfaults_bench.py`` runs at full length and prints as a table.

A real fleet server (in-process) and a private Mosquitto on the host; real agent processes
inside a network namespace (:mod:`hil.netfaults`), reaching both through relays on the host end
of the veth pair (the broker on one host address, the server on another, so either can be made
unreachable alone). Each agent serves digits 1.0.0; then, under the fault, the server assigns
2.0.0 padded to ``bundle_kb`` (incompressible), and the fault holds for ``duration_s``. After
healing, the scenario waits until every agent committed 2.0.0 and every telemetry/event seq it
queued is stored.

Figures: drain (heal → all queued seqs stored), update time (assign → last commit), download
retries and bytes fetched twice (from the agents' ``download.*`` telemetry counters), MQTT
duplicates the server received (deduplicated by the (device, seq) key), and each agent's
threads, open file descriptors and RSS before the fault and after recovery.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edgefleet.artifact import hash_file, read_manifest
from edgefleet.contract import ModelFile
from hil.netfaults import NetNamespace, Relay
from tests.utils.agent_process import Device, agent_toml
from tests.utils.artifacts import build_digits_artifact, bundle_of
from tests.utils.mosquitto import PrivateMosquitto
from tests.utils.net import free_port
from tests.utils.outage import _expected, _stored, _Tap, wait_until
from tests.utils.server import LiveServer, live_server


@dataclass(frozen=True)
class Fault:
    """What breaks. ``rate_kbit``/``loss_pct``/``delay_s`` hold for ``duration_s``;
    ``partition`` drops every packet; ``flap`` toggles the link ``up_s``/``down_s``;
    ``block`` makes the server or the broker unreachable (the other stays up)."""

    rate_kbit: int | None = None
    loss_pct: float | None = None
    delay_s: float = 0.0
    jitter_s: float = 0.0
    partition: bool = False
    flap: tuple[float, float] | None = None
    block: str | None = None  # "server" | "broker"
    #: A slower link under the fault's start, so a download is in flight when it hits.
    base_rate_kbit: int | None = None
    #: Roll the version out (one stage, a long soak, the offline gate at 0 %) and break the
    #: link once every device committed: the rollout must abort and, healed, roll back.
    rollout: bool = False


SCENARIOS: dict[str, Fault] = {
    "loss-5": Fault(loss_pct=5),
    "loss-30": Fault(loss_pct=30),
    "delay-300ms": Fault(delay_s=0.3, jitter_s=0.1),
    "rate-256kbit": Fault(rate_kbit=256),
    "flap": Fault(flap=(20.0, 20.0), base_rate_kbit=2048),
    "partition": Fault(partition=True, base_rate_kbit=2048),
    "server-unreachable": Fault(block="server", base_rate_kbit=2048),
    "broker-unreachable": Fault(block="broker", base_rate_kbit=2048),
    "rollout-partition": Fault(partition=True, rollout=True),
}

#: The rollout of ``rollout-partition``: everyone in one stage, a soak longer than the fault,
#: only the success and offline gates; a committed device offline for 3 s (``grace_s``; the
#: default 60 s would outlast the test's 30 s partition) fails the offline gate.
ROLLOUT_SOAK_S = 3600.0
ROLLOUT_GATES = {
    "error_rate": {"enabled": False},
    "latency_p95_ratio": {"enabled": False},
    "confidence_shift": {"enabled": False},
    "label_accuracy": {"enabled": False},
    "offline": {"max_fraction": 0.0, "grace_s": 3.0},
}


@dataclass(frozen=True)
class Step:
    """One scenario of a run: the fault and how long it holds."""

    scenario: str
    duration_s: float
    #: Overrides the scenario's flap (up_s, down_s).
    flap: tuple[float, float] | None = None

    @property
    def fault(self) -> Fault:
        fault = SCENARIOS[self.scenario]
        return replace(fault, flap=self.flap) if self.flap and fault.flap else fault


@dataclass(frozen=True)
class NetFaultOptions:
    """A run: one namespace, server and set of agents, the steps one after the other (each
    assigns the next model version under its fault)."""

    steps: tuple[Step, ...]
    agents: int = 2
    bundle_kb: int = 10 * 1024
    interval_s: float = 0.5
    recover_timeout_s: float = 300.0
    #: The agents' ``download_timeout_s``: a stalled transfer shorter than this is waited out
    #: on the same connection; a longer one is cut and resumed on a new one.
    download_timeout_s: float = 30.0
    #: The agents' probation ``max_s`` (None: probation off, the update time is the transfer,
    #: verification and load alone).
    probation_s: float | None = 10.0


@dataclass(frozen=True)
class Resources:
    threads: int
    fds: int
    rss_kb: int

    @classmethod
    def of(cls, pid: int) -> Resources:
        status = Path(f"/proc/{pid}/status").read_text()
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        return cls(
            threads=int(fields["Threads"].strip()),
            fds=len(list(Path(f"/proc/{pid}/fd").iterdir())),
            rss_kb=int(fields["VmRSS"].split()[0]),
        )


@dataclass(frozen=True)
class AgentFigures:
    device_id: str
    lost: tuple[int, ...]
    unlogged: int
    committed: bool
    retries: int
    refetched_bytes: int
    downloaded_bytes: int
    before: Resources
    after: Resources


@dataclass(frozen=True)
class NetFaultResult:
    scenario: str
    duration_s: float
    bundle_bytes: int
    drain_s: float | None
    update_s: float | None
    duplicates: int
    agents: tuple[AgentFigures, ...]
    #: A download was under way when the link broke (not yet done, not yet started: False).
    cut_in_flight: bool = False
    #: rollout-partition: the rollout's state and reason after the fault; ``update_s`` is then
    #: heal → every device back on the previous version.
    rollout_state: str | None = None
    rollout_reason: str | None = None

    @property
    def retries(self) -> int:
        return sum(a.retries for a in self.agents)

    @property
    def refetched(self) -> int:
        return sum(a.refetched_bytes for a in self.agents)

    def row(self) -> str:
        def fmt(v: float | None) -> str:
            return f"{v:.1f}" if v is not None else "never"

        return (
            f"| {self.scenario} | {self.duration_s:.0f} | {self.bundle_bytes // 1024} | "
            f"{fmt(self.drain_s)} | {self.retries} | {self.refetched} | {fmt(self.update_s)} | "
            f"{self.duplicates} | {sum(len(a.lost) for a in self.agents)} | "
            f"{self.rollout_state or '-'} |"
        )


HEADER = (
    "| scenario | fault s | bundle KiB | drain s | retries | bytes re-sent | update s "
    "| MQTT dups | lost | rollout |\n|---|---|---|---|---|---|---|---|---|---|"
)


def padded_bundle(work: Path, *, version: str, kb: int, key: bytes) -> Path:
    """digits ``version`` with an incompressible ``pad.bin`` of ``kb`` KiB (role extra), signed
    with ``key`` (Ed25519 private PEM): the server rolls out only verified models."""
    import os

    from tests.utils.artifacts import sign_artifact

    artifact = build_digits_artifact(work / f"digits-{version}", version=version, seed=1)
    pad = artifact / "pad.bin"
    pad.write_bytes(os.urandom(kb * 1024))
    manifest = read_manifest(artifact)
    sha, size = hash_file(pad)
    files = [*manifest.files, ModelFile(path="pad.bin", sha256=sha, size=size, role="extra")]
    (artifact / "manifest.json").write_text(manifest.model_copy(update={"files": files}).to_json())
    sign_artifact(artifact, key)
    return bundle_of(artifact, work / f"digits-{version}.tar.gz")


def _committed(
    server: LiveServer, ids: list[str], version: str, *, since: float = 0.0
) -> dict[str, float]:
    """device → when it committed ``version`` (its event's time, epoch seconds) after
    ``since``."""
    from sqlalchemy import text

    done: dict[str, float] = {}
    with server.runtime.engine.connect() as conn:
        rows = conn.execute(
            text("SELECT device_id, model, ts FROM event WHERE event = 'update.committed'")
        )
        for device_id, model, ts in rows:
            model = json.loads(model) if isinstance(model, str) else model
            if device_id in ids and model and model.get("version") == version:
                when = ts if isinstance(ts, datetime) else datetime.fromisoformat(str(ts))
                if when.tzinfo is None:
                    when = when.replace(tzinfo=UTC)
                if when.timestamp() >= since:
                    done[device_id] = max(done.get(device_id, 0.0), when.timestamp())
    return done


def _download_counts(server: LiveServer, device_id: str) -> dict[str, float]:
    from sqlalchemy import text

    sums: dict[str, float] = {}
    with server.runtime.engine.connect() as conn:
        rows = conn.execute(
            text("SELECT system FROM telemetry WHERE device_id = :d"), {"d": device_id}
        )
        for (system,) in rows:
            values = json.loads(system) if isinstance(system, str) else system
            for key, value in (values or {}).items():
                if key.startswith("download."):
                    sums[key] = sums.get(key, 0.0) + float(value)
    return sums


@contextmanager
def _world(work: Path) -> Iterator[tuple[NetNamespace, Relay, Relay, LiveServer]]:
    with ExitStack() as stack:
        ns = stack.enter_context(NetNamespace())
        mosquitto = PrivateMosquitto(work)
        stack.callback(mosquitto.cleanup)
        mosquitto.start()
        server_port = free_port()  # the relay's, on the namespace-facing address
        public = f"http://{ns.host_ip2}:{server_port}"
        server = stack.enter_context(
            live_server(
                work,
                broker_url=mosquitto.url,
                public_url=public,
                trusted_keys=[work / "signing.pub.pem"],
                rollout_tick_s=0.25,
            )
        )
        broker_relay = stack.enter_context(
            Relay(listen=(ns.host_ip, 0), target=("127.0.0.1", mosquitto.port))
        )
        port = int(server.url.rsplit(":", 1)[1])
        server_relay = stack.enter_context(
            Relay(listen=(ns.host_ip2, server_port), target=("127.0.0.1", port))
        )
        yield ns, broker_relay, server_relay, server


def run_netfaults(options: NetFaultOptions, work: Path) -> list[NetFaultResult]:
    """Run the steps in ``work`` and return their figures (agents are always stopped)."""
    from edgefleet.signing import generate_keypair
    from fleet_server.client.api import FleetClient

    generate_keypair(work / "signing.pem", work / "signing.pub.pem")
    key = (work / "signing.pem").read_bytes()
    v1 = padded_bundle(work, version="1.0.0", kb=1, key=key)
    with _world(work) as (ns, broker_relay, server_relay, server):
        client = FleetClient(server.url, server.token, timeout=60)
        client.push_bundle(v1)
        tag = f"nf{time.time_ns() % 10**10}"
        devices: list[Device] = []
        for i in range(options.agents):
            created = client.add_device(f"{tag}-{i}", tags=[tag])
            device = Device(
                device_id=str(created["device_id"]),
                token=str(created["token"]),
                data_dir=work / f"agent-{i}",
                config=work / f"agent-{i}.toml",
                prefix=ns.prefix,
            )
            device.config.write_text(
                f"download_timeout_s = {options.download_timeout_s}\n"
                + agent_toml(
                    device,
                    mqtt_url=f"mqtt://{ns.host_ip}:{broker_relay.port}",
                    server_url=f"http://{ns.host_ip2}:{server_relay.port}",
                    interval_s=options.interval_s,
                )
                + _agent_extra(options)
            )
            devices.append(device)
        world = _World(ns, (broker_relay, server_relay), server, client, devices, tag)
        try:
            for device in devices:
                device.start()
            ids = world.ids
            client.assign("digits", "1.0.0", tag=tag)
            wait_until(lambda: set(_committed(server, ids, "1.0.0")) == set(ids), 90, "on 1.0.0")
            wait_until(
                lambda: all(len(s) >= 3 for s in _stored(server, ids).values()),
                60,
                "telemetry from every agent before the faults",
            )
            # 1.0.0's download counters ride a later telemetry: in before any step counts.
            size = v1.stat().st_size
            wait_until(
                lambda: all(
                    _download_counts(server, d).get("download.bytes", 0) >= size for d in ids
                ),
                60,
                "1.0.0's download counted",
            )
            results = []
            for index, step in enumerate(options.steps):
                version = f"{index + 2}.0.0"
                bundle = padded_bundle(work, version=version, kb=options.bundle_kb, key=key)
                client.push_bundle(bundle)
                run = _rollout_step if step.fault.rollout else _step
                results.append(run(world, options, step, version, bundle.stat().st_size))
            return results
        finally:
            for device in devices:
                if device.run is not None:
                    device.run.kill()


def _agent_extra(options: NetFaultOptions) -> str:
    probation = (
        "enabled = false" if options.probation_s is None else f"max_s = {options.probation_s}"
    )
    return f"\n[probation]\n{probation}\n"


@dataclass(frozen=True)
class _World:
    ns: NetNamespace
    relays: tuple[Relay, Relay]
    server: LiveServer
    client: Any
    devices: list[Device]
    tag: str

    @property
    def ids(self) -> list[str]:
        return [d.device_id for d in self.devices]


def _step(
    world: _World, options: NetFaultOptions, step: Step, version: str, bundle_bytes: int
) -> NetFaultResult:
    fault, ns, server, devices, ids = step.fault, world.ns, world.server, world.devices, world.ids
    before = {d.device_id: Resources.of(_pid(d)) for d in devices}
    counted = {d: _download_counts(server, d) for d in ids}
    tap = _Tap(server.runtime)
    if fault.base_rate_kbit:
        ns.shape(fault.base_rate_kbit)
    heal = _apply_ongoing(fault, ns, world.relays)
    in_flight = False
    assigned = time.time()  # wall clock: compared with the commit events' device time
    world.client.assign("digits", version, tag=world.tag)
    if fault.partition or fault.flap or fault.block:
        # Break the link with the download in flight (a part on disk, not complete).
        wait_until(lambda: any(_part_bytes(d) > 0 for d in devices), 60, "a download under way")
        heal = _apply_break(fault, ns)
    in_flight = any(0 < _part_bytes(d) < bundle_bytes for d in devices)
    _hold(fault, ns, step.duration_s)
    heal()
    if fault.base_rate_kbit:
        ns.shape(None)
    healed = time.monotonic()
    wanted = {d.device_id: _expected(d) for d in devices}
    drain_s: float | None = None
    deadline = healed + options.recover_timeout_s
    while time.monotonic() < deadline:
        if drain_s is None and all(wanted[k] <= set(v) for k, v in _stored(server, ids).items()):
            drain_s = time.monotonic() - healed
        if drain_s is not None and set(_committed(server, ids, version)) == set(ids):
            break
        time.sleep(0.1)  # noqa: TID251 - polling two conditions under one deadline
    commits = _committed(server, ids, version)
    update_s = max(commits.values()) - assigned if set(commits) == set(ids) else None
    # The download counters ride the next telemetry: wait until it is stored.
    marks = {k: max(v, default=0) for k, v in _stored(server, ids).items()}
    wait_until(
        lambda: all(max(v, default=0) > marks[k] for k, v in _stored(server, ids).items()),
        30,
        "one more telemetry from every agent",
    )
    after = {d.device_id: Resources.of(_pid(d)) for d in devices}
    settled = _settled(server, devices)
    committed = _committed(server, ids, version)
    figures = []
    for device in devices:
        lost, unlogged = settled[device.device_id]
        now = _download_counts(server, device.device_id)
        then = counted[device.device_id]

        def delta(key: str, now: dict[str, float] = now, then: dict[str, float] = then) -> int:
            return int(now.get(f"download.{key}", 0) - then.get(f"download.{key}", 0))

        figures.append(
            AgentFigures(
                device_id=device.device_id,
                lost=lost,
                unlogged=unlogged,
                committed=device.device_id in committed,
                retries=delta("retries"),
                refetched_bytes=delta("refetched_bytes"),
                downloaded_bytes=delta("bytes"),
                before=before[device.device_id],
                after=after[device.device_id],
            )
        )
    return NetFaultResult(
        scenario=step.scenario,
        duration_s=step.duration_s,
        bundle_bytes=bundle_bytes,
        drain_s=drain_s,
        update_s=update_s,
        duplicates=tap.redelivered,
        agents=tuple(figures),
        cut_in_flight=in_flight,
    )


def _rollout_step(
    world: _World, options: NetFaultOptions, step: Step, version: str, bundle_bytes: int
) -> NetFaultResult:
    ns, server, devices, ids = world.ns, world.server, world.devices, world.ids
    previous = f"{int(version.split('.')[0]) - 1}.0.0"
    before = {d.device_id: Resources.of(_pid(d)) for d in devices}
    tap = _Tap(server.runtime)
    started = time.time()
    rollout = world.client.create_rollout(
        {
            "model": "digits",
            "version": version,
            "selector": {"tags": [world.tag]},
            "strategy": {
                "canary_percent": 100,
                "batches": [100],
                "soak_s": ROLLOUT_SOAK_S,
                "on_failure": "abort",
            },
            "gates": ROLLOUT_GATES,
        }
    )
    wait_until(
        lambda: set(_committed(server, ids, version, since=started)) == set(ids),
        options.recover_timeout_s,
        f"every agent on {version} (rollout)",
    )
    # The partition: the broker drops the devices after 1.5 keepalives (15 s), publishes
    # their wills, the server marks them offline and, 3 s later (the gate's grace), the next
    # tick fails the offline gate; ``duration_s`` must outlast that.
    ns.loss(100)
    time.sleep(step.duration_s)  # noqa: TID251 - the fault's length is the scenario
    ns.loss(None)
    healed = time.time()
    wanted = {d.device_id: _expected(d) for d in devices}
    drain_s: float | None = None
    deadline = time.monotonic() + options.recover_timeout_s
    while time.monotonic() < deadline:
        if drain_s is None and all(wanted[k] <= set(v) for k, v in _stored(server, ids).items()):
            drain_s = time.time() - healed
        back = _committed(server, ids, previous, since=healed)
        if drain_s is not None and set(back) == set(ids):
            break
        time.sleep(0.1)  # noqa: TID251 - polling two conditions under one deadline
    back = _committed(server, ids, previous, since=healed)
    rollout_id = int(rollout["id"])
    with contextlib.suppress(TimeoutError):  # the engine finishes the abort on its next ticks
        wait_until(
            lambda: world.client.get_rollout(rollout_id)["state"] not in ("running", "aborting"),
            30,
            "the rollout settled",
        )
    state = world.client.get_rollout(rollout_id)
    after = {d.device_id: Resources.of(_pid(d)) for d in devices}
    settled = _settled(server, devices)
    figures = []
    for device in devices:
        lost, unlogged = settled[device.device_id]
        figures.append(
            AgentFigures(
                device_id=device.device_id,
                lost=lost,
                unlogged=unlogged,
                committed=device.device_id in back,
                retries=0,
                refetched_bytes=0,
                downloaded_bytes=0,
                before=before[device.device_id],
                after=after[device.device_id],
            )
        )
    return NetFaultResult(
        scenario=step.scenario,
        duration_s=step.duration_s,
        bundle_bytes=bundle_bytes,
        drain_s=drain_s,
        update_s=max(back.values()) - healed if set(back) == set(ids) else None,
        duplicates=tap.redelivered,
        agents=tuple(figures),
        rollout_state=str(state.get("state")),
        rollout_reason=str(state.get("reason") or ""),
    )


def _settled(server: LiveServer, devices: list[Device]) -> dict[str, tuple[tuple[int, ...], int]]:
    """device → (seqs it queued that are not stored, stored seqs it never logged), once what it
    queued so far had up to 30 s to arrive (newer seqs may still be on their way)."""
    ids = [d.device_id for d in devices]
    mark = {d.device_id: _expected(d) for d in devices}
    try:
        wait_until(
            lambda: all(mark[k] <= set(v) for k, v in _stored(server, ids).items()),
            30,
            "what was queued so far stored",
        )
    except TimeoutError:
        pass  # reported as lost
    server.runtime.writer.flush(10)
    stored = _stored(server, ids)
    out = {}
    for device in devices:
        have = set(stored[device.device_id])
        logged = _expected(device)  # read after the database: everything stored was logged
        lost = tuple(sorted(mark[device.device_id] - have))
        out[device.device_id] = (lost, len(have - logged))
    return out


def _pid(device: Device) -> int:
    assert device.run is not None and device.run.proc.poll() is None, device.device_id
    return device.run.proc.pid


def _part_bytes(device: Device) -> int:
    return sum(p.stat().st_size for p in (device.data_dir / "downloads").glob("*.part"))


def _apply_ongoing(
    fault: Fault, ns: NetNamespace, relays: tuple[Relay, Relay]
) -> Callable[[], None]:
    if fault.rate_kbit:
        ns.shape(fault.rate_kbit)
    if fault.loss_pct:
        ns.loss(fault.loss_pct)
    for relay in relays:
        relay.set_delay(fault.delay_s, fault.jitter_s)

    def heal() -> None:
        ns.shape(None)
        ns.loss(None)
        for relay in relays:
            relay.set_delay(0.0)

    return heal


def _apply_break(fault: Fault, ns: NetNamespace) -> Callable[[], None]:
    if fault.partition:
        ns.loss(100)
        return lambda: ns.loss(None)
    if fault.block:
        ip = ns.host_ip2 if fault.block == "server" else ns.host_ip
        ns.block(ip)
        return lambda: ns.block(ip, blocked=False)
    return lambda: ns.link(up=True)  # flap: _hold toggles, this leaves it up


def _hold(fault: Fault, ns: NetNamespace, duration_s: float) -> None:
    end = time.monotonic() + duration_s
    if fault.flap is None:
        time.sleep(duration_s)  # noqa: TID251 - the fault's length is the scenario
        return
    up_s, down_s = fault.flap
    while time.monotonic() < end:
        ns.link(up=False)
        time.sleep(min(down_s, max(0.0, end - time.monotonic())))  # noqa: TID251
        ns.link(up=True)
        time.sleep(min(up_s, max(0.0, end - time.monotonic())))  # noqa: TID251
