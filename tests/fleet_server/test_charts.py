"""/api/v1/charts/latency: bucketed in the database (SQLite and PostgreSQL), equal to the same
sums done in Python, bounded in size, and bad windows refused with one clear error."""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlmodel import Session

from fleet_server.models import TelemetryRow
from fleet_server.models.types import utcnow
from fleet_server.runtime import Runtime
from tests.fleet_server.helpers import bearer, operator, unique_id


def _rows(device_ids: list[str], model: str) -> list[TelemetryRow]:
    rng = random.Random(17)
    now = utcnow()
    rows = []
    for seq in range(120):
        for device in device_ids:
            version = "1.0.0" if seq < 80 or device == device_ids[0] else "2.0.0"
            at = now - timedelta(minutes=119 - seq, seconds=rng.uniform(0, 50))
            p95 = None if seq % 17 == 0 else round(rng.uniform(2, 9), 3)
            rows.append(
                TelemetryRow(
                    device_id=device, seq=seq, ts=at, received_at=at, interval_s=60.0,
                    model={"name": model, "version": version},
                    inference_count=rng.randint(0, 50), error_count=rng.randint(0, 2),
                    latency_ms=None if p95 is None else {"p50": 1.0, "p95": p95},
                )
            )  # fmt: skip
    other = TelemetryRow(
        device_id=device_ids[0], seq=999, ts=now, received_at=now, interval_s=60.0,
        model={"name": "other", "version": "1.0.0"}, inference_count=5, error_count=5,
    )  # fmt: skip
    return [*rows, other]


def _expected(rows: list[TelemetryRow], chart: dict[str, Any], model: str) -> dict[str, Any]:
    start, until = _ts(chart["since"]), _ts(chart["until"])
    out: dict[tuple[str, int], dict[str, Any]] = {}
    for r in rows:
        t = r.received_at.timestamp()
        if r.model is None or r.model["name"] != model or not start <= t < until:
            continue
        key = (r.model["version"], math.floor((t - start) / chart["bucket_s"]))
        b = out.setdefault(key, {"intervals": 0, "inferences": 0, "errors": 0, "p95": []})
        b["intervals"] += 1
        b["inferences"] += r.inference_count
        b["errors"] += r.error_count
        if r.latency_ms and r.latency_ms.get("p95") is not None:
            b["p95"].append(r.latency_ms["p95"])
    return {
        f"{v}/{i}": (
            b["intervals"], b["inferences"], b["errors"],
            sum(b["p95"]) / len(b["p95"]) if b["p95"] else None,
            max(b["p95"]) if b["p95"] else None,
        )
        for (v, i), b in out.items()
    }  # fmt: skip


def test_latency_buckets_equal_the_same_sums_in_python(app: tuple[TestClient, Runtime]) -> None:
    client, runtime = app
    model = unique_id("chart")
    devices = [unique_id("chart-dev") for _ in range(3)]
    for device in devices:
        assert client.post("/api/v1/devices", json={"device_id": device}, headers=operator())
    rows = _rows(devices, model)
    stored = [TelemetryRow(**r.model_dump()) for r in rows]  # the session expires what it adds
    assert runtime.engine is not None
    with Session(runtime.engine) as session:
        session.add_all(stored)
        session.commit()
    viewer = bearer(
        client.post(
            "/api/v1/tokens", json={"name": unique_id("v"), "role": "viewer"}, headers=operator()
        ).json()["token"]
    )
    end = utcnow() + timedelta(minutes=1)
    since, until = (end - timedelta(hours=3)).isoformat(), end.isoformat()
    got = client.get(
        "/api/v1/charts/latency",
        params={"model": model, "since": since, "until": until, "buckets": 30}, headers=viewer,
    )  # fmt: skip
    assert got.status_code == 200, got.text
    chart = got.json()
    assert [s["version"] for s in chart["series"]] == ["1.0.0", "2.0.0"]
    assert chart["bucket_s"] == 360 and chart["versions_left_out"] == 0
    seen = {}
    for series in chart["series"]:
        assert len(series["points"]) <= 30
        times = [p["t"] for p in series["points"]]
        assert times == sorted(times)
        for p in series["points"]:
            index = round((_ts(p["t"]) - _ts(chart["since"])) / chart["bucket_s"])
            seen[f"{series['version']}/{index}"] = (
                p["intervals"],
                p["inferences"],
                p["errors"],
                p["p95_mean"],
                p["p95_max"],
            )
            rate = p["errors"] / p["inferences"] if p["inferences"] else None
            assert p["error_rate"] == (None if rate is None else round(rate, 4))
    expected = _expected(rows, chart, model)
    assert seen.keys() == expected.keys()
    for key, (*sums, mean, worst) in expected.items():
        assert list(seen[key][:3]) == sums and seen[key][4] == worst, key
        assert (seen[key][3] is None) == (mean is None), key
        assert mean is None or abs(seen[key][3] - mean) < 1e-3, key  # rounded to 4 places
    # One version asked for: only it.
    only = client.get(
        "/api/v1/charts/latency", params={"model": model, "version": "2.0.0", "since": since},
        headers=viewer,
    ).json()  # fmt: skip
    assert [s["version"] for s in only["series"]] == ["2.0.0"]


def _ts(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def test_bad_windows_get_one_clear_error(client: TestClient) -> None:
    now = utcnow()
    bad = [
        ({"model": "m", "since": now.isoformat(), "until": (now - timedelta(1)).isoformat()},
         "since must be before until"),
        ({"model": "m", "since": (now - timedelta(days=40)).isoformat(),
          "until": now.isoformat()}, "at most 31 days"),
        ({"model": "m", "since": (now - timedelta(days=20)).isoformat(),
          "until": (now - timedelta(days=10)).isoformat()}, "kept 7 days"),
        ({"model": "m", "buckets": 501}, "less than or equal to 500"),
        ({"model": "m", "buckets": 0}, "greater than or equal to 1"),
        ({"model": "../x"}, "String should match pattern"),
        ({"model": "m" * 64}, "String should match pattern"),
        ({"model": "m", "since": "yesterday"}, "valid datetime"),
        ({"model": "m", "version": ["v"] * 9}, "at most 8"),
        ({"model": "m", "version": "v" * 64}, "1 to 63 characters"),
        ({}, "Field required"),
        ({"model": "m", "until": "0001-01-01T00:00:00Z"}, "until: out of range"),
    ]  # fmt: skip
    for params, says in bad:
        got = client.get("/api/v1/charts/latency", params=params, headers=operator())
        assert got.status_code == 422, (params, got.text)
        assert says in got.text, (params, got.text)
    assert client.get("/api/v1/charts/latency", params={"model": "m"}).status_code == 401
    empty = client.get("/api/v1/charts/latency", params={"model": "m"}, headers=operator())
    assert empty.status_code == 200 and empty.json()["series"] == []
