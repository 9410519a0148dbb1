"""The audit log stays bounded under refused anonymous traffic, on SQLite and PostgreSQL: calls
no one was identified for share one row per (source, route, status, window) with a count;
every identified caller's call keeps its own row, as before."""

from __future__ import annotations

from collections import Counter

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, col, select

from fleet_server.models import AuditLog
from fleet_server.runtime import Runtime
from tests.fleet_server.helpers import bearer, operator, unique_id

pytestmark = pytest.mark.integration

FLOOD = 1000


def _rows(runtime: Runtime) -> list[AuditLog]:
    assert runtime.engine is not None
    with Session(runtime.engine) as session:
        return list(session.exec(select(AuditLog).order_by(col(AuditLog.id))))


def test_anonymous_refusals_are_aggregated(app: tuple[TestClient, Runtime]) -> None:
    client, runtime = app
    for _ in range(FLOOD):
        response = client.post("/api/v1/devices", json={"device_id": "intruder"})
        assert response.status_code == 401
    rows = _rows(runtime)
    print(f"{FLOOD} unauthenticated POSTs → {len(rows)} audit rows")  # noqa: T201
    # One row, or two if the flood straddled a window boundary; no call goes uncounted.
    assert 1 <= len(rows) <= 2, len(rows)
    assert sum(r.calls for r in rows) == FLOOD
    first = rows[0]
    assert (first.actor, first.role, first.method, first.route, first.status_code) == (
        "anonymous",
        None,
        "POST",
        "/api/v1/devices",
        401,
    )
    assert first.source == "testclient" and first.last_ts is not None
    assert first.last_ts >= first.ts


def test_identified_calls_keep_a_row_each(app: tuple[TestClient, Runtime]) -> None:
    client, runtime = app
    viewer = client.post(
        "/api/v1/tokens", json={"name": unique_id("v"), "role": "viewer"}, headers=operator()
    ).json()["token"]
    for _ in range(3):
        created = client.post(
            "/api/v1/devices", json={"device_id": unique_id()}, headers=operator()
        )
        assert created.status_code == 201
        assert client.post("/api/v1/devices", json={}, headers=operator()).status_code == 422
        refused = client.post(
            "/api/v1/devices", json={"device_id": unique_id()}, headers=bearer(viewer)
        )
        assert refused.status_code == 403
    # Unidentified, of every kind: wrong tokens (then throttled), wrong enrollment tokens,
    # unmatched paths that differ each time, bodies over the limit.
    sent: Counter[tuple[str, str | None, int]] = Counter()
    for i in range(60):
        wrong = client.post(
            "/api/v1/devices", json={"device_id": "x"}, headers=bearer(f"wrong-{i:030d}")
        )
        sent["unknown-token", "/api/v1/devices", wrong.status_code] += 1
        nowhere = client.post(f"/api/v1/nowhere-{i}")
        sent["anonymous", None, nowhere.status_code] += 1
        enroll = client.post("/api/v1/enroll", json={"enrollment_token": f"guess-{i}"})
        sent["enrollment", "/api/v1/enroll", enroll.status_code] += 1
    # Wrong bearer and enrollment tokens share the address's budget: 401s, then 429s.
    assert sent["unknown-token", "/api/v1/devices", 401] >= 10
    assert sent["unknown-token", "/api/v1/devices", 429] >= 1
    assert sent["anonymous", None, 404] == 60

    rows = _rows(runtime)
    identified = [r for r in rows if r.role is not None]
    assert [(r.actor, r.status_code, r.calls) for r in identified] == [
        ("bootstrap", 201, 1),  # the viewer token
        *[
            (actor, status, 1)
            for _ in range(3)
            for actor, status in (("bootstrap", 201), ("bootstrap", 422), (viewer_name(rows), 403))
        ],
    ]
    assert all(r.source == "testclient" for r in identified)
    unidentified = [r for r in rows if r.role is None]
    counted = Counter[tuple[str, str | None, int]]()
    for r in unidentified:
        counted[r.actor, r.route, r.status_code] += r.calls
    assert counted == sent
    assert len(unidentified) <= 2 * len(sent)  # one per key and window
    print(f"{sum(sent.values())} unidentified refusals → {len(unidentified)} rows")  # noqa: T201

    # The API shows the count and the source.
    listed = client.get("/api/v1/audit?actor=unknown-token", headers=operator()).json()
    assert {r["status_code"] for r in listed} == {401, 429}
    assert sum(r["calls"] for r in listed) == 60 and listed[0]["source"] == "testclient"


def viewer_name(rows: list[AuditLog]) -> str:
    return next(r.actor for r in rows if r.role == "viewer")
