"""POST /api/v1/samples through the real server with a device token: what is stored, what is
refused (4xx with the reason, counted on /metrics), and that a refusal loses nothing stored."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fleet_server.runtime import Runtime
from fleet_server.storage import sample_key
from tests.fleet_server.helpers import make_settings, operator, running_app, upload
from tests.fleet_server.sample_helpers import (
    assign,
    fleet,
    jpeg,
    meta_for,
    npy,
    post_sample,
    register,
    set_policy,
)

pytestmark = pytest.mark.integration


def _refused(runtime: Runtime) -> dict[str, int]:
    return dict(runtime.samples.refused)


def _count(client: TestClient) -> int:
    response = client.get("/api/v1/samples?limit=1000", headers=operator())
    assert response.status_code == 200, response.text
    return len(response.json()["items"])


def test_upload_is_stored_deduplicated_and_readable(
    app: tuple[TestClient, Runtime], digits_bundle: Path
) -> None:
    client, runtime = app
    [(device, token)] = fleet(client, digits_bundle)
    image = jpeg(1)
    meta = meta_for(image, device)
    response = post_sample(client, token, meta, image)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["sha256"] == hashlib.sha256(image).hexdigest()
    assert body["duplicate"] is False and body["content_shared"] is False

    # The same picture captured again (a new sample id) is a second row, stored once.
    again = post_sample(client, token, meta_for(image, device), image)
    assert again.status_code == 201 and again.json()["content_shared"] is True
    assert again.json()["id"] != body["id"]
    assert runtime.store is not None and runtime.store.exists(sample_key(body["sha256"]))

    # A .npy tensor is a sample too.
    array = npy(2)
    response = post_sample(
        client, token, meta_for(array, device, content_type="application/x-npy"), array
    )
    assert response.status_code == 201, response.text

    shown = client.get(f"/api/v1/samples/{body['id']}", headers=operator()).json()
    assert shown["device_id"] == device and shown["model"] == "digits"
    assert shown["reason"] == "low_confidence" and shown["outputs"] == [0.31, 0.29, 0.1]
    assert shown["labelled"] is False
    content = client.get(f"/api/v1/samples/{body['id']}/content", headers=operator())
    assert content.status_code == 200
    assert content.content == image and content.headers["content-type"] == "image/jpeg"
    assert runtime.samples.stored == 3


def test_hostile_uploads_are_refused_counted_and_lose_nothing(
    app: tuple[TestClient, Runtime], digits_bundle: Path
) -> None:
    client, runtime = app
    [(device, token), (other, other_token)] = fleet(client, digits_bundle, devices=2)
    good = jpeg(3)
    meta = meta_for(good, device, sample_id="keep-this-one")
    assert post_sample(client, token, meta, good).status_code == 201
    stored_before = _count(client)

    cases: list[tuple[str, int, dict[str, object], bytes]] = []
    # Not an image: a JPEG claimed, a PNG (or text) sent.
    png = b"\x89PNG\r\n\x1a\n" + b"\0" * 64
    cases.append(("not_an_image", 415, meta_for(png, device), png))
    # A .npy sent as a JPEG (the header says image/jpeg; the bytes say numpy).
    array = npy(4)
    cases.append(("wrong_type", 415, meta_for(array, device, content_type="image/jpeg"), array))
    # Another device's sample (with this device's token).
    cases.append(("other_device", 403, meta_for(good, other), good))
    # A model the device does not run.
    cases.append(("other_model", 403, meta_for(good, device, model=("digits", "9.9.9")), good))
    # sha256 and size that do not match the content.
    cases.append(("sha_mismatch", 409, meta_for(good, device, sha256="ab" * 32), good))
    cases.append(("size_mismatch", 409, meta_for(good, device, size=len(good) + 1), good))
    # A replayed sample id with other content.
    other_image = jpeg(5)
    cases.append(
        (
            "sample_id_reused",
            409,
            meta_for(other_image, device, sample_id="keep-this-one"),
            other_image,
        )
    )
    # Metadata that is not a SampleMeta.
    cases.append(("bad_meta", 422, meta_for(good, device, reason="because"), good))
    for reason, status, bad_meta, content in cases:
        response = post_sample(client, token, bad_meta, content)
        assert response.status_code == status, (reason, response.text)
        assert response.json()["detail"], reason
        assert _refused(runtime).get(reason, 0) >= 1, (reason, _refused(runtime))

    # Too big: refused while it streams in.
    big = b"\xff\xd8\xff" + b"\0" * (runtime.settings.max_sample_bytes + 1)
    response = post_sample(client, token, meta_for(big, device), big)
    assert response.status_code == 413, response.text
    assert _refused(runtime)["too_big"] == 1

    # A device cannot read, list or label samples; an operator token cannot upload.
    [row] = client.get("/api/v1/samples", headers=operator()).json()["items"]
    from tests.fleet_server.helpers import bearer

    for method, path, kwargs in [
        ("GET", "/api/v1/samples", {}),
        ("GET", f"/api/v1/samples/{row['id']}", {}),
        ("GET", f"/api/v1/samples/{row['id']}/content", {}),
        ("PUT", f"/api/v1/samples/{row['id']}/label", {"json": {"label": "3"}}),
        ("POST", "/api/v1/samples/labels", {"json": {"labels": [{"id": row["id"], "label": "3"}]}}),
        ("DELETE", f"/api/v1/samples/{row['id']}", {}),
    ]:
        response = client.request(method, path, headers=bearer(other_token), **kwargs)
        assert response.status_code == 401, (method, path, response.text)
    response = client.post(
        "/api/v1/samples",
        files={"meta": (None, "{}"), "file": ("x", good)},
        headers=operator(),
    )
    assert response.status_code == 403 and "device" in response.json()["detail"]

    # Nothing stored was lost or changed; the metrics name every reason.
    assert _count(client) == stored_before
    kept = client.get(f"/api/v1/samples/{row['id']}/content", headers=operator())
    assert kept.content == good and row["labelled"] is False
    metrics = client.get("/metrics").text
    for reason, _status, _meta, _content in cases:
        assert f'edgefleet_sample_uploads_refused_total{{reason="{reason}"}} 1.0' in metrics


def test_replay_is_200_and_stores_nothing_new(
    app: tuple[TestClient, Runtime], digits_bundle: Path
) -> None:
    client, runtime = app
    [(device, token)] = fleet(client, digits_bundle)
    image = jpeg(6)
    meta = meta_for(image, device)
    first = post_sample(client, token, meta, image)
    assert first.status_code == 201
    for _ in range(3):
        replay = post_sample(client, token, meta, image)
        assert replay.status_code == 200, replay.text
        assert replay.json()["duplicate"] is True and replay.json()["id"] == first.json()["id"]
    assert _count(client) == 1
    assert runtime.samples.replayed == 3


def test_daily_budget_is_the_policy_and_refuses_with_429(
    app: tuple[TestClient, Runtime], digits_bundle: Path
) -> None:
    client, runtime = app
    [(device, token)] = fleet(client, digits_bundle, max_per_day=3)
    statuses = []
    for seed in range(5):
        image = jpeg(10 + seed)
        statuses.append(post_sample(client, token, meta_for(image, device), image).status_code)
    assert statuses == [201, 201, 201, 429, 429]
    assert _refused(runtime)["over_budget"] == 2
    assert _count(client) == 3

    # The bytes budget too: the version's own policy replaces the model's.
    set_policy(client, version="1.0.0", low_confidence=0.5, max_bytes_per_day=1)
    [(device2, token2)] = [register(client)]
    assign(client, [device2])
    image = jpeg(20)
    response = post_sample(client, token2, meta_for(image, device2), image)
    assert response.status_code == 429 and "budget" in response.json()["detail"]
    assert response.headers["retry-after"]


def test_no_capture_policy_no_upload(
    tmp_path: Path, database_url: str, digits_bundle: Path
) -> None:
    with running_app(make_settings(tmp_path, database_url)) as (client, runtime):
        assert upload(client, digits_bundle).status_code == 201
        device, token = register(client)
        assign(client, [device])
        image = jpeg(30)
        response = post_sample(client, token, meta_for(image, device), image)
        assert response.status_code == 403 and "capture policy" in response.json()["detail"]
        assert _refused(runtime) == {"no_policy": 1}
