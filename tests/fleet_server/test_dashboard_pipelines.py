"""The dashboard's pipeline runs table (rendered under node): every run field a user or an
external engine could set is escaped; steps read in order with their attempts."""

from __future__ import annotations

import json
from pathlib import Path

from tests.fleet_server.test_dashboard import HOSTILE, _node


def test_pipeline_runs_render_escaped() -> None:
    step = {"name": HOSTILE, "state": "failed", "attempt": 2, "detail": HOSTILE, "numbers": {}}
    run = {
        "id": 3,
        "model_name": HOSTILE,
        "source": "webhook",
        "state": "failed",
        "parent_version": "1.0.0",
        "candidate_version": HOSTILE,
        "error": HOSTILE,
        "steps": [{"name": "snapshot", "state": "succeeded", "attempt": 1, "detail": "ok"}, step],
    }
    out = _node(
        f"const runs = {json.dumps([run])};\n"
        "console.log(JSON.stringify("
        "{runs: d.renderPipelines(runs), none: d.renderPipelines(null)}));"
    )
    html = out["runs"]
    assert "<script" not in html and "<img" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "snapshot: succeeded → &lt;script" in html and "(try 2): failed" in html
    assert out["none"] == '<p class="muted">none</p>'
    app = (Path(__file__).parents[2] / "fleet_server" / "dashboard" / "app.mjs").read_text()
    assert 'pipelines: "/api/v1/pipelines/runs?limit=20"' in app
