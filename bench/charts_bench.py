"""Dashboard charts on a week of telemetry from 1,000 devices (issue 17), on PostgreSQL: raw
rows against the 5-minute roll-up (fleet_server.services.rollup).

Generates the rows in a scratch database with ``generate_series`` (``--interval`` seconds per
telemetry message and device; agents default to 5 s, so 60 s is a quiet fleet and the row count
scales as 1/interval), runs the roll-up job once over the whole backlog (timed), then times
``charts.latency_series`` from raw rows and from the roll-up on the same window (buckets on
5-minute edges, as the API does), interleaved, and checks both give the same chart. A window whose
buckets are under 5 minutes (1 hour) is read raw by the API: only that time is shown.

    PYTHONPATH=. python bench/charts_bench.py [--devices 1000] [--days 7] [--interval 60]
        [--url postgresql+psycopg://postgres@127.0.0.1:5432/postgres] [--raw-max-hours 24]

Measured 2026-12-07 on the 2-core machine shared with other engineers' jobs, PostgreSQL 15,
10,080,000 rows (1,000 devices, 7 days, every 60 s, generated in 671 s), 120 buckets asked for,
medians of 3 interleaved runs, load average 25-62 (noted per line):

    roll-up of the 7-day backlog: 242.8 s in 29 transactions (load ~29); 2,306 roll-up rows
      window  points  raw SQL (s)  roll-up (s)   ratio  equal   load
         1 h                1.209        (raw)
       1 day     192       19.769        0.225      88   True  62.16
         7 d     137       80.824        0.068    1193   True  33.34

Before the roll-up (the same raw query, with the received_at index of migration 0017, load
12.7): 1 hour 0.696 s, 1 day 9.522 s, 7 days 47.755 s. The raw side above is slower only because
the machine was busier. The roll-up reads ~300 rows per version and day whatever the fleet's size.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fleet_server.db import make_engine, migrate  # noqa: E402
from fleet_server.models.types import utcnow  # noqa: E402
from fleet_server.services import charts  # noqa: E402
from fleet_server.services.rollup import BUCKET_S, RollupJob  # noqa: E402


def _median_s(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _fill(engine: sa.Engine, *, devices: int, days: float, interval: int) -> int:
    now = utcnow()
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO device (device_id, device_class, tags, online, token_hash, "
                "created_at, desired_revision) SELECT 'dev-' || i, 'rpi4', '[]', true, "
                "md5(i::text), now(), 0 FROM generate_series(1, :n) i"
            ),
            {"n": devices},
        )
        # Half the fleet moved to 2.0.0 a day ago (a rollout); everyone else runs 1.0.0.
        conn.execute(
            sa.text(
                """
                INSERT INTO telemetry (device_id, seq, ts, received_at, interval_s, model,
                    inference_count, error_count, errors, latency_ms, dropped, system,
                    confidence_histogram, class_counts)
                SELECT 'dev-' || d, s, t, t, :interval,
                    json_build_object('name', 'digits', 'version',
                        CASE WHEN d % 2 = 0 AND t > :now - interval '1 day'
                             THEN '2.0.0' ELSE '1.0.0' END),
                    50 + (d * s) % 17, (d + s) % 23 / 22, '{}',
                    json_build_object('p50', 1.0 + (d % 7) * 0.1, 'p95', 3.0 + (s % 11) * 0.2),
                    0, '{}', '[]', '{}'
                FROM generate_series(1, :devices) d,
                     generate_series(0, :steps - 1) s,
                     LATERAL (SELECT :now - (s * :interval) * interval '1 second'
                              - (d % :interval) * interval '1 second' AS t) x
                """
            ),
            {
                "devices": devices,
                "steps": int(days * 86_400 / interval),
                "interval": interval,
                "now": now,
            },
        )
        conn.execute(sa.text("ANALYZE telemetry"))
        return int(conn.execute(sa.text("SELECT count(*) FROM telemetry")).scalar_one())


def _values(chart: charts.LatencyChart) -> dict[tuple[str, datetime], tuple[Any, ...]]:
    return {
        (series.version, p.t): (p.intervals, p.inferences, p.errors, p.p95_mean, p.p95_max)
        for series in chart.series
        for p in series.points
    }


def _same(a: charts.LatencyChart, b: charts.LatencyChart) -> bool:
    """Equal buckets: counts and the worst exactly, the mean p95 to its rounding."""
    va, vb = _values(a), _values(b)
    return va.keys() == vb.keys() and all(
        va[k][:3] == vb[k][:3]
        and va[k][4] == vb[k][4]
        and (va[k][3] is None) == (vb[k][3] is None)
        and (va[k][3] is None or abs(va[k][3] - vb[k][3]) <= 1e-4)
        for k in va
    )


def _chart(
    engine: sa.Engine, span: charts.Window, source: charts.Source | None
) -> charts.LatencyChart:
    with Session(engine) as session:
        return charts.latency_series(session, model="digits", versions=[], span=span, source=source)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--interval", type=int, default=60)
    parser.add_argument("--buckets", type=int, default=120)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--raw-max-hours", type=float, default=1e9,
        help="Skip the raw side for longer windows (a week of raw rows takes a minute).",
    )  # fmt: skip
    args = parser.parse_args()

    name = f"bench_charts_{os.getpid()}"
    admin = sa.create_engine(args.url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.make_url(args.url).set(database=name).render_as_string(hide_password=False)
    engine = make_engine(url)
    try:
        migrate(engine)
        started = time.perf_counter()
        rows = _fill(engine, devices=args.devices, days=args.days, interval=args.interval)
        print(
            f"{rows:,} telemetry rows ({args.devices} devices, {args.days:g} days, "
            f"every {args.interval} s) generated in {time.perf_counter() - started:.0f} s"
        )  # noqa: T201
        load = open("/proc/loadavg").read().split()[:3]  # noqa: SIM115
        print(f"load average before the roll-up: {load}")  # noqa: T201
        started = time.perf_counter()
        result = RollupJob(engine=engine).run_once()
        print(  # noqa: T201
            f"roll-up of the backlog: {time.perf_counter() - started:.1f} s, {result.steps} "
            f"transactions, {result.rows_written:,} roll-up rows written (re-counting late_s)"
        )
        with engine.connect() as conn:
            kept = conn.execute(sa.text("SELECT count(*) FROM telemetry_rollup")).scalar_one()
        print(f"telemetry_rollup holds {kept:,} rows")  # noqa: T201
        heads = ("window", "points", "raw SQL (s)", "roll-up (s)", "ratio", "equal", "load")
        widths = (8, 7, 12, 12, 7, 6, 6)
        print(" ".join(f"{h:>{w}}" for h, w in zip(heads, widths, strict=True)))  # noqa: T201
        now = utcnow()
        for label, span_h in (("1 h", 1), ("1 day", 24), (f"{args.days:g} d", args.days * 24)):
            span = charts.window(
                since=now - timedelta(hours=span_h), until=now, buckets=args.buckets, now=now,
                raw_days=args.days + 1,
            )  # fmt: skip
            if span.width_s < BUCKET_S:  # the API reads raw rows for this: nothing to compare
                auto = _median_s(lambda span=span: _chart(engine, span, None), args.repeat)
                print(f"{label:>8} {'':>7} {auto:>12.3f} {'(raw)':>12}")  # noqa: T201
                continue
            span = span.aligned(BUCKET_S)  # what the API does: buckets on 5-minute edges

            def chart(source: charts.Source, span: charts.Window = span) -> charts.LatencyChart:
                return _chart(engine, span, source)

            rolled = chart("rollup")
            points = sum(len(s.points) for s in rolled.series)
            if span_h > args.raw_max_hours:
                rollup_s = _median_s(lambda: chart("rollup"), args.repeat)
                print(f"{label:>8} {points:>7} {'skipped':>12} {rollup_s:>12.3f}")  # noqa: T201
                continue
            equal = _same(chart("raw"), rolled)
            # Interleaved, so a change in the machine's load hits both sides alike.
            raw_t, rollup_t = [], []
            for _ in range(args.repeat):
                raw_t.append(_median_s(lambda: chart("raw"), 1))
                rollup_t.append(_median_s(lambda: chart("rollup"), 1))
            raw_s, rollup_s = statistics.median(raw_t), statistics.median(rollup_t)
            load1 = open("/proc/loadavg").read().split()[0]  # noqa: SIM115
            print(  # noqa: T201
                f"{label:>8} {points:>7} {raw_s:>12.3f} {rollup_s:>12.3f} "
                f"{raw_s / rollup_s:>7.0f} {equal!s:>6} {load1:>6}"
            )
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
