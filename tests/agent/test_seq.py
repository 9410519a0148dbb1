from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from agent.seq import SEQ_FILE, SequenceCounter


def test_a_new_counter_starts_above_the_clock_and_reserves_a_block(tmp_path: Path) -> None:
    # Above the clock, not 0: a reinstalled agent must not reuse the old install's numbers.
    before = time.time_ns() // 1000
    counter = SequenceCounter(tmp_path, block=10)
    first = counter.next()
    assert first >= before
    assert [counter.next() for _ in range(2)] == [first + 1, first + 2]
    assert json.loads((tmp_path / SEQ_FILE).read_text()) == {"next": first + 10}


def test_a_persisted_counter_continues(tmp_path: Path) -> None:
    (tmp_path / SEQ_FILE).write_text('{"next": 0}')
    counter = SequenceCounter(tmp_path, block=10)
    assert [counter.next() for _ in range(3)] == [0, 1, 2]
    assert json.loads((tmp_path / SEQ_FILE).read_text()) == {"next": 10}


def test_writes_once_per_block(tmp_path: Path) -> None:
    (tmp_path / SEQ_FILE).write_text('{"next": 0}')
    counter = SequenceCounter(tmp_path, block=10)
    path = tmp_path / SEQ_FILE
    for _ in range(10):
        counter.next()
    assert json.loads(path.read_text()) == {"next": 10}
    counter.next()  # the 11th number needs a new block, reserved before it is returned
    assert json.loads(path.read_text()) == {"next": 20}


def test_restart_never_reuses_a_number(tmp_path: Path) -> None:
    (tmp_path / SEQ_FILE).write_text('{"next": 0}')
    used: list[int] = []
    for _run in range(4):  # each run "crashes": the counter is simply abandoned
        counter = SequenceCounter(tmp_path, block=7)
        used.extend(counter.next() for _ in range(5))
    assert used == sorted(used)
    assert len(set(used)) == len(used)
    assert used[:5] == [0, 1, 2, 3, 4] and used[5] == 7


@pytest.mark.parametrize("content", ["", "{not json", '{"next": -4}', '{"next": "9"}', "[]"])
def test_unreadable_file_restarts_above_the_clock(tmp_path: Path, content: str) -> None:
    (tmp_path / SEQ_FILE).write_text(content)
    before = time.time_ns() // 1000
    counter = SequenceCounter(tmp_path)
    assert counter.next() >= before


def test_threads_get_unique_numbers(tmp_path: Path) -> None:
    (tmp_path / SEQ_FILE).write_text('{"next": 0}')
    counter = SequenceCounter(tmp_path, block=10)
    results: list[int] = []
    lock = threading.Lock()

    def take() -> None:
        values = [counter.next() for _ in range(200)]
        with lock:
            results.extend(values)

    threads = [threading.Thread(target=take) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == list(range(800))
