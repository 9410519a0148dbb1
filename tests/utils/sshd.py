"""A private OpenSSH server in a network namespace, for the SSH runner's tests.

The host's own ``sshd`` (Debian's openssh-server) listens on the namespace's address with a
throw-away host key and one authorised client key. With ``chroot`` it is the emulated arm64
board: ``ChrootDirectory`` puts every session into the board's root filesystem, so the
shell, Python, pip and the agent the runner starts there are the board's aarch64 binaries
(run by qemu-user-static through binfmt_misc) while sshd itself stays native — the root has no
sshd of its own, and an emulated one would make every connection slow. ``/proc`` and ``/dev``
are mounted into the root in sshd's private mount namespace: nothing stays mounted on the
host when it ends.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from hil.netfaults import NetNamespace, missing_tools

SSHD = Path("/usr/sbin/sshd")


@dataclass(frozen=True)
class Sshd:
    ns: NetNamespace
    target: str
    identity: Path
    known_hosts: Path
    log: Path


def unavailable() -> str | None:
    """Why this machine cannot run the private sshd, or None."""
    if os.geteuid() != 0:
        return "a private sshd in a network namespace needs root"
    if not SSHD.exists():
        return "sshd is not installed: apt-get -o DPkg::Lock::Timeout=600 install -y openssh-server"
    if shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
        return "the OpenSSH client is not installed (apt: openssh-client)"
    tools = missing_tools()
    if tools:
        return f"missing commands: {', '.join(tools)} (apt: iproute2 iptables)"
    return None


def _keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
        check=True,
        capture_output=True,
        timeout=30,
    )


@contextmanager
def sshd(work: Path, *, chroot: Path | None = None, extra: Sequence[str] = ()) -> Iterator[Sshd]:
    work.mkdir(parents=True, exist_ok=True)
    _keygen(work / "host_key")
    _keygen(work / "client_key")
    shutil.copyfile(work / "client_key.pub", work / "authorized_keys")
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
    ns = NetNamespace().open()
    proc: subprocess.Popen[bytes] | None = None
    try:
        config = work / "sshd_config"
        lines = [
            f"ListenAddress {ns.ns_ip}:22",
            f"HostKey {work / 'host_key'}",
            f"PidFile {work / 'sshd.pid'}",
            f"AuthorizedKeysFile {work / 'authorized_keys'}",
            "PermitRootLogin prohibit-password",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",
            "PrintMotd no",
            "Subsystem sftp internal-sftp",
        ]
        if chroot is not None:
            lines.append(f"ChrootDirectory {chroot}")
        lines += extra
        config.write_text("\n".join(lines) + "\n")
        sshd_argv = [str(SSHD), "-D", "-e", "-f", str(config)]
        if chroot is not None:
            mount = (
                'set -e; root="$1"; shift; mount -t proc proc "$root/proc"; '
                'mount --rbind /dev "$root/dev"; exec "$@"'
            )
            sshd_argv = ["unshare", "--mount", "--propagation", "private", "--",
                         "sh", "-c", mount, "sshd", str(chroot), *sshd_argv]  # fmt: skip
        log = work / "sshd.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [*ns.prefix, *sshd_argv], stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        _wait_listening(ns, proc, log)
        yield Sshd(
            ns=ns,
            target=f"ssh://root@{ns.ns_ip}:22",
            identity=work / "client_key",
            known_hosts=work / "known_hosts",
            log=log,
        )
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        ns.close()


def _wait_listening(ns: NetNamespace, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited: {log.read_text(errors='replace')[-1500:]}")
        try:
            with socket.create_connection((ns.ns_ip, 22), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"sshd did not listen on {ns.ns_ip}:22: {log.read_text()[-1500:]}")
