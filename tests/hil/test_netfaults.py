"""Network faults, short versions: real agents in a network namespace, a real server and a
private Mosquitto on the host, each fault in turn (``tests/utils/netfaults.py``).

Needs root, ``ip``, ``tc`` and ``iptables`` (apt: iproute2 iptables); skipped with the reason
otherwise, failed under ``EDGEFLEET_REQUIRE_SERVICES=1``. ``bench/netfaults_bench.py`` runs
the same scenarios at full length (10 MB bundle, a 5-minute partition, 20 s / 20 s flaps).
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hil.netfaults import NetFaultError, NetNamespace, Relay, missing_tools
from tests.utils.mosquitto import require_mosquitto
from tests.utils.required import missing

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: The break scenarios: the link goes while a download is under way.
BREAKS = {"flap", "partition", "server-unreachable"}


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root"
    missing = missing_tools()
    if missing:
        return f"missing commands: {', '.join(missing)} (apt: iproute2 iptables)"
    try:
        with NetNamespace():
            pass
    except NetFaultError as err:
        return f"cannot create a network namespace: {err}"
    return None


@pytest.fixture(scope="module")
def netns_ok() -> None:
    reason = _unavailable()
    if reason is not None:
        missing(reason)


@pytest.fixture
def echo() -> Iterator[int]:
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return

            def pump(c: socket.socket = conn) -> None:
                with c:
                    while data := c.recv(65536):
                        c.sendall(data)

            threading.Thread(target=pump, daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield int(server.getsockname()[1])
    server.close()


CLIENT = """
import socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=20)
start = time.monotonic()
for i in range(5):
    s.sendall(bytes([i]) * 1000)
got = b""
while len(got) < 5000:
    got += s.recv(65536)
assert got == b"".join(bytes([i]) * 1000 for i in range(5)), "out of order"
print(round(time.monotonic() - start, 3))
"""


def _client(ns: NetNamespace, ip: str, port: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ns.prefix, sys.executable, "-c", CLIENT, ip, str(port)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_namespace_relay_and_faults_and_cleanup(netns_ok: None, echo: int) -> None:
    with NetNamespace() as ns, Relay(listen=(ns.host_ip, 0), target=("127.0.0.1", echo)) as relay:
        name = ns.name
        fast = _client(ns, ns.host_ip, relay.port)
        assert fast.returncode == 0, fast.stderr
        relay.set_delay(0.3, 0.1)  # each way: a round trip of 0.4 s at least, bytes in order
        slow = _client(ns, ns.host_ip, relay.port)
        assert slow.returncode == 0, slow.stderr
        assert float(slow.stdout) >= 0.4
        relay.set_delay(0.0)
        ns.block(ns.host_ip)
        blocked = _client(ns, ns.host_ip, relay.port)
        assert blocked.returncode != 0 and "Permission denied" in blocked.stderr
        ns.block(ns.host_ip, blocked=False)
        ns.link(up=False)
        assert _client(ns, ns.host_ip, relay.port).returncode != 0
        ns.link(up=True)
        assert _client(ns, ns.host_ip, relay.port).returncode == 0
        with pytest.raises(NetFaultError, match="jitter"):
            relay.set_delay(0.1, 0.5)
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
    assert name not in names and f"{name}h" not in links  # nothing left behind


def test_every_fault_loses_nothing_and_updates_resume(netns_ok: None, tmp_path: Path) -> None:
    from tests.utils.netfaults import HEADER, SCENARIOS, NetFaultOptions, Step, run_netfaults

    require_mosquitto()
    # Every break (a flap's down phase too) outlasts the 2 s download timeout; the rollout's
    # partition outlasts the broker's keepalive timeout (15 s) and one evaluation (5 s).
    steps = tuple(
        Step(name, 30.0 if name == "rollout-partition" else 3.0, flap=(1.0, 2.5))
        for name in SCENARIOS
    )
    options = NetFaultOptions(
        steps=steps,
        agents=2,
        bundle_kb=128,
        download_timeout_s=2.0,  # a 3 s break outlasts it: the transfer is cut and resumed
        probation_s=None,
        recover_timeout_s=90.0,
    )
    started = time.monotonic()
    results = run_netfaults(options, tmp_path)
    print(f"\n{HEADER}")  # the table, shown with -s
    for result in results:
        print(result.row())
    print(f"({time.monotonic() - started:.0f} s in all)")
    for result in results:
        where = f"{result.scenario}: {result}"
        if result.scenario == "rollout-partition":
            # The spec: a committed device gone offline fails the offline gate (0 %), and
            # on_failure abort rolls every device back once it is reachable again.
            assert result.rollout_state == "aborted", where
            assert "offline" in (result.rollout_reason or ""), where
            assert result.update_s is not None, f"never rolled back: {where}"
            assert all(a.committed for a in result.agents), where
            assert all(a.lost == () and a.unlogged == 0 for a in result.agents), where
            continue
        assert result.update_s is not None, f"update never completed: {where}"
        assert result.drain_s is not None, f"never drained: {where}"
        for agent in result.agents:
            assert agent.committed, where
            assert agent.lost == () and agent.unlogged == 0, where
            # Each byte of the bundle crossed the link once: resumed, never restarted.
            assert agent.downloaded_bytes == result.bundle_bytes, where
            assert agent.refetched_bytes == 0, where
            assert agent.after.threads == agent.before.threads, where
            assert agent.after.fds <= agent.before.fds + 2, where
            assert agent.after.rss_kb <= agent.before.rss_kb + 20 * 1024, where
        if result.scenario in BREAKS and result.cut_in_flight:
            assert result.retries >= 1, f"a cut download was not retried: {where}"


def test_namespaces_open_at_once_never_share_a_subnet(netns_ok: None, echo: int) -> None:
    """Two names whose hash picks the same /24 (parallel test workers, a leftover): the second
    takes the next free one, and each namespace reaches its own host end."""
    run = secrets.token_hex(2)
    first = NetNamespace(tag=f"{run}000")
    twin = next(
        ns
        for ns in (NetNamespace(tag=f"{run}{i:03x}") for i in range(1, 4096))
        if ns.ns_ip == first.ns_ip
    )
    with first, twin:
        subnets = {ip.rsplit(".", 1)[0] for ip in (first.ns_ip, twin.ns_ip)}
        assert len(subnets) == 2, (first.ns_ip, twin.ns_ip)
        for ns in (first, twin):
            with Relay(listen=(ns.host_ip, 0), target=("127.0.0.1", echo)) as relay:
                done = _client(ns, ns.host_ip, relay.port)
                assert done.returncode == 0, done.stderr
