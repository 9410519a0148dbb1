"""Listing samples (filters, cursor paging), labels (single and bulk, all or nothing, classes
checked against the manifest), deletion and retention (content goes with its last row)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from fleet_server.models import Sample
from fleet_server.models.types import utcnow
from fleet_server.runtime import Runtime
from fleet_server.services.retention import RetentionJob
from fleet_server.storage import sample_key
from tests.fleet_server.helpers import operator
from tests.fleet_server.sample_helpers import fleet, jpeg, meta_for, post_sample

pytestmark = pytest.mark.integration


def _upload_many(client: TestClient, device: str, token: str, n: int, **meta: object) -> list[int]:
    ids = []
    for seed in range(n):
        image = jpeg(100 + seed + 1000 * len(str(meta)))
        response = post_sample(client, token, meta_for(image, device, **meta), image)  # type: ignore[arg-type]
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    return ids


def test_list_filters_and_pages(app: tuple[TestClient, Runtime], digits_bundle: Path) -> None:
    client, _ = app
    [(a, token_a), (b, token_b)] = fleet(client, digits_bundle, devices=2)
    ids_a = _upload_many(client, a, token_a, 5)
    ids_b = _upload_many(client, b, token_b, 3, reason="random")

    seen: list[int] = []
    cursor = None
    while True:
        params = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        page = client.get("/api/v1/samples", params=params, headers=operator()).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(ids_a + ids_b, reverse=True)  # newest first, each once

    def ids(**params: object) -> list[int]:
        response = client.get("/api/v1/samples", params=params, headers=operator())
        assert response.status_code == 200, response.text
        return sorted(item["id"] for item in response.json()["items"])

    assert ids(device=a) == sorted(ids_a)
    assert ids(reason="random") == sorted(ids_b)
    assert ids(model="digits", version="1.0.0") == sorted(ids_a + ids_b)
    assert ids(version="2.0.0") == []
    assert ids(labelled=True) == []
    future = (utcnow() + timedelta(hours=1)).isoformat()
    assert ids(since=future) == [] and ids(until=future) == sorted(ids_a + ids_b)
    assert client.get("/api/v1/samples?cursor=zzz", headers=operator()).status_code == 400
    assert client.get("/api/v1/samples?reason=nope", headers=operator()).status_code == 422


def test_labels_single_and_bulk(app: tuple[TestClient, Runtime], digits_bundle: Path) -> None:
    client, _ = app
    [(device, token)] = fleet(client, digits_bundle)
    first, second, third = _upload_many(client, device, token, 3)

    response = client.put(f"/api/v1/samples/{first}/label", json={"label": "3"}, headers=operator())
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["label"] == "3" and body["labelled"] is True
    assert body["labelled_by"] == "bootstrap" and body["labelled_at"]

    # Not one of the manifest's labels (digits: "0".."9"): 422 naming it, nothing changed.
    response = client.put(
        f"/api/v1/samples/{second}/label", json={"label": "cat"}, headers=operator()
    )
    assert response.status_code == 422 and "'cat'" in response.json()["detail"]
    # Boxes for detectors; their classes are checked the same way.
    boxes = {"boxes": [{"label": "7", "x1": 1, "y1": 2, "x2": 10, "y2": 12}]}
    response = client.put(f"/api/v1/samples/{second}/label", json=boxes, headers=operator())
    assert response.status_code == 200 and response.json()["boxes"][0]["x2"] == 10
    bad_box = {"boxes": [{"label": "7", "x1": 5, "y1": 2, "x2": 1, "y2": 12}]}
    assert (
        client.put(f"/api/v1/samples/{third}/label", json=bad_box, headers=operator()).status_code
        == 422
    )
    both = {"label": "1", "boxes": []}
    assert (
        client.put(f"/api/v1/samples/{third}/label", json=both, headers=operator()).status_code
        == 422
    )
    assert (
        client.put("/api/v1/samples/999999/label", json={"label": "1"}, headers=operator())
    ).status_code == 404

    # Bulk: all or nothing; unknown samples and classes are named.
    response = client.post(
        "/api/v1/samples/labels",
        json={"labels": [{"id": third, "label": "4"}, {"id": 999999, "label": "4"}]},
        headers=operator(),
    )
    assert response.status_code == 404 and "999999" in response.json()["detail"]
    response = client.post(
        "/api/v1/samples/labels",
        json={"labels": [{"id": third, "label": "4"}, {"id": first, "label": "dog"}]},
        headers=operator(),
    )
    assert response.status_code == 422 and "'dog'" in response.json()["detail"]
    shown = client.get(f"/api/v1/samples/{third}", headers=operator()).json()
    assert shown["labelled"] is False
    response = client.post(
        "/api/v1/samples/labels",
        json={"labels": [{"id": third, "label": "4"}, {"id": first, "label": "5"}]},
        headers=operator(),
    )
    assert response.status_code == 200 and response.json() == {"labelled": 2}
    labelled = client.get("/api/v1/samples?labelled=true", headers=operator()).json()["items"]
    assert {(i["id"], i["label"]) for i in labelled} == {(first, "5"), (second, None), (third, "4")}
    unlabelled = client.get("/api/v1/samples?labelled=false", headers=operator()).json()
    assert unlabelled["items"] == []


def test_delete_and_retention_remove_content_with_the_last_row(
    app: tuple[TestClient, Runtime], digits_bundle: Path
) -> None:
    client, runtime = app
    assert runtime.engine is not None and runtime.store is not None
    [(device, token)] = fleet(client, digits_bundle)
    image, other = jpeg(7), jpeg(8)
    one = post_sample(client, token, meta_for(image, device), image).json()
    two = post_sample(client, token, meta_for(image, device), image).json()
    old = post_sample(client, token, meta_for(other, device), other).json()
    key = sample_key(one["sha256"])

    assert client.delete(f"/api/v1/samples/{one['id']}", headers=operator()).status_code == 204
    assert runtime.store.exists(key)  # still referenced by the second row
    assert client.delete(f"/api/v1/samples/{two['id']}", headers=operator()).status_code == 204
    assert not runtime.store.exists(key)
    assert client.delete(f"/api/v1/samples/{two['id']}", headers=operator()).status_code == 404

    # Retention: a sample received longer ago than sample_retention_days goes, with content.
    with Session(runtime.engine) as session:
        row = session.get(Sample, old["id"])
        assert row is not None
        row.received_at = utcnow() - timedelta(days=runtime.settings.sample_retention_days + 1)
        session.add(row)
        session.commit()
    job = RetentionJob(
        engine=runtime.engine,
        raw_days=7,
        hourly_days=90,
        sample_days=runtime.settings.sample_retention_days,
        store=runtime.store,
    )
    result = job.run_once()
    assert result.samples_deleted == 1
    assert client.get(f"/api/v1/samples/{old['id']}", headers=operator()).status_code == 404
    assert not runtime.store.exists(sample_key(old["sha256"]))
