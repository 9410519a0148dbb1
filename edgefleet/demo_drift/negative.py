"""The drift demo's negative cases, after the loop closed: the same pipeline, its training command
broken on purpose (the demo trainer's mode file, as a bad change to a team's training code).

1. **A worse model** (trained on shuffled labels; the command still exits 0): the server's
   compare step records that it is worse but does not block (the demo's ``compare.block`` is
   off, so that the *rollout's* gates are what is shown stopping it); the rollout's shadow stage
   runs it beside the serving model on the cameras' own inputs and aborts it: the candidate
   answers no request, the fleet stays on the version it serves, the run fails with the gate's
   reason and an alert.
2. **A crashing training command**: the run fails at ``train`` with the command's log (its
   tail) and an alert.

Each case is started by hand (``POST /pipelines/runs``, what ``edgefleet fleet pipelines
start`` sends), like an operator's "retrain now".
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgefleet.demo import MODEL_NAME
from edgefleet.demo_drift.timeline import Timeline

#: What the demo trainer reads its mode from (see ``trainer --mode-from``).
MODE_FILE = "trainer-mode"
FINISHED = ("succeeded", "failed", "cancelled")


def run_negative(
    client: Any,
    root: Path,
    tl: Timeline,
    *,
    ids: list[str],
    serving: str,
    wait: Callable[[str], None],
) -> tuple[bool, dict[str, Any]]:
    """Both cases; (both stopped as they must be, their numbers)."""
    worse_ok, worse = _worse(client, root, tl, ids=ids, serving=serving, wait=wait)
    crash_ok, crash = _crash(client, root, tl, wait=wait)
    (root / MODE_FILE).write_text("ok\n")
    return worse_ok and crash_ok, {"worse_model": worse, "crashing_trainer": crash}


def _follow(
    client: Any, tl: Timeline, run_id: int, label: str, wait: Callable[[str], None]
) -> dict[str, Any]:
    """Poll run ``run_id`` until it ends, each finished step on the timeline."""
    seen: set[str] = set()
    while True:
        run: dict[str, Any] = client.pipeline_run(run_id)
        for step in run["steps"]:
            key = f"{step['name']}:{step['attempt']}"
            if step["state"] != "running" and key not in seen:
                seen.add(key)
                tl.add(
                    f"{label}: pipeline run #{run_id} {step['name']} {step['state']}",
                    detail=step["detail"][:200],
                )
        if run["state"] in FINISHED:
            return run
        wait(f"pipeline run #{run_id} ({label}) to end")


def _worse(
    client: Any,
    root: Path,
    tl: Timeline,
    *,
    ids: list[str],
    serving: str,
    wait: Callable[[str], None],
) -> tuple[bool, dict[str, Any]]:
    label = "NEGATIVE worse model"
    (root / MODE_FILE).write_text("worse\n")
    started = time.monotonic()
    run_id = int(
        client.start_pipeline_run(
            MODEL_NAME, reason="demo: training code broken (shuffled labels)"
        )["id"]
    )
    tl.add(f"{label}: training command now trains on shuffled labels; run #{run_id} started")
    run = _follow(client, tl, run_id, label, wait)
    numbers: dict[str, Any] = {
        "run": run_id,
        "state": run["state"],
        "stopped_at": run["step"],
        "error": run["error"],
        "alert_id": run["alert_id"],
        "candidate": run["candidate_version"],
        "seconds": round(time.monotonic() - started, 1),
        "steps_s": step_seconds(run),
    }
    compare = next((s for s in run["steps"] if s["name"] == "compare"), None)
    if compare is not None:
        numbers["compare"] = {
            k: compare["numbers"].get(k) for k in ("parent_top1", "candidate_top1", "passed")
        }
    rollout_ok = False
    if run.get("rollout_id") is not None:
        rollout_ok = _shadow_abort(client, tl, int(run["rollout_id"]), numbers, label)
    served = _served_by(client, ids, str(run["candidate_version"]))
    running = {
        d["device_id"]: (d.get("running") or {}).get("version") for d in client.list_devices()
    }
    numbers["requests_served_by_candidate"] = served
    numbers["fleet_on"] = sorted({str(running.get(i)) for i in ids})
    ok = (
        run["state"] == "failed"
        and run["step"] == "watch"
        and run["alert_id"] is not None
        and rollout_ok
        and served == 0
        and numbers["fleet_on"] == [serving]
    )
    tl.add(
        f"{label}: {'stopped in shadow' if ok else 'NOT stopped as it must be'}; "
        f"the fleet stays on {serving}",
        requests_served_by_candidate=served,
        alert=run["alert_id"],
        time_to_abort_s=numbers.get("time_to_abort_s"),
    )
    return ok, numbers


def _shadow_abort(
    client: Any, tl: Timeline, rollout_id: int, numbers: dict[str, Any], label: str
) -> bool:
    """The rollout ended ``aborted`` by a shadow gate, before any device was given the
    candidate; the figures go into ``numbers``."""
    report = client.rollout_report(rollout_id)
    decisions = report.get("decisions") or []
    created = next((d for d in decisions if d["action"] == "created"), None)
    failed = next((d for d in decisions if d["action"] == "gate_failed"), None)
    aborted = next((d for d in decisions if d["action"] == "abort"), None)
    statuses = sorted({str(m.get("status")) for m in report.get("devices") or []})
    shadow = (report.get("differential") or {}).get("shadow") or {}
    numbers["rollout"] = {
        "id": rollout_id,
        "state": report["rollout"]["state"],
        "member_statuses": statuses,
        "gate_failed": failed["reason"][:300] if failed else None,
        "shadow_paired": {
            k: v.get("paired") for k, v in (shadow.get("device_classes") or {}).items()
        },
        "shadow_agreement": {
            k: v.get("agreement") for k, v in (shadow.get("device_classes") or {}).items()
        },
    }
    if created is not None and aborted is not None:
        numbers["time_to_abort_s"] = round(_seconds(created["ts"], aborted["ts"]), 1)
    if failed is not None:
        tl.add(f"{label}: shadow stage aborted the rollout", reason=failed["reason"][:200])
    return (
        report["rollout"]["state"] == "aborted"
        and failed is not None
        and failed["reason"].startswith("shadow:")
        and statuses == ["skipped"]  # no member was ever given the candidate to serve
    )


def _served_by(client: Any, ids: list[str], version: str) -> int:
    """Requests the devices served with ``version`` (their telemetry, the whole demo)."""
    total = 0
    for device_id in ids:
        for row in client.device_telemetry(device_id, limit=1000):
            if (row.get("model") or {}).get("version") == version:
                total += int(row.get("inference_count") or 0)
    return total


def _crash(
    client: Any, root: Path, tl: Timeline, *, wait: Callable[[str], None]
) -> tuple[bool, dict[str, Any]]:
    label = "NEGATIVE crashing trainer"
    (root / MODE_FILE).write_text("crash\n")
    started = time.monotonic()
    run_id = int(
        client.start_pipeline_run(MODEL_NAME, reason="demo: training command crashes")["id"]
    )
    tl.add(f"{label}: training command now crashes half-way; run #{run_id} started")
    run = _follow(client, tl, run_id, label, wait)
    train = next((s for s in run["steps"] if s["name"] == "train"), None)
    log = str((train or {}).get("log") or "")
    numbers = {
        "run": run_id,
        "state": run["state"],
        "stopped_at": run["step"],
        "error": run["error"],
        "alert_id": run["alert_id"],
        "log_bytes": len(log.encode()),
        "log_tail": log.strip().splitlines()[-1:],
        "seconds": round(time.monotonic() - started, 1),
        "steps_s": step_seconds(run),
    }
    ok = (
        run["state"] == "failed"
        and run["step"] == "train"
        and run["alert_id"] is not None
        and "Traceback" in log
        and "simulated crash" in log
    )
    tl.add(
        f"{label}: {'failed with its log and an alert' if ok else 'NOT failed as it must be'}",
        error=run["error"][:160],
        alert=run["alert_id"],
    )
    return ok, numbers


def step_seconds(run: dict[str, Any]) -> dict[str, float]:
    """How long each finished step of ``run`` took (its last attempt), by the server's clock."""
    return {
        step["name"]: round(_seconds(step["started_at"], step["finished_at"]), 1)
        for step in run.get("steps") or []
        if step.get("finished_at")
    }


def _seconds(start: str, end: str) -> float:
    from datetime import datetime

    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
