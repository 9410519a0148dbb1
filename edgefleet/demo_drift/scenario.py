"""``edgefleet demo --scenario drift``: the retraining loop closed, end to end, on one machine.

A fleet server (subprocess, SQLite, embedded broker) and real agent processes serve a digits
classifier (1.0.0). Part way through, every camera drifts (lower contrast and noise,
:mod:`.drift`); the input drift detectors see it; the agents capture samples; a **demo
labeller — standing in for a person —** answers the drift alert by labelling them from the
dataset's true labels; the server's retraining pipeline snapshots them, runs the demo trainer
(:mod:`.trainer`) on them plus the base digits, converts, compares with 1.0.0 on held-out drifted
samples, pushes with lineage and rolls the candidate out (shadow, canary, then everyone); the
candidate is promoted. Then the negative
cases (:mod:`.negative`): a training command broken to produce a worse model is stopped by the
rollout's shadow stage (the fleet stays on the promoted version), and one that crashes fails its
run with its log and an alert. Printed: a timeline of each step with its numbers, and old vs new
accuracy on drifted digits the models never saw. Exits 0 only if the loop closed with a measured
improvement and both negative cases were stopped.

This module runs the fleet and follows the loop; the frames and models are :mod:`.digits`, the
labeller :mod:`.labeller`, the printed steps :mod:`.timeline`.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from edgefleet.demo import (
    MODEL_NAME,
    OLD_VERSION,
    DemoError,
    _agent_config,
    _free_port,
    _Processes,
    _wait_http,
)
from edgefleet.demo_drift.digits import EVAL_FROM, IMAGES, accuracy, camera_frames, parent_model
from edgefleet.demo_drift.labeller import label_new
from edgefleet.demo_drift.negative import MODE_FILE, run_negative, step_seconds
from edgefleet.demo_drift.timeline import Timeline

MIN_LABELLED = 80
DRIFT: dict[str, Any] = {
    "interval_s": 0.5,
    "bucket_s": 1,
    "window_s": 3600,
    "reference_s": 3600,
    "settle_s": 0,
    "input_psi": {"min_samples": 40},
    "input_js": {"min_samples": 40},
    "input_class_shift": {"min_samples": 40},
}
POLICY: dict[str, Any] = {
    "random": 0.3,
    "low_confidence": 0.9,
    "max_per_hour": 500,
    "max_per_day": 2000,
    "max_bytes_per_day": 2_000_000,
}


def run_drift(*, devices: int, duration_s: float, as_json: bool, data_dir: str | None) -> int:
    import shutil

    root = Path(data_dir or tempfile.mkdtemp(prefix="edgefleet-drift-"))
    root.mkdir(parents=True, exist_ok=True)
    (root / "logs").mkdir(exist_ok=True)
    procs = _Processes(root / "logs")
    timeline = Timeline(out=sys.stderr if as_json else sys.stdout)
    try:
        ok, summary = _scenario(root, procs, timeline, devices=devices, duration_s=duration_s)
    except DemoError as err:
        print(f"edgefleet demo: {err}", file=sys.stderr)
        ok, summary = False, {"error": str(err)}
    finally:
        procs.close()
        if data_dir is None:
            shutil.rmtree(root, ignore_errors=True)
    summary["took_s"] = round(time.monotonic() - timeline.started, 1)
    summary["timeline"] = timeline.events
    if as_json:
        print(json.dumps(summary, indent=2))
    else:
        print(
            f"[demo] {'loop closed, negative cases stopped' if ok else 'FAILED'}: "
            f"{json.dumps({k: v for k, v in summary.items() if k != 'timeline'})}"
        )
    return 0 if ok else 1


def _scenario(
    root: Path, procs: _Processes, tl: Timeline, *, devices: int, duration_s: float
) -> tuple[bool, dict[str, Any]]:
    import numpy as np

    from edgefleet.signing import generate_keypair
    from fleet_server.client.api import FleetClient, FleetUnreachableError

    keys = root / "keys"
    keys.mkdir(exist_ok=True)
    generate_keypair(keys / "signing.pem", keys / "signing.pub.pem")
    parent = parent_model(root, (keys / "signing.pem").read_bytes())
    tl.add("trained and converted digits 1.0.0 on clean digits")
    trainer = [
        sys.executable,
        "-m",
        "edgefleet.demo_drift.trainer",
        "--snapshot",
        "{snapshot}",
        "--output",
        "{output}",
        "--mode-from",
        str(root / MODE_FILE),
    ]
    pipeline = {
        "train_argv": trainer,
        "output_name": "model.pkl",
        "base_dataset": str(root / "base.npz"),
        "sign_key": str(keys / "signing.pem"),
        "min_samples": MIN_LABELLED,
        "holdout_fraction": 0.3,
        "label_wait_s": 600,
        "convert_args": ["--quantize", "none"],
        # Recorded, not blocking: the negative case shows the rollout's gates stopping a worse
        # model on the fleet's own inputs (a blocking compare would stop it before any rollout).
        "compare": {"min_gain": 0.02, "min_samples": 10, "block": False},
        "rollout": {
            "selector": {"tags": ["demo"]},
            "strategy": {"canary_percent": 34, "batches": [100], "soak_s": 4},
            "gates": {"confidence_shift": {"enabled": False}, "label_accuracy": {"enabled": False}},
            # Shadow first: every demo device runs the candidate beside the old model on the
            # same drifted inputs. A retrained model is *meant* to disagree with the old one where
            # the old one is wrong, so agreement is only asked to be above chance here.
            "shadow": {
                "shadow_s": 4,
                "sample_rate": 1.0,
                "cpu_budget": 0.5,
                "min_agreement": 0.25,
                "max_latency_ratio": 10.0,
                "max_error_rate": 0.01,
                "min_samples": 20,
            },
        },
    }
    port, broker = _free_port(), _free_port()
    server, token = f"http://127.0.0.1:{port}", secrets.token_urlsafe(24)
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "EDGEFLEET_OPERATOR_TOKEN": token,
        "EDGEFLEET_TRUSTED_KEYS": str(keys / "signing.pub.pem"),
        "EDGEFLEET_DRIFT": json.dumps(DRIFT),
        "EDGEFLEET_ROLLOUT_TICK_S": "0.5",
        "EDGEFLEET_RETRAIN": json.dumps(
            {"type": "pipeline", "interval_s": 0.5, "models": {MODEL_NAME: pipeline}}
        ),
    }
    procs.start(
        "server",
        [
            sys.executable,
            "-m",
            "edgefleet",
            "server",
            "--data-dir",
            str(root / "server"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--broker-port",
            str(broker),
        ],
        env,
    )
    _wait_http(f"{server}/healthz", 90, procs)
    client = FleetClient(server, token, timeout=30.0)
    from edgefleet.artifact import pack_bundle

    client.push_model(pack_bundle(parent, root / "digits-1.0.0.tar.gz"))
    client.set_capture(MODEL_NAME, None, POLICY)
    folder = root / "camera"
    sources = camera_frames(folder, 0, IMAGES, drifted=False)
    ids = []
    for i in range(devices):
        created = client.add_device(
            f"cam-{secrets.token_hex(2)}-{i}", device_class="x86_64", tags=["demo"]
        )
        device_id = str(created["device_id"])
        config = root / f"{device_id}.toml"
        _agent_config(
            config,
            device_id=device_id,
            token=str(created["token"]),
            server=server,
            broker=f"mqtt://127.0.0.1:{broker}",
            inputs=folder,
            data_dir=root / "agents" / device_id,
            interval=0.5,
            trusted_key=keys / "signing.pub.pem",
        )
        with config.open("a") as f:  # capture uploads at once (the defaults trickle)
            f.write("[capture]\nupload_rate_per_s = 20\noverhead_share = 0.5\n")
        procs.start(
            device_id,
            [sys.executable, "-m", "edgefleet", "agent", "run", "--config", str(config)],
            env,
        )
        ids.append(device_id)
    client.assign(MODEL_NAME, OLD_VERSION, tag="demo")
    deadline = time.monotonic() + 90
    while not _on(client, ids, OLD_VERSION):
        _tick(procs, deadline, "every camera serving 1.0.0")
    tl.add(f"{devices} cameras serving 1.0.0 on clean frames")
    time.sleep(3)  # a few telemetry intervals of clean frames: no drift to see yet
    sources.update(camera_frames(folder, 0, IMAGES, drifted=True))  # replaced in place
    tl.drift_at = time.monotonic()
    tl.add("DRIFT: every camera now sees low contrast and noise")
    deadline = tl.drift_at + duration_s
    labelled, work = 0, root / "labeller"
    seen: set[int] = set()
    work.mkdir()
    marks: dict[str, Any] = {}
    run: dict[str, Any] = {}
    while True:
        _tick(procs, deadline, "the loop to close")
        if "detected" not in marks:
            alerts = [
                a for a in client.drift(limit=200)["alerts"] if a["detector"].startswith("input_")
            ]
            if alerts:
                marks["detected"] = time.monotonic() - tl.drift_at
                tl.add(
                    "input drift detected", detectors=sorted({a["detector"] for a in alerts})[:4]
                )
        if "detected" not in marks:
            continue  # the person who labels answers the drift alert: nothing to do before it
        try:
            labelled += label_new(client, work, sources, seen)
        except FleetUnreachableError:
            continue  # a busy server (2 cores, every process of the fleet): next round
        if "labelled" not in marks and labelled >= MIN_LABELLED:
            marks["labelled"] = time.monotonic() - tl.drift_at
            tl.add(
                "labelled data set ready (demo labeller, standing in for a person)",
                labelled=labelled,
            )
        runs = client.pipeline_runs(model=MODEL_NAME, limit=5)
        if not runs:
            continue
        run = client.pipeline_run(int(runs[0]["id"]))
        for step in run["steps"]:
            key = f"step:{step['name']}:{step['attempt']}"
            if step["state"] != "running" and key not in marks:
                marks[key] = True
                tl.add(
                    f"pipeline run #{run['id']} {step['name']} {step['state']}",
                    detail=step["detail"][:160],
                )
                if step["name"] == "push" and step["state"] == "succeeded":
                    marks["candidate"] = time.monotonic() - tl.drift_at
        if run["state"] in ("succeeded", "failed", "cancelled"):
            break
    promoted = run["state"] == "succeeded"
    shadowed = False
    if run.get("rollout_id") is not None:
        report = client.rollout_report(int(run["rollout_id"]))
        for decision in report.get("decisions") or []:
            if decision.get("action") in ("shadow_passed", "abort") and decision.get("evidence"):
                gates = (decision["evidence"] or {}).get("gates") or []
                shadowed = shadowed or decision["action"] == "shadow_passed"
                tl.add(
                    f"shadow stage: {decision['action']} (candidate beside 1.0.0, same inputs)",
                    gates={g.get("name"): g.get("value") for g in gates[:6]},
                )
    if promoted:
        marks["promoted"] = time.monotonic() - tl.drift_at
        tl.add(f"{run['candidate_version']} promoted fleet-wide", rollout=run["rollout_id"])
    summary: dict[str, Any] = {
        "run": run.get("id"),
        "state": run.get("state"),
        "error": run.get("error"),
        "seconds_after_drift": {k: round(v, 1) for k, v in marks.items() if isinstance(v, float)},
        "steps_s": step_seconds(run),
    }
    eval_dir = root / "eval"
    held = camera_frames(eval_dir, EVAL_FROM, 1797 - EVAL_FROM, drifted=True)
    pixels = np.stack([v[0] for v in held.values()])
    truths = np.asarray([v[1] for v in held.values()])
    summary["accuracy_on_drifted"] = {"old": round(accuracy(parent, pixels, truths), 4)}
    candidate = root / "server" / "pipelines" / f"run-{run.get('id')}" / "artifact"
    if candidate.is_dir():
        summary["accuracy_on_drifted"]["new"] = round(accuracy(candidate, pixels, truths), 4)
    acc = summary["accuracy_on_drifted"]
    better = "new" in acc and acc["new"] > acc["old"]
    tl.add("accuracy on drifted held-out digits", **acc, samples=len(truths))
    summary["shadow_passed"] = shadowed
    closed = promoted and better and shadowed  # through shadow and canary, measured better
    serving = str(run["candidate_version"])
    if not (closed and _on(client, ids, serving)):
        summary["negative"] = "not run: the loop did not close"
        return False, summary
    negative_at = time.monotonic()
    stopped, summary["negative"] = run_negative(
        client, root, tl, ids=ids, serving=serving,
        wait=lambda what: _tick(procs, negative_at + duration_s, what),
    )  # fmt: skip
    summary["negative_stopped"] = stopped
    return stopped, summary


def _on(client: Any, ids: list[str], version: str) -> bool:
    devices = {d["device_id"]: d for d in client.list_devices()}
    return all((devices.get(i, {}).get("running") or {}).get("version") == version for i in ids)


def _tick(procs: _Processes, deadline: float, what: str) -> None:
    procs.check_alive()
    if time.monotonic() > deadline:
        raise DemoError(f"timed out waiting for {what}")
    time.sleep(0.5)
