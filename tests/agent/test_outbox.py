"""The on-device outbox: order, byte budget and drop policy, drain, kill -9, corrupt files."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent.outbox import (
    PAGE_CACHE_KIB,
    ROW_OVERHEAD,
    Outbox,
    OutboxError,
    OutboxMessage,
    PayloadTooLarge,
    message_size,
)

ROOT = Path(__file__).resolve().parents[2]
TEL = "edgefleet/v1/dev-1/telemetry"
EVT = "edgefleet/v1/dev-1/events"
STATE = "edgefleet/v1/dev-1/state"


def _payloads(box: Outbox) -> list[bytes]:
    return [m.payload for m in box.peek(10_000)]


def _collect(into: list[bytes]) -> Callable[[OutboxMessage], bool]:
    def send(message: OutboxMessage) -> bool:
        into.append(message.payload)
        return True

    return send


def test_fifo_round_trip_and_persistence(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    with Outbox(path, max_bytes=1_000_000) as box:
        ids = [
            box.put(TEL, b"t1", kind="telemetry"),
            box.put(EVT, b"e1", kind="event"),
            box.put(STATE, b"s1", kind="state", retain=True),
            box.put(TEL, b"t2", kind="telemetry"),
        ]
        assert ids == sorted(ids) and len(set(ids)) == 4
        head = box.peek(2)
        assert [(m.topic, m.payload, m.kind, m.retain) for m in head] == [
            (TEL, b"t1", "telemetry", False),
            (EVT, b"e1", "event", False),
        ]
        assert box.peek(0) == [] and box.peek(-1) == []
        assert box.ack([head[0].id, head[0].id, 999_999]) == 1
        assert box.ack([]) == 0
    with Outbox(path, max_bytes=1_000_000) as box:  # reopened: the rest, in order
        messages = box.peek(10)
        assert [m.payload for m in messages] == [b"e1", b"s1", b"t2"]
        assert messages[1].retain is True
        stats = box.stats()
        assert stats.messages == 3
        assert stats.bytes == sum(message_size(m.topic, m.payload) for m in messages)
        new = box.put(TEL, b"t3", kind="telemetry")
        assert new > ids[-1], "ids are never reused, so order survives deletes"


def test_the_page_cache_is_capped_on_every_connection_it_opens(tmp_path: Path) -> None:
    # SQLite's default 2 MiB cache filled at the first outage's backlog and stayed in the
    # agent's RSS (the short soak); the cap holds for a recovered (recreated) file too.
    path = tmp_path / "outbox.db"
    with Outbox(path, max_bytes=10_000_000) as box:
        for i in range(2_000):
            box.put(TEL, os.urandom(1_000) + str(i).encode(), kind="telemetry")
        assert box._conn.execute("PRAGMA cache_size").fetchone()[0] == -PAGE_CACHE_KIB
        assert len(box.peek(10_000)) == 2_000
    path.write_bytes(b"not a database" * 100)
    with Outbox(path, max_bytes=1_000_000) as box:
        assert box._conn.execute("PRAGMA cache_size").fetchone()[0] == -PAGE_CACHE_KIB


def test_over_budget_drops_oldest_telemetry_first_and_counts_it(tmp_path: Path) -> None:
    size = message_size(TEL, b"x" * 100)
    path = tmp_path / "outbox.db"
    with Outbox(path, max_bytes=size * 5) as box:
        box.put(TEL, b"a" * 100, kind="telemetry")
        box.put(EVT.ljust(len(TEL), "x"), b"E" * 100, kind="event")
        for letter in b"bcd":
            box.put(TEL, bytes([letter]) * 100, kind="telemetry")
        assert box.stats().dropped_telemetry == 0
        box.put(TEL, b"f" * 100, kind="telemetry")  # one over: 'a' goes, the event stays
        box.put(TEL, b"g" * 100, kind="telemetry")  # 'b' goes
        assert [p[:1] for p in _payloads(box)] == [b"E", b"c", b"d", b"f", b"g"]
        assert box.stats().bytes <= size * 5
    with Outbox(path, max_bytes=size * 5) as box:
        stats = box.stats()
        assert (stats.dropped_telemetry, stats.dropped_events) == (2, 0)  # persisted


def test_events_are_dropped_only_when_no_telemetry_is_left(tmp_path: Path) -> None:
    size = message_size(EVT, b"x" * 100)
    with Outbox(tmp_path / "outbox.db", max_bytes=size * 3) as box:
        box.put(TEL.ljust(len(EVT), "x")[: len(EVT)], b"t" * 100, kind="telemetry")
        for letter in b"ABC":
            box.put(EVT, bytes([letter]) * 100, kind="event")
        assert [p[:1] for p in _payloads(box)] == [b"A", b"B", b"C"]
        box.put(EVT, b"D" * 100, kind="event")
        assert [p[:1] for p in _payloads(box)] == [b"B", b"C", b"D"]
        # New telemetry into a queue of events: it is the oldest telemetry, so it goes.
        box.put(TEL.ljust(len(EVT), "x")[: len(EVT)], b"u" * 100, kind="telemetry")
        assert [p[:1] for p in _payloads(box)] == [b"B", b"C", b"D"]
        stats = box.stats()
        assert (stats.dropped_telemetry, stats.dropped_events) == (2, 1)


def test_a_newer_state_replaces_the_unsent_one(tmp_path: Path) -> None:
    with Outbox(tmp_path / "outbox.db", max_bytes=1_000_000) as box:
        box.put(STATE, b"s1", kind="state", retain=True)
        box.put(TEL, b"t1", kind="telemetry")
        box.put("edgefleet/v1/dev-2/state", b"other", kind="state", retain=True)
        box.put(STATE, b"s2", kind="state", retain=True)
        assert _payloads(box) == [b"t1", b"other", b"s2"]
        assert box.stats().dropped_state == 0
        assert box.stats().bytes == sum(message_size(m.topic, m.payload) for m in box.peek(9))


def test_a_message_larger_than_the_budget_is_refused(tmp_path: Path) -> None:
    budget = 1000
    with Outbox(tmp_path / "outbox.db", max_bytes=budget) as box:
        box.put(TEL, b"keep", kind="telemetry")
        too_big = b"x" * (budget - ROW_OVERHEAD - len(TEL) + 1)
        with pytest.raises(PayloadTooLarge, match="exceeds the whole budget of 1000"):
            box.put(TEL, too_big, kind="event")
        assert _payloads(box) == [b"keep"]
        exact = b"y" * (budget - ROW_OVERHEAD - len(TEL))
        box.put(TEL, exact, kind="telemetry")  # fits exactly: everything else goes
        assert _payloads(box) == [exact] and box.stats().bytes == budget


@pytest.mark.parametrize(
    ("topic", "payload", "kind", "match"),
    [
        ("", b"x", "telemetry", "non-empty"),
        ("edgefleet/v1/+/telemetry", b"x", "telemetry", "wildcard"),
        ("edgefleet/#", b"x", "event", "wildcard"),
        ("a\x00b", b"x", "event", "NUL"),
        ("a" * 70_000, b"x", "event", "exceeds 65535"),
        ("bad\ud800", b"x", "event", "UTF-8"),
        (TEL, "text", "telemetry", "must be bytes"),
        (TEL, None, "telemetry", "must be bytes"),
        (TEL, b"x", "status", "kind must be one of"),
        (123, b"x", "event", "non-empty string"),
    ],
)
def test_malformed_puts_are_refused(
    tmp_path: Path, topic: Any, payload: Any, kind: Any, match: str
) -> None:
    with Outbox(tmp_path / "outbox.db", max_bytes=1_000_000) as box:
        with pytest.raises(OutboxError, match=match):
            box.put(topic, payload, kind=kind)
        assert box.stats().messages == 0


@pytest.mark.parametrize("max_bytes", [0, -1, True, 1.5, "100", None])
def test_invalid_budget(tmp_path: Path, max_bytes: Any) -> None:
    with pytest.raises(OutboxError, match="max_bytes"):
        Outbox(tmp_path / "outbox.db", max_bytes=max_bytes)


def test_unusable_locations_are_one_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutboxError, match="cannot create the outbox directory"):
        Outbox(blocker / "sub" / "outbox.db", max_bytes=1000)
    with pytest.raises(OutboxError, match="cannot open outbox"):
        Outbox(tmp_path, max_bytes=1000)  # a directory, not a file


def test_drain_sends_in_order_and_deletes_only_what_was_confirmed(tmp_path: Path) -> None:
    with Outbox(tmp_path / "outbox.db", max_bytes=1_000_000) as box:
        for i in range(10):
            box.put(TEL, str(i).encode(), kind="telemetry")
        sent: list[bytes] = []

        def flaky(message: OutboxMessage) -> bool:
            if message.payload == b"4":
                return False  # broker gone: stop here, keep "4" and everything after
            sent.append(message.payload)
            return True

        assert box.drain(flaky, batch=3) == 4
        assert sent == [b"0", b"1", b"2", b"3"]
        assert _payloads(box)[0] == b"4"

        def boom(message: OutboxMessage) -> bool:
            if message.payload == b"6":
                raise ConnectionError("socket closed")
            return True

        with pytest.raises(ConnectionError):
            box.drain(boom)
        assert _payloads(box) == [b"6", b"7", b"8", b"9"]  # 4 and 5 confirmed, then deleted

        everything: list[bytes] = []
        assert box.drain(_collect(everything), batch=2) == 4
        assert everything == [b"6", b"7", b"8", b"9"] and box.stats().messages == 0
        assert box.drain(lambda m: True) == 0


def test_drain_is_rate_limited_and_stoppable(tmp_path: Path) -> None:
    with Outbox(tmp_path / "outbox.db", max_bytes=1_000_000) as box:
        for i in range(5):
            box.put(EVT, str(i).encode(), kind="event")
        started = time.monotonic()
        assert box.drain(lambda m: True, rate_per_s=20) == 5
        assert time.monotonic() - started >= 4 / 20 * 0.9

        for i in range(100):
            box.put(EVT, str(i).encode(), kind="event")
        stop = threading.Event()
        seen: list[bytes] = []

        def send(message: OutboxMessage) -> bool:
            seen.append(message.payload)
            if len(seen) == 3:
                stop.set()
            return True

        assert box.drain(send, rate_per_s=1000, stop=stop) == 3
        assert _payloads(box)[0] == b"3"
        with pytest.raises(OutboxError, match="rate_per_s"):
            box.drain(send, rate_per_s=0)
        with pytest.raises(OutboxError, match="rate_per_s"):
            box.drain(send, rate_per_s=-1)


def test_concurrent_producers_and_a_drainer_lose_nothing(tmp_path: Path) -> None:
    got: list[bytes] = []
    with Outbox(tmp_path / "outbox.db", max_bytes=100_000_000) as box:

        def produce(worker: int) -> None:
            for i in range(50):
                box.put(f"edgefleet/v1/dev-{worker}/events", f"{worker}:{i}".encode(), kind="event")

        threads = [threading.Thread(target=produce, args=(w,)) for w in range(4)]
        for thread in threads:
            thread.start()
        while any(t.is_alive() for t in threads) or box.stats().messages:
            box.drain(_collect(got), batch=7)
        for thread in threads:
            thread.join()
        box.drain(_collect(got))
    assert sorted(got) == sorted(f"{w}:{i}".encode() for w in range(4) for i in range(50))
    for worker in range(4):  # each producer's messages left in the order it put them
        mine = [g for g in got if g.startswith(f"{worker}:".encode())]
        assert mine == [f"{worker}:{i}".encode() for i in range(50)]


_WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from agent.outbox import Outbox

    path, size, mode = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    box = Outbox(path, max_bytes=10**10)
    i = 0
    if mode == "drain":
        box.drain(lambda m: print("acked", m.payload[:8].decode(), flush=True) is None, batch=1)
        i = 10**6
    while True:
        box.put("edgefleet/v1/dev-1/telemetry", f"{i:08d}".encode() * size, kind="telemetry")
        print("put", i, flush=True)
        i += 1
    """
)


def _run_and_kill(path: Path, *, size: int, mode: str, after: int) -> list[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path), str(size), mode],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        while len(lines) < after:
            line = proc.stdout.readline()
            assert line, f"writer died early: {lines[-3:]}"
            lines.append(line.split("\n")[0])
    finally:
        proc.send_signal(signal.SIGKILL)  # mid-write: no chance to close anything
        proc.wait(10)
    # What it printed before the kill landed: every line is printed after the step it names.
    lines += [line for line in proc.stdout.read().splitlines() if line]
    return lines


@pytest.mark.parametrize("size", [1, 20_000])
def test_kill_9_mid_write_leaves_a_consistent_prefix(tmp_path: Path, size: int) -> None:
    path = tmp_path / "outbox.db"
    lines = _run_and_kill(path, size=size, mode="put", after=150 if size == 1 else 40)
    confirmed = int(lines[-1].split()[1]) + 1  # put() returned for 0..confirmed-1
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with Outbox(path, max_bytes=10**10) as box:
        payloads = _payloads(box)
        assert len(payloads) >= confirmed
        assert payloads == [f"{i:08d}".encode() * size for i in range(len(payloads))]
        assert box.stats().corrupt_recoveries == 0

    # Killed again halfway through draining: the rest is still an unbroken run.
    lines = _run_and_kill(path, size=size, mode="drain", after=len(payloads) // 2)
    acked = [int(line.split()[1]) for line in lines if line.startswith("acked")]
    assert acked == list(range(len(acked)))
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with Outbox(path, max_bytes=10**10) as box:
        rest = [int(p[:8]) for p in _payloads(box)]
    old = [n for n in rest if n < 10**6]
    assert old == list(range(old[0], len(payloads))) if old else len(acked) == len(payloads)
    # At-least-once: the last confirmed message may not have been deleted yet.
    assert not old or len(acked) - 1 <= old[0] <= len(acked)
    assert [n for n in rest if n >= 10**6] == list(range(10**6, 10**6 + len(rest) - len(old)))


def test_a_corrupt_file_is_moved_aside_and_replaced(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "outbox.db"
    garbage = b"this is not sqlite" * 500
    path.write_bytes(garbage)
    with Outbox(path, max_bytes=1_000_000) as box:
        assert box.stats().corrupt_recoveries == 1 and box.stats().messages == 0
        box.put(TEL, b"fresh", kind="telemetry")
        assert _payloads(box) == [b"fresh"]
    [aside] = [p for p in tmp_path.iterdir() if ".corrupt-" in p.name]
    assert aside.read_bytes() == garbage
    assert "corrupt" in caplog.text


def test_a_damaged_database_is_recovered(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    with Outbox(path, max_bytes=10**9) as box:
        for _ in range(200):
            box.put(TEL, os.urandom(2000), kind="telemetry")
    assert not path.with_name("outbox.db-wal").exists()  # closing checkpointed everything
    data = bytearray(path.read_bytes())
    page = 4096
    data[page * 2 : page * 6] = b"\xff" * (page * 4)  # trash b-tree pages, keep the header
    path.write_bytes(bytes(data))
    with Outbox(path, max_bytes=10**9) as box:
        assert box.stats().corrupt_recoveries == 1
        assert box.stats().messages == 0
        box.put(TEL, b"after", kind="telemetry")
    with Outbox(path, max_bytes=10**9) as box:  # the new file is healthy
        assert _payloads(box) == [b"after"]
        assert box.stats().corrupt_recoveries == 1


def test_a_database_from_a_newer_agent_is_not_silently_used(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 99")
    with Outbox(path, max_bytes=1000) as box:
        assert box.stats().corrupt_recoveries == 1
    assert any(".corrupt-" in p.name for p in tmp_path.iterdir())
