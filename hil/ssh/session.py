"""The run's footprint on the board: one folder and the processes started in it.

Everything the runner puts on the board lives in one ``mktemp -d`` folder under ``/tmp``
(the venv, the wheel, the agent's data directory, logs, the probe's samples), and every
process it starts is a process-group leader (``setsid``) whose id is kept in that folder, run
under ``timeout`` so that a runner that vanishes (network gone, machine off) still leaves a
board that stops itself. :meth:`RemoteRun.close` ends the process groups (TERM, then KILL)
and removes the folder, and says whether anything was left.
"""

from __future__ import annotations

import io
import shlex
import tarfile
import time
from pathlib import Path

from hil.ssh.errors import HilError
from hil.ssh.target import Board

#: The folder's prefix on the board (the test and docs look for leftovers by it).
PREFIX = "/tmp/edgefleet-hil-"  # noqa: S108 (mktemp makes it unique and private)


class RemoteRun:
    def __init__(self, board: Board) -> None:
        self.board = board
        self.work: str | None = None
        self.names: list[str] = []

    def open(self) -> str:
        work = self.board.text(f"mktemp -d {PREFIX}XXXXXX")
        if not work.startswith(PREFIX) or any(c in work for c in " \n'\"$`\\"):
            raise HilError(f"{self.board.target}: mktemp answered {work!r}")
        self.work = work
        return work

    def path(self, name: str) -> str:
        if self.work is None:
            raise HilError("the board's work folder is not open")
        return f"{self.work}/{name}"

    def send(self, files: dict[str, Path]) -> None:
        """Copy ``{name in the work folder: local file or folder}`` in one tar stream."""
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for name, local in files.items():
                tar.add(local, arcname=name)
        self.board.run(
            f"tar -C {shlex.quote(self.path(''))} -xf - --no-same-owner",
            stdin=buf.getvalue(),
            timeout=900,
        )

    def install(self, wheel: str, *, system_site: bool, no_index: bool, timeout: float) -> str:
        """A fresh venv with ``edgefleet[agent]`` from ``wheel``; pip's log (its tail)."""
        venv = self.path("venv")
        site = " --system-site-packages" if system_site else ""
        index = f" --no-index --find-links {self.path('')}" if no_index else ""
        spec = shlex.quote(f"edgefleet[agent] @ file://{self.path(wheel)}")
        # The board's own pip (Debian's python3-pip) installs into a venv made without one:
        # ensurepip takes minutes on a small board. Without a system pip the venv gets its own.
        line = (
            f"if python3 -m pip --version >/dev/null 2>&1; then "
            f"python3 -m venv{site} --without-pip {venv} && "
            f"python3 -m pip --python {venv}/bin/python install -q{index} {spec}; "
            f"else python3 -m venv{site} {venv} && {venv}/bin/python -m pip install -q{index} "
            f"{spec}; fi"
        )
        # In the background like every long step: an interrupted run's clean-up ends it.
        rc = self.path("install.rc")
        self.start("install", f"sh -c {shlex.quote(f'{line}; echo $? > {rc}')}", max_s=timeout)
        started = time.monotonic()
        while self.alive("install"):
            if time.monotonic() - started > timeout + 60:
                raise HilError(f"installing {wheel} on the board took over {timeout:.0f} s")
            time.sleep(2.0)
        log = self.board.run(f"tail -c 3000 {self.path('install.log')}", check=False)
        tail = log.stdout.decode(errors="replace").strip()
        if self.board.run(f"cat {rc} 2>/dev/null", check=False).stdout.strip() != b"0":
            one_line = " ".join(tail.split())[-600:]
            raise HilError(f"installing {wheel} on the board failed: {one_line}")
        return tail

    def start(self, name: str, command: str, *, max_s: float) -> int:
        """``command`` in the background in its own process group, ended after ``max_s``
        whatever happens to this runner. Its pid (= its process group)."""
        if name in self.names or not name.isidentifier():
            raise HilError(f"bad or repeated process name {name!r}")
        self.names.append(name)
        w = self.path("")
        line = (
            f"cd {w} || exit 1; setsid nohup timeout -s TERM -k 30 {int(max_s)} {command} "
            f"> {w}/{name}.out 2> {w}/{name}.log < /dev/null & "
            f"echo $! > {w}/{name}.pid; cat {w}/{name}.pid"
        )
        text = self.board.text(line)
        if not text.isdigit():
            raise HilError(f"{self.board.target}: starting {name} answered {text!r}")
        return int(text)

    def stop(self, name: str, *, wait_s: int = 30) -> bool:
        """TERM the process group, KILL it after ``wait_s``; True if it ended on TERM."""
        pid_file = shlex.quote(self.path(f"{name}.pid"))
        line = (
            f"[ -f {pid_file} ] || exit 0; pg=$(cat {pid_file}); "
            f'kill -TERM -- "-$pg" 2>/dev/null || exit 0; '
            f"i=0; while [ $i -lt {int(wait_s)} ]; do "
            f'kill -0 -- "-$pg" 2>/dev/null || exit 0; sleep 1; i=$((i+1)); done; '
            f'kill -KILL -- "-$pg" 2>/dev/null; exit 3'
        )
        return self.board.run(line, timeout=wait_s + 60, check=False).returncode == 0

    def alive(self, name: str) -> bool:
        pid_file = shlex.quote(self.path(f"{name}.pid"))
        line = f'kill -0 -- "-$(cat {pid_file})" 2>/dev/null'
        return self.board.run(line, check=False).returncode == 0

    def close(self, *, wait_s: int = 15) -> dict[str, object]:
        """End every process group (TERM, KILL after ``wait_s``), remove the folder; what was
        killed and whether the folder is gone."""
        if self.work is None:
            return {"work": None, "removed": True, "killed": []}
        killed = [name for name in self.names if not self.stop(name, wait_s=wait_s)]
        # Process groups this run did not name (a crash between start and record) end too.
        w = shlex.quote(self.work)
        self.board.run(
            f'for f in {w}/*.pid; do [ -f "$f" ] && kill -KILL -- "-$(cat "$f")" 2>/dev/null; '
            f"done; rm -rf {w}; test ! -e {w}",
            timeout=300,
            check=False,
        )
        deadline = time.monotonic() + 10
        gone = False
        while time.monotonic() < deadline:
            gone = self.board.run(f"test ! -e {w}", check=False).returncode == 0
            if gone:
                break
            time.sleep(1)
        out: dict[str, object] = {"work": self.work, "removed": gone, "killed": killed}
        self.work = None
        return out
