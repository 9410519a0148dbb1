"""The capture queue: kill -9 mid-write leaves a consistent queue; the disk budget holds."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.capture.counters import CaptureCounters
from agent.capture.queue import QueueError, SampleQueue
from edgefleet.contract import SampleMeta

ROOT = Path(__file__).resolve().parents[3]

WRITER = """
import hashlib, os, sys, itertools
from datetime import UTC, datetime
from pathlib import Path
from agent.capture.queue import SampleQueue
from edgefleet.contract import SampleMeta
q = SampleQueue(Path(sys.argv[1]), max_bytes=int(sys.argv[2]))
print("ready", flush=True)
for i in itertools.count():
    content = os.urandom(50_000 + (i * 7919) % 200_000)
    q.put(SampleMeta(
        sample_id=f"s{os.getpid()}-{i:08d}", device_id="dev-1",
        model={"name": "digits", "version": "1.0.0"}, captured_at=datetime.now(UTC),
        reason="random", content_type="application/x-npy",
        sha256=hashlib.sha256(content).hexdigest(), size=len(content)), content)
"""


def _meta(sample_id: str, content: bytes) -> SampleMeta:
    return SampleMeta(
        sample_id=sample_id,
        device_id="dev-1",
        model={"name": "digits", "version": "1.0.0"},  # type: ignore[arg-type]
        captured_at=datetime.now(UTC),
        reason="random",
        content_type="application/x-npy",
        sha256=hashlib.sha256(content).hexdigest(),
        size=len(content),
    )


def _check_consistent(directory: Path, budget: int) -> int:
    counters = CaptureCounters()
    queue = SampleQueue(directory, max_bytes=budget, on_drop=counters.add)
    assert counters.totals == {}, counters.totals  # nothing was corrupt
    assert not list(directory.glob("*.tmp"))
    assert sorted(p.stem for p in directory.glob("*.bin")) == [e.name for e in queue.entries()]
    for entry in queue.entries():
        data = entry.content.read_bytes()
        assert len(data) == entry.meta.size == entry.size
        assert hashlib.sha256(data).hexdigest() == entry.meta.sha256
    assert queue.total_bytes <= budget
    return len(queue)


def test_kill_9_mid_write_leaves_a_consistent_queue(tmp_path: Path) -> None:
    directory, budget = tmp_path / "q", 3_000_000
    rng = random.Random(0)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    kills = 0
    counts = []
    for _ in range(12):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(directory), str(budget)],
            stdout=subprocess.PIPE,
            env=env,
            cwd=ROOT,
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        time.sleep(rng.uniform(0.02, 0.25))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        kills += 1
        counts.append(_check_consistent(directory, budget))
    assert kills == 12 and max(counts) > 0


def test_over_budget_the_oldest_go_first_counted(tmp_path: Path) -> None:
    counters = CaptureCounters()
    queue = SampleQueue(tmp_path / "q", max_bytes=2500, on_drop=counters.add)
    for i in range(5):
        queue.put(_meta(f"sample-{i:04d}", bytes([i]) * 1000), bytes([i]) * 1000)
    assert [e.meta.sample_id for e in queue.entries()] == ["sample-0003", "sample-0004"]
    assert counters.totals == {"dropped_disk": 3}
    assert queue.total_bytes == 2000
    with pytest.raises(QueueError, match="exceeds"):
        queue.put(_meta("sample-big", b"x" * 3000), b"x" * 3000)
    assert counters.totals["too_big"] == 1 and len(queue) == 2
    # A restart sees the same queue, in the same order.
    again = SampleQueue(tmp_path / "q", max_bytes=2500)
    assert [e.meta.sample_id for e in again.entries()] == ["sample-0003", "sample-0004"]


def test_debris_is_cleared_and_corrupt_metadata_counted(tmp_path: Path) -> None:
    directory = tmp_path / "q"
    queue = SampleQueue(directory, max_bytes=10**6)
    queue.put(_meta("sample-good", b"a" * 10), b"a" * 10)
    (directory / "00000000000000000001-orphan.bin").write_bytes(b"half")
    (directory / "00000000000000000002-x.bin.tmp").write_bytes(b"half")
    (directory / "00000000000000000003-bad.bin").write_bytes(b"b")
    (directory / "00000000000000000003-bad.json").write_bytes(b"{not json")
    counters = CaptureCounters()
    again = SampleQueue(directory, max_bytes=10**6, on_drop=counters.add)
    assert [e.meta.sample_id for e in again.entries()] == ["sample-good"]
    assert counters.totals == {"queue_corrupt": 1}
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        [f"{again.entries()[0].name}.bin", f"{again.entries()[0].name}.json"]
    )
