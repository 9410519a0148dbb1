"""One agent per data directory: the lock in-process and between real agent processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.datalock import LOCK_FILE, DataDirBusyError, DataDirLock
from agent.errors import AgentError
from tests.agent.helpers import config_toml
from tests.utils.net import free_port

ROOT = Path(__file__).resolve().parents[2]
AGENT = [sys.executable, "-m", "edgefleet", "agent", "run", "--config"]


def test_second_holder_is_refused_with_the_holders_pid(tmp_path: Path) -> None:
    first = DataDirLock.acquire(tmp_path / "data")
    with pytest.raises(DataDirBusyError) as caught:
        DataDirLock.acquire(tmp_path / "data")
    assert caught.value.holder_pid == os.getpid()
    assert f"pid {os.getpid()}" in str(caught.value)
    assert "\n" not in str(caught.value)
    first.release()
    first.release()  # idempotent
    again = DataDirLock.acquire(tmp_path / "data")
    assert again.held
    again.release()


def test_garbage_in_the_lock_file_is_not_taken_for_a_pid(tmp_path: Path) -> None:
    holder = DataDirLock.acquire(tmp_path)
    # Someone scribbles over the pid while the lock is held: the refusal still happens, and
    # says the pid is not known rather than naming a made-up one.
    (tmp_path / LOCK_FILE).write_bytes(b"\xff" * 10_000)
    with pytest.raises(DataDirBusyError) as caught:
        DataDirLock.acquire(tmp_path)
    assert caught.value.holder_pid is None
    assert "pid is not known" in str(caught.value)
    holder.release()


def test_a_symlinked_lock_file_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("keep me")
    data = tmp_path / "data"
    data.mkdir()
    (data / LOCK_FILE).symlink_to(target)
    with pytest.raises(AgentError, match="cannot open agent.lock"):
        DataDirLock.acquire(data)
    assert target.read_text() == "keep me"


def _start(config: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*AGENT, str(config)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_holder(lock: Path, proc: subprocess.Popen[str], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read() if proc.stderr else ""
            raise AssertionError(f"agent exited early: {err}")
        if lock.exists() and lock.read_text().strip() == str(proc.pid):
            return
        time.sleep(0.05)
    raise AssertionError(f"agent {proc.pid} did not take {lock} within {timeout} s")


def test_second_agent_process_refuses_and_a_killed_holder_frees_the_lock(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    config = tmp_path / "agent.toml"
    # No broker listens there: an agent serves (and holds its data directory) offline.
    config.write_text(config_toml(data_dir=data_dir, mqtt_url=f"mqtt://127.0.0.1:{free_port()}"))
    lock = data_dir / LOCK_FILE
    first = _start(config)
    third: subprocess.Popen[str] | None = None
    try:
        _wait_holder(lock, first)
        second = _start(config)
        _, err = second.communicate(timeout=60)
        assert second.returncode == 1
        lines = err.strip().splitlines()
        assert len(lines) == 1, lines
        assert f"pid {first.pid}" in lines[0] and str(data_dir) in lines[0]
        assert first.poll() is None  # the holder is untouched
        assert lock.read_text().strip() == str(first.pid)

        first.send_signal(signal.SIGKILL)  # no clean-up runs: the kernel drops the flock
        first.wait(10)
        assert lock.read_text().strip() == str(first.pid)  # a stale pid stays in the file
        third = _start(config)
        _wait_holder(lock, third)
        third.send_signal(signal.SIGTERM)
        assert third.wait(30) == 0
    finally:
        for proc in (first, third):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(5)
