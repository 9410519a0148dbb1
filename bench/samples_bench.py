"""Sample listing on PostgreSQL with 100k samples: p50/p95 of ``GET /api/v1/samples`` per
filter (first page and a deep cursor page), over real HTTP against the real app.

A fresh database is created on the server given (dropped afterwards), migrated, and filled
with N sample rows by bulk INSERT (20 devices, 4 versions, 6 reasons, a tenth labelled); each
listing is then timed R times through the HTTP API (uvicorn, httpx) with an operator token.
The query plans are printed (``EXPLAIN``) so the index each filter uses is visible.

    PYTHONPATH=. python bench/samples_bench.py \\
        --database postgresql+psycopg://postgres@127.0.0.1:5432/test [--samples 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

REASONS = ["low_confidence", "margin", "outside_reference", "class", "random"]


def fill(engine: Any, n: int) -> None:
    from sqlalchemy import insert

    from fleet_server.models import Sample

    rng = random.Random(13)
    start = datetime(2026, 11, 1, tzinfo=UTC)
    batch: list[dict[str, Any]] = []
    with engine.begin() as conn:
        for i in range(n):
            labelled = rng.random() < 0.1
            batch.append(
                {
                    "sample_id": f"s{i:09d}",
                    "device_id": f"dev-{i % 20:02d}",
                    "model_name": "digits",
                    "model_version": f"1.{i % 4}.0",
                    "reason": REASONS[rng.randrange(len(REASONS))],
                    "captured_at": start + timedelta(seconds=i * 20),
                    "received_at": start + timedelta(seconds=i * 20 + 5),
                    "confidence": rng.random(),
                    "margin": rng.random() / 2,
                    "predicted": str(rng.randrange(10)),
                    "outputs": [rng.random() for _ in range(3)],
                    "content_type": "image/jpeg",
                    "sha256": f"{i:064x}",
                    "size": 20_000 + rng.randrange(10_000),
                    "labelled": labelled,
                    "label": str(rng.randrange(10)) if labelled else None,
                }
            )
            if len(batch) == 5000:
                conn.execute(insert(Sample), batch)
                batch = []
        if batch:
            conn.execute(insert(Sample), batch)
        conn.exec_driver_sql("ANALYZE sample")


QUERIES: dict[str, dict[str, Any]] = {
    "none": {},
    "model+version": {"model": "digits", "version": "1.2.0"},
    "device": {"device": "dev-07"},
    "reason": {"reason": "random"},
    "unlabelled": {"labelled": "false"},
    "labelled+model": {"labelled": "true", "model": "digits"},
    "device+reason": {"device": "dev-07", "reason": "margin"},
    "since+until": {"since": "2026-11-10T00:00:00Z", "until": "2026-11-11T00:00:00Z"},
}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database", required=True, help="a PostgreSQL URL (a server we may use)")
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--limit", type=int, default=100)
    args = parser.parse_args()

    import httpx

    from fleet_server.db import make_engine, migrate
    from tests.conftest import fresh_postgres_database
    from tests.utils.server import live_server

    result: dict[str, Any] = {"samples": args.samples, "limit": args.limit, "queries": {}}
    os.environ["EDGEFLEET_TEST_DATABASE_URL"] = args.database
    with fresh_postgres_database() as url, tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(url)
        migrate(engine)
        t0 = time.perf_counter()
        fill(engine, args.samples)
        result["fill_s"] = round(time.perf_counter() - t0, 1)
        with engine.connect() as conn:
            for name, params in QUERIES.items():
                where = " AND ".join(_sql(k) for k in params) or "TRUE"
                plan = conn.exec_driver_sql(
                    f"EXPLAIN SELECT * FROM sample WHERE {where} ORDER BY id DESC LIMIT 101",  # noqa: S608 - fixed text
                    {k: _value(k, v) for k, v in params.items()},
                ).all()
                result["queries"][name] = {"plan": " | ".join(r[0].strip() for r in plan[:3])}
        engine.dispose()
        with (
            live_server(Path(tmp), database_url=url) as server,
            httpx.Client(
                base_url=server.url, headers={"Authorization": f"Bearer {server.token}"}, timeout=30
            ) as http,
        ):
            for name, params in QUERIES.items():
                first = _time(http, params | {"limit": args.limit}, args.repeats)
                # A deep page: follow the cursor 20 pages in, then time that page.
                cursor = None
                for _ in range(20):
                    page = http.get(
                        "/api/v1/samples",
                        params=params
                        | {"limit": args.limit}
                        | ({"cursor": cursor} if cursor else {}),
                    ).json()
                    cursor = page["next_cursor"]
                    if cursor is None:
                        break
                deep = (
                    _time(http, params | {"limit": args.limit, "cursor": cursor}, args.repeats)
                    if cursor
                    else None
                )
                result["queries"][name].update(first_page_ms=first, page_20_ms=deep)
    print(json.dumps(result, indent=2))  # noqa: T201 - a bench prints its result
    return 0


def _sql(key: str) -> str:
    column = {"model": "model_name", "version": "model_version", "device": "device_id"}
    if key == "since":
        return "captured_at >= %(since)s"
    if key == "until":
        return "captured_at < %(until)s"
    return f"{column.get(key, key)} = %({key})s"


def _value(key: str, value: str) -> Any:
    if key == "labelled":
        return value == "true"
    return value


def _time(http: Any, params: dict[str, Any], repeats: int) -> dict[str, float]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        response = http.get("/api/v1/samples", params=params)
        times.append((time.perf_counter() - t0) * 1000)
        assert response.status_code == 200, response.text
    times.sort()
    return {
        "p50": round(statistics.median(times), 2),
        "p95": round(times[int(0.95 * (len(times) - 1))], 2),
        "rows": len(response.json()["items"]),
    }


if __name__ == "__main__":
    sys.exit(main())
