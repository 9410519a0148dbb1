"""A board reached over the system's OpenSSH client: run a command, copy a file in or out.

``ssh`` runs non-interactively (``BatchMode``: a key, never a password prompt) against a
known_hosts file this tool owns (``accept-new``: the first connection records the board's
host key, a changed key afterwards is refused), never the user's own. Files travel through
``ssh … 'cat > FILE'`` rather than ``scp``: that needs nothing on the board but a shell
(no sftp-server, which a chrooted or minimal board may lack), and the same one connection
method carries every step.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from hil.ssh.errors import HilError

#: A user and host as OpenSSH takes them: no option-looking values, no shell or URL syntax.
_USER = re.compile(r"^[A-Za-z_][A-Za-z0-9._-]{0,31}$")
#: DNS labels joined by single dots (an IPv4 address is such a name too); linear to match.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")
MAX_TARGET = 300


@dataclass(frozen=True)
class Target:
    user: str
    host: str
    port: int = 22

    def __str__(self) -> str:
        return f"ssh://{self.user}@{self.host}:{self.port}"


def parse_target(text: str) -> Target:
    """``ssh://USER@HOST[:PORT]`` → :class:`Target`; anything else is one clear error."""
    if len(text) > MAX_TARGET:
        raise HilError(f"--target is {len(text)} characters long (at most {MAX_TARGET})")
    if any(ord(c) < 33 or ord(c) == 127 for c in text):
        raise HilError("--target contains whitespace or control characters")
    parts = urlsplit(text)
    if parts.scheme != "ssh":
        raise HilError(f"--target must look like ssh://USER@HOST[:PORT], not {text!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.password:
        raise HilError("--target takes ssh://USER@HOST[:PORT] only (no path, query or password)")
    user, host = parts.username or "", parts.hostname or ""
    if not _USER.match(user):
        raise HilError(f"--target: {user!r} is not a valid user name (ssh://USER@HOST)")
    if not _HOST.match(host) or len(host) > 253:
        raise HilError(f"--target: {host!r} is not a host name or IPv4 address")
    try:
        port = parts.port if parts.port is not None else 22
    except ValueError as err:
        raise HilError(f"--target: bad port ({err})") from err
    if not 1 <= port <= 65535:
        raise HilError(f"--target: port {port} is out of range")
    return Target(user=user, host=host, port=port)


class Board:
    """Commands and files on one board over ssh."""

    def __init__(
        self,
        target: Target,
        *,
        known_hosts: Path,
        identity: Path | None = None,
        connect_timeout_s: int = 15,
    ) -> None:
        self.target = target
        self.known_hosts = known_hosts
        self.identity = identity
        self.connect_timeout_s = connect_timeout_s

    def ssh_argv(self, command: str) -> list[str]:
        options = {
            "BatchMode": "yes",
            "UserKnownHostsFile": str(self.known_hosts),
            "GlobalKnownHostsFile": "/dev/null",
            "StrictHostKeyChecking": "accept-new",
            "ConnectTimeout": str(self.connect_timeout_s),
            "ServerAliveInterval": "15",
            "ServerAliveCountMax": "4",
            "LogLevel": "ERROR",
        }
        argv = ["ssh", "-p", str(self.target.port), "-F", "/dev/null"]
        if self.identity is not None:
            argv += ["-i", str(self.identity), "-o", "IdentitiesOnly=yes"]
        for key, value in options.items():
            argv += ["-o", f"{key}={value}"]
        return [*argv, f"{self.target.user}@{self.target.host}", "--", command]

    def run(
        self,
        command: str,
        *,
        stdin: bytes | None = None,
        timeout: float = 120,
        check: bool = True,
    ) -> subprocess.CompletedProcess[bytes]:
        """``command`` (a shell line, run by the board's login shell) with ``stdin`` fed."""
        try:
            done = subprocess.run(  # noqa: S603 (argv built above, no shell on this side)
                self.ssh_argv(command),
                input=stdin if stdin is not None else b"",
                capture_output=True,
                timeout=timeout,
                check=False,
            )
        except FileNotFoundError as err:
            raise HilError("the `ssh` client is not installed (apt: openssh-client)") from err
        except subprocess.TimeoutExpired as err:
            raise HilError(f"{self.target}: `{_short(command)}` took over {timeout:.0f} s") from err
        if done.returncode == 255:
            raise HilError(f"{self.target}: ssh failed: {_tail(done.stderr)}")
        if check and done.returncode != 0:
            raise HilError(
                f"{self.target}: `{_short(command)}` exited {done.returncode}: "
                f"{_tail(done.stderr or done.stdout)}"
            )
        return done

    def text(self, command: str, *, timeout: float = 120) -> str:
        return self.run(command, timeout=timeout).stdout.decode(errors="replace").strip()

    def put(self, local: Path, remote: str, *, mode: str = "0644") -> None:
        """Copy one local file to ``remote`` (an absolute path on the board)."""
        q = shlex.quote(remote)
        self.run(f"cat > {q}.part && chmod {mode} {q}.part && mv {q}.part {q}",
                 stdin=local.read_bytes(), timeout=600)  # fmt: skip

    def get(self, remote: str, *, limit: int = 64 * 1024 * 1024) -> bytes:
        """A file's bytes from the board (at most ``limit``: a report, a log)."""
        data = self.run(f"head -c {limit + 1} {shlex.quote(remote)}", timeout=300).stdout
        if len(data) > limit:
            raise HilError(f"{self.target}: {remote} is larger than {limit} bytes")
        return data


def script(lines: Sequence[str]) -> str:
    """Shell lines joined to run in order and stop at the first failure."""
    return "set -e; " + "; ".join(lines)


def _short(command: str, limit: int = 120) -> str:
    return command if len(command) <= limit else command[: limit - 1] + "…"


def _tail(data: bytes, limit: int = 600) -> str:
    text = " ".join(data.decode(errors="replace").split())
    return text[-limit:] or "(no output)"
