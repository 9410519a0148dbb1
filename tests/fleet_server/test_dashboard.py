"""``/dashboard``: static files with a strict CSP, only same-origin resources, only API paths
that exist and that a viewer may read, and render functions that escape hostile device data
(run under node when it is installed)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fleet_server.dashboard import FILES
from fleet_server.runtime import Runtime
from tests.fleet_server.helpers import bearer, operator, unique_id

DASHBOARD = Path(__file__).resolve().parents[2] / "fleet_server" / "dashboard"
APP_JS = (DASHBOARD / "app.js").read_text()
HOSTILE = "<script>alert(1)</script>\"'><img src=x onerror=alert(2)>"


def _api_paths() -> set[str]:
    """The API paths app.js calls, with ``${...}`` turned into a placeholder."""
    found = set(re.findall(r"[`\"](/api/v1/[^`\"?]*)", APP_JS))
    return {re.sub(r"\$\{[^}]*\}", "{}", p) for p in found}


def _template(path: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"\\\{[^}]*\\\}", "[^/]+", re.escape(path)) + "$")


def test_files_are_served_with_a_strict_policy(client: TestClient) -> None:
    for name, media in FILES.items():
        url = "/dashboard" if name == "index.html" else f"/dashboard/{name}"
        response = client.get(url)  # no token: the files hold no data
        assert response.status_code == 200, url
        assert response.headers["content-type"] == media
        policy = response.headers["content-security-policy"]
        assert "default-src 'none'" in policy and "script-src 'self'" in policy
        assert "unsafe-inline" not in policy and "frame-ancestors 'none'" in policy
        assert response.headers["x-content-type-options"] == "nosniff"
    assert client.get("/dashboard/../app.py").status_code == 404
    assert client.get("/dashboard/app.py").status_code == 404
    assert "/dashboard" not in client.get("/openapi.json").json()["paths"]


def test_only_same_origin_resources_and_no_inline_code() -> None:
    html = (DASHBOARD / "index.html").read_text()
    refs = re.findall(r"(?:src|href)=\"([^\"]+)\"", html)
    assert refs and all(r.startswith("/dashboard/") for r in refs), refs
    for name in FILES:
        text = (DASHBOARD / name).read_text()
        assert "http://" not in text and "https://" not in text, name  # no CDN, no beacons
    assert "<script>" not in html and " on" not in re.sub(r"<script[^>]*src=", "", html).lower()
    assert 'style="' not in APP_JS  # inline styles would need 'unsafe-inline'


def test_every_api_path_exists_and_a_viewer_may_read_it(
    app: tuple[TestClient, Runtime],
) -> None:
    client, _ = app
    paths = _api_paths()
    assert {"/api/v1/devices", "/api/v1/rollouts", "/api/v1/ingest/stats", "/api/v1/drift"} <= paths
    spec = client.get("/openapi.json").json()["paths"]
    for path in paths:
        pattern = _template(path)
        assert any(pattern.match(p) or p == path for p in spec), f"{path} not in the API"
    made = client.post(
        "/api/v1/tokens", json={"name": unique_id("dash"), "role": "viewer"}, headers=operator()
    )
    viewer = bearer(made.json()["token"])
    for path in paths - {"/api/v1/rollouts/{}/report", "/api/v1/models/{}/{}/compare"}:
        assert client.get(path, headers=viewer).status_code == 200, path
    assert client.get("/api/v1/rollouts/999999/report", headers=viewer).status_code == 404
    assert client.get("/api/v1/devices").status_code == 401


def _node(script: str) -> Any:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the render functions are not exercised")
    done = subprocess.run(
        [node, "-e", f"const d = require({json.dumps(str(DASHBOARD / 'app.js'))});\n{script}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_render_escapes_hostile_device_data(app: tuple[TestClient, Runtime]) -> None:
    client, _ = app
    device_id = unique_id("dash")
    added = client.post(
        "/api/v1/devices", json={"device_id": device_id, "tags": ["lab"]}, headers=operator()
    )
    assert added.status_code == 201, added.text
    devices = client.get("/api/v1/devices", headers=operator()).json()
    mine = next(d for d in devices if d["device_id"] == device_id)
    # What a hostile device could put in its state (error text, agent version, telemetry).
    mine.update(last_error=HOSTILE, agent_version=HOSTILE, phase=HOSTILE, online=True)
    mine["running"] = {"name": "digits", "version": HOSTILE}
    gate = {"name": HOSTILE, "status": "fail", "value": 3.0, "threshold": 1.2, "samples": 40,
            "min_samples": 20, "detail": HOSTILE}  # fmt: skip
    rollout = {"id": 7, "name": HOSTILE, "model": "digits", "version": "2.0.0", "state": "paused",
               "reason": HOSTILE, "stage": 0, "stage_name": "canary", "stages": [{}, {}],
               "counts": {"committed": 1, HOSTILE: 2},
               "last_evaluation": {"gates": [gate]}}  # fmt: skip
    report = {"rollout": rollout,
              "decisions": [{"ts": "2026-11-24T01:00:00Z", "stage": 0, "action": "gate_failed",
                             "actor": "engine", "reason": HOSTILE, "evidence": {"gates": [gate]}}],
              "differential": {"baseline": "control", "error_rate_increase": 0.0,
                               "confidence_tv_distance": 0.04,
                               "latency_by_class": {HOSTILE: {"new": {"p50": 1, "p95": 3},
                                                              "old": {"p50": 1, "p95": 1},
                                                              "p95_ratio": 3.0}}}}  # fmt: skip
    drift = {"statuses": [{"model": "digits", "version": HOSTILE, "detector": "confidence_shift",
                           "status": "drift", "value": 0.83, "threshold": 0.25, "samples": 1200,
                           "reference_samples": 7200, "detail": HOSTILE}],
             "alerts": [{"id": 1, "model": "digits", "version": "1.0.0", "detector": HOSTILE,
                         "opened_at": "2026-11-24T01:00:00Z", "closed_at": None,
                         "trigger_status": "sent", "trigger_detail": HOSTILE}]}  # fmt: skip
    compared = {"latest": {"baseline_version": HOSTILE, "candidate_version": "2.0.0",
                           "created_at": "2026-11-24T01:00:00Z",
                           "result": {"task": "classification", "samples": 200, "agreement": 0.12,
                                      "labelled": {"accuracy_delta": -0.8},
                                      "latency": {"ratio": 1.1, "host": HOSTILE,
                                                  "arch": "x86_64"}}}}  # fmt: skip
    data = json.dumps({"devices": devices, "rollouts": [rollout], "report": report, "drift": drift,
                       "compared": compared})  # fmt: skip
    out = _node(
        f"const x = {data};\n"
        "console.log(JSON.stringify({"
        "devices: d.renderDevices(x.devices, ''),"
        "filtered: d.renderDevices(x.devices, 'no-such-device'),"
        "versions: d.renderVersions(x.devices),"
        "summary: d.renderSummary(x.devices, x.rollouts, {stored: 5}),"
        "rollouts: d.renderRollouts(x.rollouts),"
        "report: d.renderReport(x.report),"
        "drift: d.renderDrift(x.drift), noDrift: d.renderDrift(null),"
        "compared: d.renderComparison(x.compared), notCompared: d.renderComparison(null)}));"
    )
    for name, html in out.items():
        assert (
            "<script" not in html
            and "<img" not in html
            and "onerror=alert" not in html.replace("onerror=alert(2)&gt;", "")
        ), name
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in out["devices"]
    assert device_id in out["devices"] and "online" in out["devices"]
    assert device_id not in out["filtered"]
    assert "digits@&lt;script&gt;" in out["versions"]
    assert "gate bad" in out["rollouts"] and "3.00" in out["rollouts"]
    assert "gate_failed" in out["report"] and "3.00" in out["report"]
    assert 'class="bad">drift' in out["drift"] and "0.830" in out["drift"]
    assert 'class="bad">open' in out["drift"] and "none" in out["noDrift"]
    assert "12.0 %" in out["compared"] and "-80.0 pt" in out["compared"]
    assert "no comparison stored" in out["notCompared"]
