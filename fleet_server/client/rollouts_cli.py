"""The ``edgefleet fleet rollouts`` parser (standard library only, like :mod:`.cli`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from fleet_server.client.argtypes import share as _share
from fleet_server.services.rollouts.state import OPERATOR_ACTIONS, RolloutState

#: ``rollouts create`` flags for every gate threshold: (flag, gate or None for the policy
#: itself, field, type, help). The server's GatePolicy (services/rollouts/spec.py) validates.
GATE_FLAGS: tuple[tuple[str, str | None, str, type, str], ...] = (
    ("--min-success-rate", "success_rate", "min_rate", float, "committed / finished, at least"),
    ("--max-error-increase", "error_rate", "max_increase", float,
     "error rate new minus old (absolute), significantly above which the gate fails"),
    ("--max-p95-ratio", "latency_p95_ratio", "max_ratio", float,
     "p95 latency new / old, significantly above which the gate fails (default 1.25)"),
    ("--max-confidence-shift", "confidence_shift", "max_distance", float,
     "shift of the top-1 confidence CDF (0-1), significantly above which the gate fails"),
    ("--max-offline", "offline", "max_fraction", float, "share of committed devices offline"),
    ("--offline-grace", "offline", "grace_s", float,
     "seconds a committed device must stay offline before it counts (default 60)"),
    ("--max-accuracy-drop", "label_accuracy", "max_drop", float,
     "accuracy on labelled samples, old minus new (absolute)"),
    ("--alpha", None, "alpha", float, "false-alarm rate of each gate once a stage soaked"),
    ("--early-alpha", None, "early_alpha", float, "false-alarm rate before the soak ends"),
    ("--settle-intervals", None, "settle_intervals", int,
     "telemetry intervals after each device's update that are not judged"),
)  # fmt: skip


def register(
    actions: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
) -> None:
    rollouts = actions.add_parser("rollouts", help="staged rollouts gated on model behaviour")
    sub = rollouts.add_subparsers(dest="rollouts_command", metavar="ACTION", required=True)

    leaf = sub.add_parser(
        "create",
        parents=[common],
        help="start a rollout of NAME@VERSION (canary, then batches)",
        description="Flags build the request; --spec FILE (JSON) gives the whole body instead, "
        "and flags given with it override its fields.",
    )
    leaf.add_argument("name", metavar="NAME")
    leaf.add_argument("version", metavar="VERSION")
    leaf.add_argument("--spec", type=Path, metavar="FILE", help="a JSON rollout request")
    leaf.add_argument("--tag", dest="tags", action="append", default=[], metavar="T")
    leaf.add_argument("--class", dest="classes", action="append", default=[], metavar="C")
    leaf.add_argument("--device", dest="devices", action="append", default=[], metavar="ID")
    leaf.add_argument("--canary", type=float, metavar="PCT", help="canary size in percent")
    leaf.add_argument(
        "--batches", type=_percentages, metavar="P,P,..", help="cumulative, e.g. 25,50,100"
    )
    leaf.add_argument("--soak", type=float, metavar="S", help="seconds to watch each stage")
    leaf.add_argument("--rate", type=int, metavar="N", help="devices assigned per minute, at most")
    leaf.add_argument("--approval", action="store_true", help="wait for approve between stages")
    leaf.add_argument("--on-failure", choices=("abort", "pause"))
    for flag, _gate, _field, kind, text in GATE_FLAGS:
        leaf.add_argument(flag, type=kind, metavar="N" if kind is int else "X", help=text)
    leaf.add_argument(
        "--confidence-direction",
        choices=("lower", "both"),
        help="'lower' (default): only a shift toward lower confidence fails the gate",
    )
    leaf.add_argument(
        "--require-compare",
        action="store_true",
        help="refuse unless a stored comparison (fleet models compare) against the replaced "
        "version passes the thresholds below (server defaults otherwise)",
    )
    leaf.add_argument(
        "--compare-max-agreement-drop",
        type=_share,
        metavar="F",
        help="with --require-compare: 1 - agreement, at most (0.05)",
    )
    leaf.add_argument(
        "--compare-max-accuracy-drop",
        type=_share_or_off,
        metavar="F",
        help="with --require-compare: labelled accuracy drop, at most (0.02); 'off' accepts "
        "unlabelled comparisons",
    )
    leaf.add_argument(
        "--compare-max-latency-ratio",
        type=float,
        metavar="X",
        help="with --require-compare: median latency B / A, at most (1.5)",
    )
    leaf.add_argument(
        "--shadow-s",
        type=_positive,
        metavar="S",
        help="start with a shadow stage: the devices run the candidate in shadow (it answers "
        "nothing) for S seconds, then the shadow gates judge per device class",
    )
    leaf.add_argument(
        "--shadow-sample-rate", type=_share, metavar="R", help="share of inputs shadowed (0.1)"
    )
    leaf.add_argument(
        "--shadow-min-agreement", type=_share, metavar="A", help="agreement, at least (0.98)"
    )
    leaf.add_argument(
        "--shadow-max-latency-ratio",
        type=_positive,
        metavar="X",
        help="paired p95 latency shadow / serving, at most (1.5)",
    )
    leaf.set_defaults(action="rollouts_create")

    leaf = sub.add_parser("list", parents=[common], help="recent rollouts")
    leaf.add_argument("--state", choices=[s.value for s in RolloutState])
    leaf.set_defaults(action="rollouts_list")
    for name, text in (("show", "one rollout: stage, counts, gates"), ("report", "full report")):
        leaf = sub.add_parser(name, parents=[common], help=text)
        leaf.add_argument("rollout_id", type=int, metavar="ID")
        leaf.set_defaults(action=f"rollouts_{name}")
    for name in (a.value for a in OPERATOR_ACTIONS):
        leaf = sub.add_parser(name, parents=[common], help=f"{name} a rollout")
        leaf.add_argument("rollout_id", type=int, metavar="ID")
        leaf.add_argument("--reason", default="", metavar="TEXT", help="recorded in the report")
        leaf.set_defaults(action="rollouts_action", verb=name)
    leaf = sub.add_parser("watch", parents=[common], help="follow a rollout live until it ends")
    leaf.add_argument("rollout_id", type=int, metavar="ID")
    leaf.add_argument("--interval", type=float, default=2.0, metavar="S")
    leaf.add_argument("--timeout", type=float, default=None, metavar="S", help="give up after")
    leaf.set_defaults(action="rollouts_watch")


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from err
    if not 0.0 < value < float("inf"):
        raise argparse.ArgumentTypeError("must be a positive number")
    return value


def _share_or_off(text: str) -> float | str:
    return "off" if text.strip().lower() == "off" else _share(text)


def _percentages(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from err
    if not values:
        raise argparse.ArgumentTypeError("give at least one percentage")
    return values
