"""A network namespace joined to the host by a veth pair, and the faults put on that link.

``NetNamespace`` creates ``<name>`` with a veth pair (host end ``<name>h``, namespace end
``<name>n``) on a private /24: the host end holds ``.1`` and ``.3`` (two addresses so one can
be made unreachable while the other stays up), the namespace end ``.2``. Everything is undone
on ``close()`` (also after a failure half-way): deleting the namespace deletes its veth end and
with it the pair. Names carry a per-run id, so parallel runs and leftovers never collide; the
/24 is chosen at ``open()`` under a host-wide lock among the ones no host interface holds, so
two namespaces open at once (parallel test workers) never share a subnet.

Faults, all in the kernel (root, ``ip``, ``tc``, ``iptables``):

- ``shape(rate_kbit)``: a ``tbf`` rate limit on both ends of the link.
- ``loss(percent)``: random packet drop both ways (``iptables -m statistic``) in the namespace.
  ``tc netem`` would do this and delay too, but kernels without ``sch_netem`` exist (this CI's
  does not have it): delay is the userspace :mod:`hil.netfaults.relay`'s job.
- ``link(up=False)``: the namespace's end goes down (a partition; flapping toggles it).
- ``block(ip)``: one host address unreachable from the namespace (``ip route add prohibit``).
"""

from __future__ import annotations

import fcntl
import hashlib
import ipaddress
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from hil.netfaults.errors import NetFaultError

#: Private /16 the per-run /24s are taken from.
_BASE = ipaddress.IPv4Network("10.213.0.0/16")
#: Held while a namespace picks its /24 and puts it on the host end (one host, many processes).
_LOCK = Path(tempfile.gettempdir()) / "edgefleet-netns.lock"


def missing_tools() -> list[str]:
    """Commands this module needs that are not installed (empty: all there)."""
    return [tool for tool in ("ip", "tc", "iptables") if shutil.which(tool) is None]


@contextmanager
def _host_lock() -> Iterator[None]:
    with _LOCK.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run(args: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(list(args), capture_output=True, text=True, timeout=30)  # noqa: S603
    except (OSError, subprocess.TimeoutExpired) as err:
        raise NetFaultError(f"{' '.join(args)}: {err}") from err
    if check and done.returncode != 0:
        raise NetFaultError(f"{' '.join(args)}: {done.stderr.strip()[:300]}")
    return done


class NetNamespace:
    """``with NetNamespace() as ns: subprocess.Popen([*ns.prefix, ...])``."""

    def __init__(self, *, tag: str | None = None) -> None:
        tag = tag or secrets.token_hex(3)
        self.name = f"ef{tag}"[:10]  # interface names: at most 15 characters with suffixes
        self._subnet = int(hashlib.sha256(self.name.encode()).hexdigest()[:4], 16) % 256
        self._address(self._subnet)
        self.host_dev = f"{self.name}h"
        self.ns_dev = f"{self.name}n"
        self._created = False

    def _address(self, subnet: int) -> None:
        net = ipaddress.IPv4Network(f"{_BASE.network_address + subnet * 256}/24")
        self.host_ip = str(net.network_address + 1)
        self.host_ip2 = str(net.network_address + 3)
        self.ns_ip = str(net.network_address + 2)

    def _pick_subnet(self) -> None:
        """The first /24 of ``_BASE`` from this name's hash on that no host interface holds
        (another namespace's host end, or a leftover); call with ``_LOCK`` held."""
        listed = run(["ip", "-4", "-o", "addr", "show"]).stdout.split()
        used = set()
        for word in listed:
            try:
                address = ipaddress.IPv4Interface(word).ip
            except ValueError:
                continue
            if address in _BASE:
                used.add((int(address) - int(_BASE.network_address)) // 256)
        for step in range(256):
            subnet = (self._subnet + step) % 256
            if subnet not in used:
                self._address(subnet)
                return
        raise NetFaultError(f"every /24 of {_BASE} is taken on this host (leftover namespaces?)")

    @property
    def prefix(self) -> list[str]:
        """Prepend to a command to run it inside the namespace."""
        return ["ip", "netns", "exec", self.name]

    def _ns(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run([*self.prefix, *args], check=check)

    def open(self) -> NetNamespace:
        missing = missing_tools()
        if missing:
            raise NetFaultError(f"missing commands: {', '.join(missing)} (apt: iproute2 iptables)")
        run(["ip", "netns", "add", self.name])
        self._created = True
        try:
            run(["ip", "link", "add", self.host_dev, "type", "veth", "peer", "name", self.ns_dev])
            run(["ip", "link", "set", self.ns_dev, "netns", self.name])
            with _host_lock():
                self._pick_subnet()
                for ip in (self.host_ip, self.host_ip2):
                    run(["ip", "addr", "add", f"{ip}/24", "dev", self.host_dev])
            run(["ip", "link", "set", self.host_dev, "up"])
            self._ns("ip", "addr", "add", f"{self.ns_ip}/24", "dev", self.ns_dev)
            self._ns("ip", "link", "set", "lo", "up")
            self._ns("ip", "link", "set", self.ns_dev, "up")
        except NetFaultError:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Remove everything (idempotent; a host end left by a failed set-up goes too)."""
        if self._created:
            run(["ip", "netns", "del", self.name], check=False)
            self._created = False
        run(["ip", "link", "del", self.host_dev], check=False)

    def __enter__(self) -> NetNamespace:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- faults ----------------------------------------------------------------------------
    def link(self, *, up: bool) -> None:
        self._ns("ip", "link", "set", self.ns_dev, "up" if up else "down")

    def shape(self, rate_kbit: int | None) -> None:
        """Limit both directions to ``rate_kbit`` (None: no limit)."""
        for prefix, dev in (([], self.host_dev), (self.prefix, self.ns_dev)):
            run([*prefix, "tc", "qdisc", "del", "dev", dev, "root"], check=False)
            if rate_kbit is not None:
                burst = max(12, rate_kbit // 8)  # kbit: ~125 ms of traffic, a few packets
                tbf = ["tbf", "rate", f"{rate_kbit}kbit", "burst", f"{burst}kbit", "latency", "2s"]
                run([*prefix, "tc", "qdisc", "add", "dev", dev, "root", *tbf])

    def loss(self, percent: float | None) -> None:
        """Drop ``percent`` % of the packets each way, at random (None: none)."""
        # -w: wait for the host-wide xtables lock (another namespace's iptables may hold it).
        for chain in ("INPUT", "OUTPUT"):
            self._ns("iptables", "-w", "-F", chain)
            if percent:
                self._ns(
                    "iptables", "-w", "-A", chain, "-m", "statistic", "--mode", "random",
                    "--probability", f"{percent / 100:.4f}", "-j", "DROP",
                )  # fmt: skip

    def block(self, ip: str, *, blocked: bool = True) -> None:
        """Make ``ip`` unreachable from the namespace (or reachable again)."""
        action = "replace" if blocked else "del"
        self._ns("ip", "route", action, "prohibit", f"{ip}/32", check=blocked)
