"""Issue #15 end to end: ``edgefleet demo --scenario drift --json`` with real server and agent
processes on the embedded defaults. The cameras drift (lower contrast, noise); input drift is
detected; the demo labeller (standing in for a person) labels captured samples; the server's
pipeline retrains, converts, compares, pushes and rolls the candidate out; it is promoted
fleet-wide and is more accurate than its parent on drifted digits neither model saw.

Then the negative cases, in the same fleet of real agents: a training command that produces a
worse model (shuffled labels; the compare step records it but does not block) is stopped by the
rollout's shadow stage — aborted with no request served by the candidate (checked in the
server's database too), the fleet still on the promoted version, the run failed with the gate's
reason and an alert; a crashing training command fails its run at ``train`` with its log and an
alert. (The compare gate stopping a worse model before any rollout runs in
``tests/fleet_server/test_pipeline_steps.py``.)
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.integration
@pytest.mark.slow
# Above the suite's 300 s: the scenario took 75-415 s on 2 shared cores (load 2-22), and the
# subprocess's own timeout (1500 s) is what should end a hung demo, with its logs in the message.
@pytest.mark.timeout(1600)
def test_the_drift_loop_closes_with_a_measured_improvement(tmp_path: Path) -> None:
    args = [
        sys.executable,
        "-m",
        "edgefleet",
        "demo",
        "--scenario",
        "drift",
        "--json",
        "--devices",
        "3",
        "--duration",  # per phase; the default 300 s ran out at load 20 on 2 cores
        "600",
        "--data-dir",
        str(tmp_path / "demo"),
    ]
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=1500)
    logs = "\n".join(
        f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
        for p in sorted((tmp_path / "demo" / "logs").glob("*.log"))
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:] + logs
    summary = json.loads(done.stdout)
    print(json.dumps({k: v for k, v in summary.items() if k != "timeline"}))
    assert summary["state"] == "succeeded"
    after = summary["seconds_after_drift"]
    assert 0 <= after["detected"] <= after["labelled"] <= after["candidate"] <= after["promoted"]
    accuracy = summary["accuracy_on_drifted"]
    assert accuracy["new"] > accuracy["old"] + 0.1, accuracy  # measured 0.58 → 0.80
    prefix = f"pipeline run #{summary['run']} "
    steps = [e["event"] for e in summary["timeline"] if e["event"].startswith(prefix)]
    assert [s.split()[3] for s in steps] == [
        "snapshot",
        "train",
        "convert",
        "compare",
        "push",
        "rollout",
        "watch",
    ]
    assert all(s.endswith("succeeded") for s in steps), steps
    assert list(summary["steps_s"]) == [s.split()[3] for s in steps]
    assert "standing in for a person" in done.stderr
    promoted = f"1.0.0+r{summary['run']}"

    assert summary["negative_stopped"] is True
    worse = summary["negative"]["worse_model"]
    assert (worse["state"], worse["stopped_at"]) == ("failed", "watch"), worse
    assert worse["compare"]["passed"] is False  # recorded, not blocking: the gates stopped it
    assert worse["compare"]["candidate_top1"] < worse["compare"]["parent_top1"]
    rollout = worse["rollout"]
    assert rollout["state"] == "aborted" and rollout["gate_failed"].startswith("shadow:"), worse
    assert rollout["member_statuses"] == ["skipped"] and sum(rollout["shadow_paired"].values())
    assert worse["requests_served_by_candidate"] == 0 and worse["fleet_on"] == [promoted]
    assert "aborted" in worse["error"] and f"stays on {promoted}" in worse["error"]
    crash = summary["negative"]["crashing_trainer"]
    assert (crash["state"], crash["stopped_at"]) == ("failed", "train"), crash
    assert crash["error"].startswith("train: training command exited 1: RuntimeError")
    assert 0 < crash["log_bytes"] <= 64 * 1024

    # The server's own records, read directly: the worse candidate ran in shadow only.
    db = sqlite3.connect(tmp_path / "demo" / "server" / "edgefleet.db")
    try:
        served = db.execute(
            "SELECT count(*) FROM telemetry WHERE json_extract(model, '$.version') = ?",
            (worse["candidate"],),
        ).fetchone()[0]
        shadowed = db.execute(
            "SELECT sum(paired) FROM shadow_reports WHERE model_version = ?", (worse["candidate"],)
        ).fetchone()[0]
        alerts = db.execute(
            "SELECT id FROM drift_alert WHERE detector = 'pipeline_failed' ORDER BY id"
        ).fetchall()
    finally:
        db.close()
    assert served == 0 and shadowed and shadowed > 0, (served, shadowed)
    assert [a for (a,) in alerts] == [worse["alert_id"], crash["alert_id"]]
