"""``edgefleet hil run --target ssh://…`` end to end, on the emulated arm64 board.

The board is ``hil.arm64``'s cached Debian arm64 root behind a private sshd in a network
namespace (``tests/utils/sshd.py``: the host's sshd chroots each session into the root, so
everything the runner starts there is aarch64 code under qemu-user-static). The runner
builds this tree's wheel, installs it on the board (``--system-site-packages --no-index``:
the root's pinned aarch64 wheels, no network), starts its own server on the address the
board reaches it from, runs the ``update`` scenario and must leave nothing behind. Emulated
timings are not device timings: latency is asserted present, never quoted.

Needs the built board (``python -m hil.arm64 build``), root, openssh-server and iproute2:
skipped with the reason otherwise, failed under ``EDGEFLEET_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hil.arm64.rootfs import Board, emulation_problem, find_board
from tests.utils.required import missing
from tests.utils.sshd import Sshd, sshd, unavailable

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def board() -> Board:
    problem = emulation_problem() or unavailable()
    found = find_board() if problem is None else None
    if problem is None and found is None:
        problem = "the arm64 board is not built: run `python -m hil.arm64 build` (tens of minutes)"
    if found is None:
        missing(str(problem))
    return found


@pytest.fixture(scope="module")
def server(board: Board, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    with sshd(tmp_path_factory.mktemp("sshd-arm64"), chroot=board.rootfs) as running:
        yield running


def _leftovers(board: Board) -> list[str]:
    """Run folders on the board, and host processes (the board's run under qemu on this
    kernel) whose command line names one. Only processes chrooted into the board count: a run
    of the SSH runner against the host's own root (``test_ssh_session.py`` on another test
    worker) has the same folder names in its command lines."""
    folders = sorted(str(p) for p in (board.rootfs / "tmp").glob("edgefleet-hil-*"))
    rootfs = board.rootfs.resolve()
    procs = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            if Path(os.readlink(entry / "root")) != rootfs:
                continue
        except OSError:
            continue
        if "/tmp/edgefleet-hil-" in cmdline and state != "Z" and "pytest" not in cmdline:
            procs.append(f"{entry.name}: {cmdline[:160]}")
    return folders + procs


def _hil(server: Sshd, tmp_path: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "edgefleet", "hil", "run", "--target", server.target,
        "--identity", str(server.identity), "--known-hosts", str(server.known_hosts),
        "--system-site-packages", "--no-index", "--step-timeout", "600", "--bench-runs", "50",
        *extra,
    ]  # fmt: skip


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


def test_update_scenario_on_the_arm64_board_reports_and_cleans_up(
    board: Board, server: Sshd, tmp_path: Path
) -> None:
    assert _leftovers(board) == []
    report_file = tmp_path / "report.json"
    done = subprocess.run(
        _hil(server, tmp_path, "--scenario", "update", "--report", str(report_file)),
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=2400,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(report_file.read_text())
    assert report["ok"] is True and report["scenario"] == "update"
    assert report["board"]["machine"] == "aarch64"
    assert report["running"] == "digits@2.0.0"
    assert report["update_s"] > 0 and report["agent_stopped_on_term"] is True
    agent = report["agent"]
    # Sampled every 2 s while 2.0.0 served for 20 s after the update.
    assert agent["samples"] >= 5 and agent["rss_mb"]["max"] > 10 and agent["threads"]["max"] > 1
    for ref in ("digits@1.0.0", "digits@2.0.0"):
        bench = report["latency"][ref]
        assert bench.get("error") is None, bench
        assert bench["agent_ms"]["p50"] > 0 and bench["bare_ms"]["p50"] > 0
    # No thermal zone in an emulated board: reported as such, not invented.
    assert isinstance(report["temperature_c"], dict)
    assert report["cleanup"]["removed"] is True and report["cleanup"]["killed"] == []
    assert _leftovers(board) == []
    # The table is the report's summary.
    assert "scenario" in done.stdout and "update: ok" in done.stdout
    assert "board folder and processes removed" in done.stdout


def test_interrupted_run_cleans_the_board(board: Board, server: Sshd, tmp_path: Path) -> None:
    # `env --default-signal=INT`: a test run started from a script in the background (`cmd &`
    # without job control) has SIGINT ignored, the child inherits that, and Python then leaves
    # it ignored — Ctrl-C must reach the runner here as it does from a terminal.
    runner = subprocess.Popen(
        ["env", "--default-signal=INT", *_hil(server, tmp_path, "--scenario", "update", "--json")],
        cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 600
        pid_files: list[Path] = []
        while not pid_files and time.monotonic() < deadline and runner.poll() is None:
            pid_files = list((board.rootfs / "tmp").glob("edgefleet-hil-*/install.pid"))
            time.sleep(0.5)
        assert pid_files, "the install never started on the board"
        runner.send_signal(signal.SIGINT)
        out, err = runner.communicate(timeout=300)
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait(10)
    assert runner.returncode == 1, err[-2000:]
    report = json.loads(out)
    assert report["ok"] is False and report["error"] == "interrupted"
    assert report["cleanup"]["removed"] is True
    assert _leftovers(board) == []
