"""``edgefleet fleet pipelines runs|show|start|cancel``: retraining pipeline runs, step by step."""

from __future__ import annotations

import argparse
from typing import Any

from fleet_server.client.api import FleetClient, JsonObject
from fleet_server.client.render import Column, Output, plain, when


def _numbers(step: Any) -> str:
    numbers = step.get("numbers") if isinstance(step, dict) else None
    if not isinstance(numbers, dict):
        return ""
    return ", ".join(f"{k}={v}" for k, v in numbers.items() if not isinstance(v, dict | list))


RUN_COLUMNS: list[Column] = [
    ("ID", lambda r: r.get("id")),
    ("MODEL", lambda r: r.get("model_name")),
    ("SOURCE", lambda r: r.get("source")),
    ("STATE", lambda r: r.get("state")),
    ("STEP", lambda r: r.get("step")),
    ("PARENT", lambda r: r.get("parent_version")),
    ("CANDIDATE", lambda r: r.get("candidate_version")),
    ("ROLLOUT", lambda r: r.get("rollout_id")),
    ("CREATED", lambda r: when(r.get("created_at"))),
    ("ERROR", lambda r: r.get("error")),
]
STEP_COLUMNS: list[Column] = [
    ("STEP", lambda r: r.get("name")),
    ("STATE", lambda r: r.get("state")),
    ("TRY", lambda r: r.get("attempt")),
    ("STARTED", lambda r: when(r.get("started_at"))),
    ("FINISHED", lambda r: when(r.get("finished_at"))),
    ("DETAIL", lambda r: r.get("detail")),
    ("NUMBERS", _numbers),
]


def pipelines_runs(client: FleetClient, args: argparse.Namespace, out: Output) -> None:
    runs = client.pipeline_runs(model=args.model, state=args.state, limit=args.limit)
    if out.json_mode:
        out.json(runs)
    else:
        out.table("pipeline runs", RUN_COLUMNS, runs)


def _show(run: JsonObject, out: Output, *, logs: bool) -> None:
    if out.json_mode:
        out.json(run)
        return
    out.record(
        f"pipeline run #{plain(run.get('id'))}",
        [
            (k, run.get(k))
            for k in (
                "model_name",
                "source",
                "state",
                "step",
                "parent_version",
                "candidate_version",
                "dataset_sha256",
                "rollout_id",
                "alert_id",
                "error",
                "created_at",
                "finished_at",
            )
        ],
    )
    steps = run.get("steps")
    rows = [s for s in steps if isinstance(s, dict)] if isinstance(steps, list) else []
    out.table("steps", STEP_COLUMNS, rows)
    if logs:
        for step in rows:
            if step.get("log"):
                out.line(f"--- {plain(step.get('name'))} (attempt {plain(step.get('attempt'))})")
                for line in str(step["log"]).splitlines()[-40:]:
                    out.line(plain(line, 300))


def pipelines_show(client: FleetClient, args: argparse.Namespace, out: Output) -> None:
    _show(client.pipeline_run(args.run_id), out, logs=args.logs)


def pipelines_start(client: FleetClient, args: argparse.Namespace, out: Output) -> None:
    _show(client.start_pipeline_run(args.model, reason=args.reason), out, logs=False)


def pipelines_cancel(client: FleetClient, args: argparse.Namespace, out: Output) -> None:
    _show(client.cancel_pipeline_run(args.run_id, reason=args.reason), out, logs=False)


PIPELINE_COMMANDS = {
    "pipelines_runs": pipelines_runs,
    "pipelines_show": pipelines_show,
    "pipelines_start": pipelines_start,
    "pipelines_cancel": pipelines_cancel,
}
