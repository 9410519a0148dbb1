"""``/dashboard``: static files with a strict CSP, only same-origin resources, only API paths
that exist (the ones a page reads, a viewer may read), and render functions and charts that
escape hostile device data and hide actions from a viewer (run under node when it is installed)."""

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
MODULES = sorted(DASHBOARD.glob("*.mjs"))
APP_JS = "\n".join(m.read_text() for m in MODULES)
HOSTILE = "<script>alert(1)</script>\"'><img src=x onerror=alert(2)>"


def _api_paths() -> set[str]:
    """The API paths the modules call, with ``${...}`` turned into a placeholder."""
    found = set(re.findall(r"[`\"](/api/v1/[^`\"?]*)", APP_JS))
    return {re.sub(r"\$\{[^}]*\}", "{}", p) for p in found}


def _template(path: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"\\\{[^}]*\\\}", "[^/]+", re.escape(path)) + "$")


def test_files_are_served_with_a_strict_policy(client: TestClient) -> None:
    assert {m.name for m in MODULES} | {"index.html", "app.css"} == set(FILES)
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
    assert client.get("/dashboard/__init__.py").status_code == 404
    assert "/dashboard" not in client.get("/openapi.json").json()["paths"]


def test_only_same_origin_resources_and_no_inline_code() -> None:
    html = (DASHBOARD / "index.html").read_text()
    refs = re.findall(r"(?:src|href)=\"([^\"]+)\"", html)
    assert refs and all(r.startswith(("/dashboard/", "#/")) for r in refs), refs
    for name in FILES:
        text = (DASHBOARD / name).read_text()
        assert "http://" not in text and "https://" not in text, name  # no CDN, no beacons
    assert "<script>" not in html and " on" not in re.sub(r"<script[^>]*src=", "", html).lower()
    assert 'style="' not in APP_JS and "style=" not in html  # would need 'unsafe-inline'
    assert ".style." not in APP_JS and "eval(" not in APP_JS and "new Function" not in APP_JS
    imports = re.findall(r"from \"([^\"]+)\"", APP_JS)
    assert imports and all(re.fullmatch(r"\./\w+\.mjs", i) for i in imports), imports


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
    for path in {p for p in paths if "{}" not in p and p in spec and "get" in spec[p]}:
        params = {"model": "m"} if path.endswith("/latency") else None
        assert client.get(path, headers=viewer, params=params).status_code == 200, path
    assert client.get("/api/v1/whoami", headers=viewer).json()["role"] == "viewer"
    assert client.get("/api/v1/rollouts/999999/report", headers=viewer).status_code == 404
    assert client.get("/api/v1/devices/nobody/events", headers=viewer).status_code == 404
    assert client.get("/api/v1/devices").status_code == 401


def _node(script: str) -> Any:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the render functions are not exercised")
    views, charts = (DASHBOARD / "views.mjs").as_uri(), (DASHBOARD / "charts.mjs").as_uri()
    done = subprocess.run(
        [node, "--input-type=module", "-e",
         f"const d = await import({json.dumps(views)});\n"
         f"const c = await import({json.dumps(charts)});\n{script}"],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
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
    mine["desired"] = {"name": "digits", "version": "2.0.0"}
    gate = {"name": HOSTILE, "status": "fail", "value": 3.0, "threshold": 1.2, "samples": 40,
            "min_samples": 20, "detail": HOSTILE}  # fmt: skip
    rollout = {"id": 7, "name": HOSTILE, "model": "digits", "version": "2.0.0", "state": "paused",
               "reason": HOSTILE, "stage": 0, "stage_name": "canary",
               "stages": [{"index": 0, "name": "canary", "devices": 1},
                          {"index": 1, "name": HOSTILE, "devices": 2}],
               "counts": {"committed": 1, HOSTILE: 2}, "from_versions": {"digits@1.0.0": 2},
               "created_at": "2026-11-24T01:00:00Z", "created_by": HOSTILE,
               "strategy": {"require_approval": True}, "actions": ["resume", "abort"],
               "last_evaluation": {"gates": [gate]}}  # fmt: skip
    report = {"rollout": rollout,
              "devices": [{"device_id": HOSTILE, "status": "committed", "stage": 0}],
              "decisions": [{"ts": "2026-11-24T01:00:00Z", "stage": 0, "action": "gate_failed",
                             "actor": "engine", "reason": HOSTILE, "evidence": {"gates": [gate]}}],
              "differential": {"baseline": HOSTILE, "error_rate_increase": 0.0,
                               "confidence_tv_distance": 0.04,
                               "new": {"confidence_histogram": [1, 2, 7]},
                               "old": {"confidence_histogram": [3, 3, 4]},
                               "latency_by_class": {HOSTILE: {"new": {"p50": 1, "p95": 3},
                                                              "old": {"p50": 1, "p95": 1},
                                                              "p95_ratio": 3.0}}}}  # fmt: skip
    chart = {"model": "digits", "series": [{"version": HOSTILE, "points": [
        {"t": "2026-11-24T01:00:00Z", "p95_mean": 2.5, "error_rate": 0.1},
        {"t": "2026-11-24T01:05:00Z", "p95_mean": None, "error_rate": None}]}]}  # fmt: skip
    drift = {"statuses": [{"model": "digits", "version": HOSTILE, "detector": "confidence_shift",
                           "status": "drift", "value": 0.83, "threshold": 0.25, "samples": 1200,
                           "reference_samples": 7200, "detail": HOSTILE},
                          {"model": "digits", "version": "1.0.0", "detector": "psi",
                           "status": "insufficient", "value": None, "threshold": 0.2,
                           "samples": 3, "reference_samples": 0, "detail": "wait"}],
             "alerts": [{"id": 1, "model": "digits", "version": "1.0.0", "detector": HOSTILE,
                         "opened_at": "2026-11-24T01:00:00Z", "closed_at": None,
                         "trigger_status": "sent", "trigger_detail": HOSTILE}]}  # fmt: skip
    models = [{"name": "digits", "version": "3.0.0", "created_at": "2026-11-24T01:00:00Z"}]
    model = {"name": "digits", "version": HOSTILE, "sha256": HOSTILE, "training_ref": HOSTILE}
    samples = {"items": [{"id": 5, "device_id": HOSTILE, "version": HOSTILE, "reason": "random",
                          "predicted": HOSTILE, "label": HOSTILE,
                          "captured_at": "2026-11-24T01:00:00Z"}]}  # fmt: skip
    events = [{"ts": "2026-11-24T01:00:00Z", "event": HOSTILE, "progress": None,
               "model": {"name": "digits", "version": "1.0.0"}, "detail": HOSTILE},
              {"ts": "2026-11-23T01:00:00Z", "event": "committed",
               "model": {"name": "digits", "version": "0.9.0"}, "detail": ""}]  # fmt: skip
    telemetry = [{"received_at": "2026-11-24T01:00:00Z", "error_count": 1,
                  "latency_ms": {"p95": 4.5}}]  # fmt: skip
    compared = {"latest": {"baseline_version": HOSTILE, "candidate_version": "2.0.0",
                           "created_at": "2026-11-24T01:00:00Z",
                           "result": {"task": "classification", "samples": 200, "agreement": 0.12,
                                      "labelled": {"accuracy_delta": -0.8},
                                      "latency": {"ratio": 1.1, "host": HOSTILE,
                                                  "arch": "x86_64"}}}}  # fmt: skip
    data = json.dumps({"devices": devices, "rollouts": [rollout], "report": report,
                       "drift": drift, "chart": chart, "compared": compared,
                       "models": models, "model": model,
                       "samples": samples, "events": events, "telemetry": telemetry,
                       "enrollment": [{"id": 3, "state": "active", "uses": 2, "uses_left": 1,
                                       "tags": [HOSTILE], "device_class": HOSTILE}]})  # fmt: skip
    out = _node(
        f"const x = {data};\n"
        "const op = {role: 'operator'}, viewer = {role: 'viewer'};\n"
        "const fleet = (ctx) => d.renderFleet({devices: x.devices, rollouts: x.rollouts,"
        " models: x.models, ingest: {stored: 5}, drift: x.drift, enrollment: x.enrollment}, ctx);\n"
        "const dev = (ctx) => d.renderDevice({device: x.devices.find((v) => v.last_error),"
        " telemetry: x.telemetry, events: x.events}, ctx);\n"
        "const mod = (ctx) => d.renderModel({model: x.model, versions: x.models, chart: x.chart,"
        " samples: x.samples, lineage: {chain: [x.model]}, quality: null, capture: null}, ctx);\n"
        "const ro = (ctx) => d.renderRollout("
        "{report: x.report, chart: x.chart, compared: x.compared}, ctx);\n"
        "console.log(JSON.stringify({"
        "devices: d.renderDevices(x.devices, ''),"
        "filtered: d.renderDevices(x.devices, 'no-such-device'),"
        "...fleet(op), enrollmentViewer: fleet(viewer).enrollment,"
        "device: dev(op), deviceViewer: dev(viewer), model: mod(op), modelViewer: mod(viewer),"
        "rollout: ro(op), rolloutViewer: ro(viewer), noDrift: d.renderDrift(null),"
        "notCompared: d.renderComparison(null),"
        "line: c.lineChart({title: x.model.version, series: d.latencySeries(x.chart, 'p95_mean')}),"
        "}));"
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
    # Registered, running and desired versions all listed; desired shown next to running.
    assert "digits@&lt;script&gt;" in out["versions"] and "digits@3.0.0" in out["versions"]
    assert "digits@2.0.0" in out["versions"] and "digits@2.0.0" in out["devices"]
    assert "gate bad" in out["rollouts"] and "3.00" in out["rollouts"]
    assert "digits 1.0.0 → 2.0.0" in out["rollouts"]  # the from-version, not the name again
    assert "<time datetime=" in out["rollouts"]
    assert 'class="bad">drift' in out["drift"] and "0.830" in out["drift"]
    assert "<td>psi</td>" not in out["drift"] and "1 detector(s) still collecting" in out["drift"]
    assert 'class="bad">open' in out["drift"] and "none" in out["noDrift"]
    assert "gate_failed" in out["rollout"] and 'data-gate="&lt;script&gt;' in out["rollout"]
    assert "-80.0 pt" in out["rollout"] and "no comparison stored" in out["notCompared"]
    assert 'data-value="3"' in out["rollout"] and 'data-threshold="1.2"' in out["rollout"]
    assert 'class="bar s0"' in out["rollout"]
    assert 'data-points="2026-11-24T01:00:00Z:2.5,' in out["line"]
    assert "previous</th><td>digits@0.9.0" in out["device"]
    # Actions for an operator, none at all for a viewer; abort is marked destructive.
    for verb in ('data-verb="resume"', 'data-verb="abort"'):
        assert verb in out["rollout"] and verb not in out["rolloutViewer"]
    # paused: only resume and abort (approve is for awaiting_approval)
    assert 'data-verb="pause"' not in out["rollout"] and 'data-verb="approve"' not in out["rollout"]
    assert 'class="act danger" data-action="rollout"' in out["rollout"]
    assert 'data-form="pin"' in out["device"] and 'data-form="tags"' in out["device"]
    assert 'data-form="rollout"' in out["model"] and 'data-form="label"' in out["model"]
    assert 'data-form="capture"' in out["model"] and "enroll-revoke" in out["enrollment"]
    for name in ("rolloutViewer", "deviceViewer", "modelViewer", "enrollmentViewer"):
        assert "<button" not in out[name] and "<form" not in out[name], name
