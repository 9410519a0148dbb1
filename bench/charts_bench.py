"""Dashboard charts on a week of telemetry from 1,000 devices (issue 17), on PostgreSQL.

Generates the rows in a scratch database with ``generate_series`` (``--interval`` seconds per
telemetry message and device; agents default to 5 s, so 60 s is a quiet fleet and the row count
scales as 1/interval), then times ``charts.latency_series`` — bucketing and sums in SQL, at most
``buckets`` rows per version leave the database — against fetching the same rows and bucketing
them in Python, over 1 hour, 1 day and 7 days. Medians of ``--repeat`` runs, side by side.

    PYTHONPATH=. python bench/charts_bench.py [--devices 1000] [--days 7] [--interval 60]
        [--url postgresql+psycopg://postgres@127.0.0.1:5432/postgres] [--python-max-hours 24]

Measured 2026-12-07 on the 2-core CI machine shared with other jobs, PostgreSQL 15, 10,080,000
rows (1,000 devices, 7 days, every 60 s), 120 buckets, medians of 3:

    load 12.7, with the received_at index (migration 0017):
      window  points  SQL buckets (s)  rows to Python (s)  ratio
         1 h     212            0.696               3.647    5.2
       1 day     240            9.522              67.478    7.1
         7 d     138           47.755             skipped
    load 9.5, before the index:  1 h 1.565 s vs 2.172 s (1.4×); 1 day 6.709 vs 56.395 (8.4×);
                                 7 d 46.328 vs 488.570 (10.5×)

What leaves the database is bounded (≤ 120 rows per version), but the database still reads every
row of the window: a week of a busy fleet is tens of seconds. A week needs a rollup (per version
and 5-minute bucket, kept by a job as the drift buckets are); not done yet.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa
from sqlmodel import Session

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fleet_server.db import make_engine, migrate  # noqa: E402
from fleet_server.models.types import utcnow  # noqa: E402
from fleet_server.services import charts  # noqa: E402


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


def _in_python(engine: sa.Engine, span: charts.Window) -> int:
    """The naive way: every row to the server, bucketed there."""
    buckets: dict[tuple[str, int], list[float]] = {}
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT model, received_at, inference_count, error_count, latency_ms "
                "FROM telemetry WHERE received_at >= :a AND received_at < :b"
            ),
            {"a": span.since, "b": span.until},
        )
        for model, at, _inf, _err, latency in rows:
            if model.get("name") != "digits":
                continue
            i = math.floor((at.timestamp() - span.since.timestamp()) / span.width_s)
            buckets.setdefault((model["version"], i), []).append((latency or {}).get("p95") or 0)
    return len(buckets)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--interval", type=int, default=60)
    parser.add_argument("--buckets", type=int, default=120)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--python-max-hours", type=float, default=1e9,
        help="Skip the rows-to-Python side for longer windows (it takes minutes on a week).",
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
        print(f"load average: {open('/proc/loadavg').read().split()[:3]}")  # noqa: T201, SIM115
        heads = ("window", "points", "SQL buckets (s)", "rows to Python (s)", "ratio")
        print(" ".join(f"{h:>{w}}" for h, w in zip(heads, (8, 7, 16, 19, 6), strict=True)))
        now = utcnow()
        for label, span_h in (("1 h", 1), ("1 day", 24), (f"{args.days:g} d", args.days * 24)):
            span = charts.window(
                since=now - timedelta(hours=span_h), until=now, buckets=args.buckets, now=now,
                raw_days=args.days + 1,
            )  # fmt: skip

            def in_sql(span: charts.Window = span) -> charts.LatencyChart:
                with Session(engine) as session:
                    return charts.latency_series(session, model="digits", versions=[], span=span)

            chart = in_sql()
            points = sum(len(s.points) for s in chart.series)
            sql_s = _median_s(in_sql, args.repeat)
            if span_h > args.python_max_hours:
                print(f"{label:>8} {points:>7} {sql_s:>16.3f} {'skipped':>19} {'':>6}")
                continue
            py_s = _median_s(lambda span=span: _in_python(engine, span), max(1, args.repeat // 2))
            print(f"{label:>8} {points:>7} {sql_s:>16.3f} {py_s:>19.3f} {py_s / sql_s:>6.1f}")
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
