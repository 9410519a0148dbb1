"""The ``edgefleet fleet pipelines`` parser (standard library only, like :mod:`.cli`)."""

from __future__ import annotations

import argparse

STATES = ("queued", "running", "succeeded", "failed", "cancelled")


def register(
    actions: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
) -> None:
    pipelines = actions.add_parser("pipelines", help="retraining pipeline runs and their steps")
    sub = pipelines.add_subparsers(dest="pipelines_command", metavar="ACTION", required=True)
    leaf = sub.add_parser("runs", parents=[common], help="recent runs, newest first")
    leaf.add_argument("--model", metavar="NAME", help="only this model's runs")
    leaf.add_argument("--state", choices=STATES)
    leaf.add_argument("--limit", type=_limit, default=20, metavar="N", help="runs, 1..1000")
    leaf.set_defaults(action="pipelines_runs")
    leaf = sub.add_parser("show", parents=[common], help="one run: its steps, numbers and logs")
    leaf.add_argument("run_id", type=_limit_id, metavar="ID")
    leaf.add_argument("--logs", action="store_true", help="print each step's log tail")
    leaf.set_defaults(action="pipelines_show")
    leaf = sub.add_parser("start", parents=[common], help="retrain now: queue a pipeline run")
    leaf.add_argument("model", metavar="MODEL", help="model name (its pipeline is configured)")
    leaf.add_argument("--reason", default="", metavar="TEXT", help="recorded on the run")
    leaf.set_defaults(action="pipelines_start")
    leaf = sub.add_parser("cancel", parents=[common], help="cancel a run (its rollout aborts)")
    leaf.add_argument("run_id", type=_limit_id, metavar="ID")
    leaf.add_argument("--reason", default="", metavar="TEXT", help="recorded on the run")
    leaf.set_defaults(action="pipelines_cancel")


def _limit(text: str) -> int:
    value = _int(text)
    if not 1 <= value <= 1000:
        raise argparse.ArgumentTypeError("must be 1..1000")
    return value


def _limit_id(text: str) -> int:
    value = _int(text)
    if not 1 <= value <= 2**31 - 1:
        raise argparse.ArgumentTypeError("a run id is a positive integer")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from err
