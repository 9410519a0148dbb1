"""A private PostgreSQL cluster on a loopback port, for tests that stop and start the database.

Never the shared server: ``initdb`` into a temporary directory, ``pg_ctl`` start/stop on a
port below the ephemeral range (:func:`~tests.utils.net.restartable_port`), so nobody else's
``free_port()`` takes it while it is down and the server under test reconnects to the same
address. initdb refuses to run as root, so as root the cluster runs as the ``postgres`` user
(its directory is world-writable for that). initdb + first start take ~1.5 s.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.utils.net import restartable_port, wait_for_port


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if found:
        return Path(found[-1]).parent
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).parent if pg_ctl else None


class PrivatePostgres:
    def __init__(self) -> None:
        bin_dir = _bin_dir()
        if bin_dir is None:
            if os.environ.get("EDGEFLEET_REQUIRE_SERVICES") == "1":
                pytest.fail("initdb/pg_ctl are required (EDGEFLEET_REQUIRE_SERVICES=1)")
            pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
        self.bin = bin_dir
        self.port = restartable_port()
        self.root = Path(tempfile.mkdtemp(prefix="edgefleet-pg-"))
        self.root.chmod(0o777)
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self._as: list[str] = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run(  # noqa: S603 - fixed binaries, arguments from this class
            [*self._as, str(self.bin / tool), *args],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=60,
        )

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")
        wait_for_port("127.0.0.1", self.port, timeout=30)

    def stop(self) -> None:
        """A fast shutdown: every open connection is terminated, as in a crash or failover."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def cleanup(self) -> None:
        if (self.data / "postmaster.pid").exists():
            try:
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
            except subprocess.SubprocessError:
                pass
        shutil.rmtree(self.root, ignore_errors=True)


@contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    """A started private cluster, stopped and deleted afterwards."""
    pg = PrivatePostgres()
    try:
        pg.start()
        yield pg
    finally:
        pg.cleanup()
