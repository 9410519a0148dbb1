"""The SSH runner's footprint on a board, against a real sshd in a network namespace (the
host's own root is the board here: fast; ``test_ssh_arm64.py`` runs the whole scenario on the
emulated arm64 board). Needs root, openssh-server and iproute2: skipped with the reason
otherwise, failed under ``EDGEFLEET_REQUIRE_SERVICES=1``."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hil.ssh.errors import HilError
from hil.ssh.session import PREFIX, RemoteRun
from hil.ssh.target import Board, parse_target
from tests.utils.required import missing
from tests.utils.sshd import Sshd, sshd, unavailable

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    reason = unavailable()
    if reason is not None:
        missing(reason)
    with sshd(tmp_path_factory.mktemp("sshd")) as running:
        yield running


def _board(server: Sshd) -> Board:
    return Board(
        parse_target(server.target), known_hosts=server.known_hosts, identity=server.identity
    )


def _group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid`` on this machine."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and fields[2] == str(pgid):
            found.append(int(entry.name))
    return found


def _group_alive(pgid: int, *, settle_s: float = 5.0) -> bool:
    """Whether the group still has a live member ``settle_s`` after asking (a killed process
    takes a moment to be gone from /proc)."""
    deadline = time.monotonic() + settle_s
    while _group_members(pgid):
        if time.monotonic() > deadline:
            return True
        time.sleep(0.1)
    return False


def test_files_in_and_out_and_the_host_key_is_pinned(server: Sshd, tmp_path: Path) -> None:
    board = _board(server)
    remote = RemoteRun(board)
    work = remote.open()
    try:
        assert work.startswith(PREFIX)
        data = bytes(range(256)) * 4096  # 1 MiB, every byte value
        (tmp_path / "blob").write_bytes(data)
        (tmp_path / "dir").mkdir()
        (tmp_path / "dir" / "a.txt").write_text("a")
        remote.send({"blob": tmp_path / "blob", "inputs": tmp_path / "dir"})
        assert board.get(remote.path("blob")) == data
        assert board.text(f"cat {remote.path('inputs/a.txt')}") == "a"
        with pytest.raises(HilError, match="larger than 100 bytes"):
            board.get(remote.path("blob"), limit=100)
        board.put(tmp_path / "blob", remote.path("copy"))
        assert (
            board.text(f"sha256sum < {remote.path('copy')}").split()[0]
            == board.text(f"sha256sum < {remote.path('blob')}").split()[0]
        )
        with pytest.raises(HilError, match="exited 3"):
            board.run("echo nope >&2; exit 3")
    finally:
        assert remote.close()["removed"]
    assert not Path(work).exists()
    # The first connection recorded the host key in our file; a changed key is refused.
    assert server.known_hosts.read_text().count("ssh-ed25519") == 1
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")],
                   check=True, capture_output=True)  # fmt: skip
    host = server.known_hosts.read_text().split()[0]
    other = tmp_path / "known_hosts"
    other.write_text(f"{host} {(tmp_path / 'k.pub').read_text().split()[0]} "
                     f"{(tmp_path / 'k.pub').read_text().split()[1]}\n")  # fmt: skip
    changed = Board(parse_target(server.target), known_hosts=other, identity=server.identity)
    with pytest.raises(HilError, match="ssh failed"):
        changed.run("true")


def test_close_ends_every_process_group_and_removes_the_folder(server: Sshd) -> None:
    remote = RemoteRun(_board(server))
    work = remote.open()
    polite = remote.start("polite", "sleep 300", max_s=600)
    # A process that ignores TERM, with a child in its group: KILL ends both.
    stubborn = remote.start("stubborn", "sh -c 'trap \"\" TERM; sleep 300 & wait'", max_s=600)
    assert remote.alive("polite") and remote.alive("stubborn")
    assert _group_members(polite) and _group_members(stubborn)
    assert remote.stop("polite", wait_s=10) is True
    assert not remote.alive("polite") and not _group_alive(polite)
    result = remote.close(wait_s=2)
    assert result == {"work": work, "removed": True, "killed": ["stubborn"]}
    assert not _group_alive(stubborn) and not Path(work).exists()
    assert remote.close() == {"work": None, "removed": True, "killed": []}  # idempotent


def test_a_process_outlives_no_deadline(server: Sshd) -> None:
    """A runner that vanishes leaves a board that stops itself: ``timeout`` ends the group."""
    remote = RemoteRun(_board(server))
    remote.open()
    try:
        pgid = remote.start("short", "sleep 300", max_s=1)
        assert not _group_alive(pgid, settle_s=15)
    finally:
        remote.close()


def test_bad_process_names_are_refused(server: Sshd) -> None:
    remote = RemoteRun(_board(server))
    remote.open()
    try:
        with pytest.raises(HilError, match="bad or repeated"):
            remote.start("x; rm -rf /", "true", max_s=5)
        remote.start("once", "true", max_s=5)
        with pytest.raises(HilError, match="bad or repeated"):
            remote.start("once", "true", max_s=5)
    finally:
        assert remote.close()["removed"]


def test_a_failed_install_is_one_line_with_pip_s_reason(server: Sshd, tmp_path: Path) -> None:
    remote = RemoteRun(_board(server))
    remote.open()
    try:
        bogus = tmp_path / "edgefleet-0.0.0-py3-none-any.whl"
        bogus.write_bytes(b"not a zip file")
        remote.send({bogus.name: bogus})
        with pytest.raises(HilError) as info:
            remote.install(bogus.name, system_site=True, no_index=True, timeout=300)
        assert "installing edgefleet-0.0.0-py3-none-any.whl on the board failed" in str(info.value)
        assert "\n" not in str(info.value).split(": ", 1)[0]
    finally:
        assert remote.close()["removed"]
