"""What a long run measures about a process, and the trend of it: one owner for both.

Standard library only, so the SSH runner copies this very file to a board and runs it there
(``python3 probe.py --pid N --out FILE --every S``: one JSON line per sample) while
``bench/soak.py`` imports it on the host. A sample reads ``/proc/<pid>`` (RSS from
``status``, open descriptors from ``fd/``, threads from ``task/``; the sum over the process
and its children with ``--tree``) and the board's temperatures from ``/sys/class/thermal``.

:func:`trend` fits a least-squares line through the samples after a warm-up and reports the
slope per hour: the soak's target is flat (RSS < 1 MB/h, no descriptor or thread growth).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

PROC = Path("/proc")
THERMAL = Path("/sys/class/thermal")
#: Per-hour slopes the soak calls flat (docs/hil.md).
FLAT_RSS_MB_PER_H = 1.0


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (``/proc/<pid>/task/*/children``, Linux >= 3.5)."""
    out: list[int] = []
    try:
        tasks = list((PROC / str(pid) / "task").iterdir())
    except OSError:
        return out
    for task in tasks:
        try:
            out += [int(p) for p in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return out


def process_tree(pid: int) -> list[int]:
    """``pid`` and every descendant still alive."""
    seen: list[int] = []
    todo = [pid]
    while todo:
        current = todo.pop()
        if current in seen or not (PROC / str(current)).exists():
            continue
        seen.append(current)
        todo += _children(current)
    return seen


def process_sample(pid: int) -> dict[str, float] | None:
    """RSS (MB), open descriptors and threads of one process; None once it is gone or
    exiting."""
    base = PROC / str(pid)
    try:
        status = (base / "status").read_text()
        fds = len(os.listdir(base / "fd"))
        threads = len(os.listdir(base / "task"))
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return {"rss_mb": int(line.split()[1]) / 1024, "fds": fds, "threads": threads}
    return None  # exiting (a zombie has no memory left to count): not a sample


def temperatures() -> dict[str, float]:
    """Every thermal zone's temperature in °C by its type (empty where there is none, e.g. an
    emulated board or a container)."""
    out: dict[str, float] = {}
    try:
        zones = sorted(THERMAL.glob("thermal_zone*"))
    except OSError:
        return out
    for zone in zones:
        try:
            milli = int((zone / "temp").read_text().strip())
            kind = (zone / "type").read_text().strip() or zone.name
        except (OSError, ValueError):
            continue
        out[f"{kind}:{zone.name}"] = milli / 1000
    return out


def sample(pid: int, *, tree: bool = False, t0: float | None = None) -> dict[str, Any] | None:
    """One sample of ``pid`` (summed over its descendants with ``tree``); None once gone."""
    pids = process_tree(pid) if tree else [pid]
    parts = [s for s in (process_sample(p) for p in pids) if s is not None]
    if not parts:
        return None
    now = time.time()
    row: dict[str, Any] = {
        "t": round(now - (t0 or 0.0), 3),
        "pid": pid,
        "processes": len(parts),
        "rss_mb": round(sum(p["rss_mb"] for p in parts), 3),
        "fds": int(sum(p["fds"] for p in parts)),
        "threads": int(sum(p["threads"] for p in parts)),
    }
    temps = temperatures()
    if temps:
        row["temp_c"] = temps
    return row


def slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """The least-squares slope of ``ys`` over ``xs`` (0.0 with fewer than two distinct xs)."""
    if len(xs) != len(ys):
        raise ValueError(f"{len(xs)} x values but {len(ys)} y values")
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx


def trend(
    rows: Iterable[dict[str, Any]], *, warmup_s: float, keys: Sequence[str] = ("rss_mb", "fds")
) -> dict[str, Any]:
    """Per key: first, last, min, max after the warm-up and the slope per hour (least squares
    over the samples whose ``t`` is at least ``warmup_s``)."""
    kept = [r for r in rows if float(r["t"]) >= warmup_s]
    out: dict[str, Any] = {"samples": len(kept), "warmup_s": warmup_s}
    if not kept:
        return out
    xs = [float(r["t"]) / 3600 for r in kept]
    for key in keys:
        ys = [float(r[key]) for r in kept if key in r]
        if len(ys) != len(xs):
            continue
        out[key] = {
            "first": ys[0],
            "last": ys[-1],
            "min": min(ys),
            "max": max(ys),
            "slope_per_h": round(slope(xs, ys), 4),
        }
    out["span_s"] = round((xs[-1] - xs[0]) * 3600, 1)
    return out


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of a probe file (a torn last line — the probe was killed — is dropped)."""
    return read_rows_text(path.read_text(errors="replace"))


def read_rows_text(text: str) -> list[dict[str, Any]]:
    rows = []
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and "t" in row:
            rows.append(row)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="probe.py", description=__doc__)
    parser.add_argument("--pid", type=int, required=True, help="the process to sample")
    parser.add_argument("--out", type=Path, required=True, help="JSON lines file (appended)")
    parser.add_argument("--every", type=float, default=2.0, help="seconds between samples")
    parser.add_argument("--tree", action="store_true", help="sum over the process's children")
    parser.add_argument(
        "--child",
        action="store_true",
        help="sample the one child of --pid (the command a `timeout` wrapper runs)",
    )
    args = parser.parse_args(argv)
    if not 0.05 <= args.every <= 3600:
        print("probe.py: --every must be between 0.05 and 3600 s", file=sys.stderr)
        return 2
    stop: list[int] = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    pid = args.pid
    if args.child:
        deadline = time.monotonic() + 30
        while not (kids := _children(pid)) and time.monotonic() < deadline:
            time.sleep(0.2)
        if len(kids) != 1:
            print(f"probe.py: pid {pid} has {len(kids)} children, not one", file=sys.stderr)
            return 1
        pid = kids[0]
    t0 = time.time()
    with args.out.open("a") as out:
        while not stop:
            row = sample(pid, tree=args.tree, t0=t0)
            if row is None:
                return 0  # the process ended: so does its probe
            out.write(json.dumps(row) + "\n")
            out.flush()
            time.sleep(args.every)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
