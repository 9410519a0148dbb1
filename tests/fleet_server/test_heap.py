"""fleet_server.heap and the drift threshold cache: what the soak found growing (issue #16)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
import tracemalloc
from pathlib import Path

import numpy as np

from fleet_server.heap import HeapTrimmer, cap_arenas, trim
from fleet_server.services.drift import divergence
from fleet_server.settings import ServerSettings

ROOT = Path(__file__).resolve().parents[2]


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_trim_hands_freed_heap_pages_back() -> None:
    # Many small blocks freed out of order leave glibc's heap resident; trim returns them.
    code = textwrap.dedent("""
        from fleet_server.heap import trim
        def rss():
            for line in open("/proc/self/status"):
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        keep, junk = [], []
        for i in range(200_000):
            (keep if i % 64 == 0 else junk).append(bytearray(1000))
        del junk
        before = rss()
        released = trim()
        print(released, before - rss())
    """)
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    released, dropped = done.stdout.split()
    assert released == "True"
    assert float(dropped) > 50, done.stdout  # ~190 MB freed; most of it goes back


def test_cap_arenas_respects_the_environment_and_zero() -> None:
    assert cap_arenas(2, environ={"MALLOC_ARENA_MAX": "4"}) is False
    assert cap_arenas(0, environ={}) is False
    assert cap_arenas(2, environ={}) is True  # glibc here (the test machines are Debian)


def test_the_trimmer_runs_until_stopped() -> None:
    calls: list[float] = []

    def fake_trim() -> bool:
        calls.append(time.monotonic())
        if len(calls) == 2:
            raise RuntimeError("a failing trim is logged, the thread goes on")
        return True

    trimmer = HeapTrimmer(0.02, trim_fn=fake_trim)
    trimmer.start()
    deadline = time.monotonic() + 30
    while len(calls) < 4 and time.monotonic() < deadline:
        time.sleep(0.02)
    trimmer.stop()
    assert len(calls) >= 4 and trimmer.trims == len(calls) - 1
    settled = len(calls)
    time.sleep(0.1)
    assert len(calls) == settled  # stopped means stopped
    idle = HeapTrimmer(0, trim_fn=fake_trim)
    idle.start()
    idle.stop()
    assert trim() in (True, False)


def test_settings_defaults_and_bounds() -> None:
    settings = ServerSettings()
    assert settings.malloc_arena_max == 2 and settings.heap_trim_interval_s == 60.0
    for bad in ({"malloc_arena_max": -1}, {"heap_trim_interval_s": -5}, {"malloc_arena_max": 65}):
        try:
            ServerSettings(**bad)  # type: ignore[arg-type]
        except ValueError:
            continue
        raise AssertionError(f"accepted {bad}")


def test_the_threshold_cache_stays_small_in_bytes() -> None:
    # A forming reference makes a new key on every drift run: thousands of them, 16 bins each.
    rng = np.random.default_rng(1)
    refs = [rng.random(16).tolist() for _ in range(3 * divergence.CACHE_SIZE)]

    def fill(part: list[list[float]], start: int) -> int:
        base = tracemalloc.get_traced_memory()[0]
        for i, reference in enumerate(part):
            divergence.null_threshold(
                "psi", reference, n=100 + start + i, n_ref=None, alpha=0.05, draws=8
            )
        return tracemalloc.get_traced_memory()[0] - base

    divergence._null_threshold.cache_clear()
    divergence.null_threshold("psi", [1.0, 2.0], n=5, n_ref=None, alpha=0.05, draws=8)  # warm
    tracemalloc.start()
    try:
        size = divergence.CACHE_SIZE - 1
        per_entry = fill(refs[:size], 0) / size
        after_full = fill(refs[size:], size)
    finally:
        tracemalloc.stop()
    assert divergence._null_threshold.cache_info().currsize == divergence.CACHE_SIZE
    # ~0.4 KB an entry (a tuple-of-floats key took ~0.8 KB at 16 bins, 4096 of them: 3.3 MB)
    assert per_entry < 550, per_entry
    assert after_full < 100_000, after_full  # full: an entry in, the oldest out


def test_the_threshold_is_the_same_for_the_same_reference() -> None:
    divergence._null_threshold.cache_clear()
    reference = [5.0, 3.0, 2.0, 0.0, 10.0]
    first = divergence.null_threshold("js", reference, n=1234, n_ref=500, alpha=0.01)
    again = divergence.null_threshold("js", [x * 3 for x in reference], n=1299, n_ref=500,
                                      alpha=0.01)  # fmt: skip
    assert first == again  # same shares, same rounded n: one entry
    assert divergence._null_threshold.cache_info().hits == 1
    assert divergence.null_threshold("psi", [0.0, 0.0], n=10, n_ref=None, alpha=0.05) == float(
        "inf"
    )
    assert _rss_mb() > 0
