"""The uploader against a small HTTP server: what is kept, what is deleted, what is sent."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.capture.counters import CaptureCounters
from agent.capture.queue import SampleQueue
from agent.capture.uploader import Uploader
from edgefleet.contract import SampleMeta
from tests.agent.capture.helpers import SampleServer


@pytest.fixture
def server() -> Iterator[SampleServer]:
    s = SampleServer()
    thread = threading.Thread(target=s.httpd.serve_forever, daemon=True)
    thread.start()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


def _put(queue: SampleQueue, i: int) -> SampleMeta:
    content = f"content-{i}".encode() * 10
    meta = SampleMeta(
        sample_id=f"sample-{i:04d}",
        device_id="dev-1",
        model={"name": "digits", "version": "1.0.0"},  # type: ignore[arg-type]
        captured_at=datetime.now(UTC),
        reason="random",
        content_type="application/x-npy",
        sha256=hashlib.sha256(content).hexdigest(),
        size=len(content),
    )
    queue.put(meta, content)
    return meta


def _uploader(
    queue: SampleQueue, url: str, link: list[bool], counters: CaptureCounters
) -> Uploader:
    return Uploader(
        queue,
        url=url,
        token=lambda: "tok-123",
        link_up=lambda: link[0],
        rate_per_s=100,
        count=counters.add,
    )


def test_statuses_decide_what_is_kept_and_what_is_dropped(
    server: SampleServer, tmp_path: Path
) -> None:
    queue = SampleQueue(tmp_path / "q", max_bytes=10**6)
    metas = [_put(queue, i) for i in range(6)]
    counters = CaptureCounters()
    up = _uploader(queue, server.url, [True], counters)
    server.script = [503, 429, 201, 413, 200, 415, 403, 201]
    outcomes = [up.upload(queue.oldest()) for _ in range(2)]  # type: ignore[arg-type]
    assert outcomes == ["retry", "retry"] and len(queue) == 6  # kept on 503 and 429
    for _ in range(6):
        entry = queue.oldest()
        assert entry is not None
        if up.upload(entry) != "retry":
            queue.remove(entry)
    assert len(queue) == 0
    assert server.statuses == [503, 429, 201, 413, 200, 415, 403, 201]
    assert counters.totals == {"uploaded": 3, "refused_413": 1, "refused_415": 1, "refused_403": 1}
    meta, content, auth = server.received[0]
    assert meta == metas[0] and hashlib.sha256(content).hexdigest() == meta.sha256
    assert auth == "Bearer tok-123"


def test_nothing_is_sent_while_the_link_is_down_and_a_restart_resumes(
    server: SampleServer, tmp_path: Path
) -> None:
    queue = SampleQueue(tmp_path / "q", max_bytes=10**6)
    for i in range(5):
        _put(queue, i)
    link = [False]
    stop = threading.Event()
    up = _uploader(queue, server.url, link, CaptureCounters())
    thread = threading.Thread(target=up.run, args=(stop,), daemon=True)
    thread.start()
    time.sleep(0.8)
    assert server.received == [] and len(queue) == 5
    link[0] = True
    deadline = time.monotonic() + 10
    while len(queue) > 3 and time.monotonic() < deadline:
        time.sleep(0.005)
    stop.set()
    thread.join(5)
    # A restart (a new queue over the same directory) continues with what is left.
    again = SampleQueue(tmp_path / "q", max_bytes=10**6)
    assert 0 < len(again) <= 3
    up2 = _uploader(again, server.url, [True], CaptureCounters())
    stop2 = threading.Event()
    thread2 = threading.Thread(target=up2.run, args=(stop2,), daemon=True)
    thread2.start()
    while len(again) and time.monotonic() < deadline:
        time.sleep(0.01)
    stop2.set()
    thread2.join(5)
    assert len(again) == 0
    assert server.stored == {f"sample-{i:04d}" for i in range(5)}


def test_a_server_that_is_down_costs_nothing_and_backs_off(tmp_path: Path) -> None:
    from tests.utils.net import free_port

    queue = SampleQueue(tmp_path / "q", max_bytes=10**6)
    _put(queue, 0)
    up = _uploader(
        queue, f"http://127.0.0.1:{free_port()}/api/v1/samples", [True], CaptureCounters()
    )
    stop = threading.Event()
    thread = threading.Thread(target=up.run, args=(stop,), daemon=True)
    thread.start()
    time.sleep(2.5)  # back-off 1 s, 2 s: two or three attempts, not hundreds
    stop.set()
    thread.join(5)
    assert len(queue) == 1 and 1 <= up.failures <= 3


def test_a_replay_after_a_crash_before_delete_is_harmless(
    server: SampleServer, tmp_path: Path
) -> None:
    queue = SampleQueue(tmp_path / "q", max_bytes=10**6)
    _put(queue, 0)
    up = _uploader(queue, server.url, [True], CaptureCounters())
    entry = queue.oldest()
    assert entry is not None
    assert up.upload(entry) == "stored"  # ... and the device dies before deleting it
    again = SampleQueue(tmp_path / "q", max_bytes=10**6)
    entry = again.oldest()
    assert entry is not None
    assert _uploader(again, server.url, [True], CaptureCounters()).upload(entry) == "stored"
    assert server.statuses == [201, 200] and len(server.stored) == 1
