"""The ``edgefleet fleet rollouts ...`` commands (the parser is in :mod:`.rollouts_cli`): create,
list, show, report, pause/resume/approve/abort, and a live ``watch`` (exit 0 when the rollout
completes, 1 when it ends aborted or failed)."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from fleet_server.client.api import FleetClient, FleetClientError, JsonObject
from fleet_server.client.render import Column, Output, plain, when
from fleet_server.client.rollouts_cli import GATE_FLAGS
from fleet_server.services.rollouts.state import TERMINAL_STATES, RolloutState

MAX_SPEC_BYTES = 1024 * 1024


def _spec(args: argparse.Namespace) -> JsonObject:
    body: dict[str, Any] = {}
    if args.spec is not None:
        try:
            with args.spec.open("rb") as fh:
                raw = fh.read(MAX_SPEC_BYTES + 1)
        except OSError as err:
            raise FleetClientError(0, f"cannot read {args.spec}: {err.strerror or err}") from err
        if len(raw) > MAX_SPEC_BYTES:
            raise FleetClientError(0, f"{args.spec} is larger than {MAX_SPEC_BYTES} bytes")
        try:
            loaded = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise FleetClientError(0, f"{args.spec} is not JSON: {err}") from err
        if not isinstance(loaded, dict):
            raise FleetClientError(0, f"{args.spec} must hold a JSON object")
        body = loaded
    body["model"], body["version"] = args.name, args.version
    selector = dict(body.get("selector") or {})
    for key, values in (("tags", args.tags), ("device_classes", args.classes)):
        if values:
            selector[key] = values
    if args.devices:
        selector["device_ids"] = args.devices
    body["selector"] = selector
    strategy = dict(body.get("strategy") or {})
    for key, value in (
        ("canary_percent", args.canary),
        ("batches", args.batches),
        ("soak_s", args.soak),
        ("rate_per_minute", args.rate),
        ("on_failure", args.on_failure),
    ):
        if value is not None:
            strategy[key] = value
    if args.approval:
        strategy["require_approval"] = True
    shadow_flags = {
        "shadow_s": args.shadow_s,
        "sample_rate": args.shadow_sample_rate,
        "min_agreement": args.shadow_min_agreement,
        "max_latency_ratio": args.shadow_max_latency_ratio,
    }
    shadow_given = {k: v for k, v in shadow_flags.items() if v is not None}
    if shadow_given:
        if args.shadow_s is None and not isinstance(strategy.get("shadow"), dict):
            raise FleetClientError(0, "--shadow-sample-rate and friends need --shadow-s")
        strategy["shadow"] = {**(strategy.get("shadow") or {}), **shadow_given}
    body["strategy"] = strategy
    gates = body.get("gates") or {}
    if not isinstance(gates, dict):
        raise FleetClientError(0, "the spec's gates must be a JSON object")
    gates = dict(gates)
    settings = [
        (gate, name, getattr(args, flag[2:].replace("-", "_")))
        for flag, gate, name, _kind, _help in GATE_FLAGS
    ]
    settings.append(("confidence_shift", "direction", args.confidence_direction))
    for gate, name, value in settings:
        if value is None:
            continue
        if gate is None:
            gates[name] = value
        else:
            own = gates.get(gate) or {}
            if not isinstance(own, dict):
                raise FleetClientError(0, f"the spec's gates.{gate} must be a JSON object")
            gates[gate] = {**own, name: value}
    if gates:
        body["gates"] = gates
    thresholds = {
        "max_agreement_drop": args.compare_max_agreement_drop,
        "max_accuracy_drop": args.compare_max_accuracy_drop,
        "max_latency_ratio": args.compare_max_latency_ratio,
    }
    given = {k: v for k, v in thresholds.items() if v is not None}
    if given and not args.require_compare:
        raise FleetClientError(0, "--compare-max-* thresholds need --require-compare")
    if args.require_compare:
        required = dict(body.get("require_compare") or {})
        required.update({k: (None if v == "off" else v) for k, v in given.items()})
        body["require_compare"] = required
    return body


ROLLOUT_COLUMNS: list[Column] = [
    ("ID", lambda r: r.get("id")),
    ("MODEL", lambda r: f"{plain(r.get('model'))}@{plain(r.get('version'))}"),
    ("STATE", lambda r: r.get("state")),
    ("STAGE", lambda r: r.get("stage_name")),
    ("COMMITTED", lambda r: _count(r, "committed")),
    ("FAILED", lambda r: _count(r, "failed")),
    ("TARGETED", lambda r: _targeted(r)),
    ("CREATED", lambda r: when(r.get("created_at"))),
    ("REASON", lambda r: r.get("reason")),
]

GATE_COLUMNS: list[Column] = [
    ("GATE", lambda g: g.get("name")),
    ("STATUS", lambda g: g.get("status")),
    ("VALUE", lambda g: g.get("value")),
    ("THRESHOLD", lambda g: g.get("threshold")),
    ("SAMPLES", lambda g: f"{plain(g.get('samples'))}/{plain(g.get('min_samples'))}"),
    ("EVIDENCE", lambda g: g.get("evidence")),
    ("DETAIL", lambda g: g.get("detail")),
]

DECISION_COLUMNS: list[Column] = [
    ("TIME", lambda d: when(d.get("ts"))),
    ("STAGE", lambda d: d.get("stage")),
    ("ACTION", lambda d: d.get("action")),
    ("BY", lambda d: d.get("actor")),
    ("WHY", lambda d: d.get("reason")),
]


def _count(rollout: JsonObject, status: str) -> Any:
    counts = rollout.get("counts")
    return counts.get(status) if isinstance(counts, dict) else None


def _targeted(rollout: JsonObject) -> int:
    counts = rollout.get("counts")
    if not isinstance(counts, dict):
        return 0
    return sum(int(v) for k, v in counts.items() if k != "skipped" and isinstance(v, int))


def _gates(rollout: JsonObject) -> list[JsonObject]:
    evaluation = rollout.get("last_evaluation")
    gates = evaluation.get("gates") if isinstance(evaluation, dict) else None
    return [g for g in gates if isinstance(g, dict)] if isinstance(gates, list) else []


def _show(out: Output, rollout: JsonObject) -> None:
    raw = rollout.get("counts")
    counts: dict[str, Any] = raw if isinstance(raw, dict) else {}
    out.record(
        f"rollout {plain(rollout.get('id'))}",
        [
            ("model", f"{plain(rollout.get('model'))}@{plain(rollout.get('version'))}"),
            ("state", rollout.get("state")),
            ("stage", rollout.get("stage_name")),
            ("devices", ", ".join(f"{k} {v}" for k, v in counts.items() if v)),
            ("reason", rollout.get("reason")),
            ("created", when(rollout.get("created_at"))),
        ],
    )
    gates = _gates(rollout)
    if gates:
        out.table("gates (latest evaluation)", GATE_COLUMNS, gates)


def rollouts_create(client: FleetClient, args: argparse.Namespace, out: Output) -> None:
    rollout = client.create_rollout(_spec(args))
    if out.json_mode:
        out.json(rollout)
    else:
        out.line(f"rollout {plain(rollout.get('id'))} started")
        _show(out, rollout)


def rollouts_list(client: FleetClient, args: argparse.Namespace, out: Output) -> None:
    rows = client.list_rollouts(state=args.state)
    if out.json_mode:
        out.json(rows)
    else:
        out.table("rollouts", ROLLOUT_COLUMNS, rows)


def rollouts_show(client: FleetClient, args: argparse.Namespace, out: Output) -> None:
    rollout = client.get_rollout(args.rollout_id)
    if out.json_mode:
        out.json(rollout)
    else:
        _show(out, rollout)


def rollouts_report(client: FleetClient, args: argparse.Namespace, out: Output) -> None:
    report = client.rollout_report(args.rollout_id)
    if out.json_mode:
        out.json(report)
        return
    rollout = report.get("rollout") if isinstance(report.get("rollout"), dict) else {}
    _show(out, rollout)  # type: ignore[arg-type]
    decisions = report.get("decisions")
    if isinstance(decisions, list):
        out.table("decisions", DECISION_COLUMNS, [d for d in decisions if isinstance(d, dict)])
    diff = report.get("differential")
    if isinstance(diff, dict):
        out.line(
            f"differential ({plain(diff.get('baseline'))} baseline): error rate change "
            f"{plain(diff.get('error_rate_increase'))}, confidence TV distance "
            f"{plain(diff.get('confidence_tv_distance'))}"
        )
        by_class = diff.get("latency_by_class")
        if isinstance(by_class, dict):
            for name, row in sorted(by_class.items()):
                out.line(f"  {plain(name)}: p95 new/old {plain(_get_ratio(row))}")
        if isinstance(diff.get("shadow"), dict):
            _shadow_lines(out, diff["shadow"])


def _shadow_lines(out: Output, shadow: dict[str, Any]) -> None:
    """The shadow stage's evidence, per device class (beside the canary's differential)."""
    out.line(
        f"shadow stage {plain(shadow.get('outcome'))}: {plain(shadow.get('devices'))} device(s)"
    )
    classes = shadow.get("device_classes")
    for name, group in sorted(classes.items() if isinstance(classes, dict) else []):
        if not isinstance(group, dict):
            continue
        errors = group.get("errors")
        failures = (
            sum(v for v in errors.values() if isinstance(v, int))
            if isinstance(errors, dict)
            else None
        )
        out.line(
            f"  {plain(name)}: paired {plain(group.get('paired'))}, agreement "
            f"{plain(group.get('agreement'))}, p95 shadow/serving "
            f"{plain(group.get('latency_ratio_p95'))}, shadow errors {plain(failures)}"
        )


def _get_ratio(row: Any) -> Any:
    return row.get("p95_ratio") if isinstance(row, dict) else None


def rollouts_action(client: FleetClient, args: argparse.Namespace, out: Output) -> None:
    rollout = client.rollout_action(args.rollout_id, args.verb, reason=args.reason)
    if out.json_mode:
        out.json(rollout)
    else:
        out.line(f"rollout {plain(rollout.get('id'))}: {args.verb} → {plain(rollout.get('state'))}")


def rollouts_watch(client: FleetClient, args: argparse.Namespace, out: Output) -> None:
    """Redraw in place on a terminal; one line per change otherwise (logs, CI)."""
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    interval = min(max(args.interval, 0.2), 60.0)
    live = None
    if not out.piped and not out.json_mode:
        from rich.live import Live

        live = Live(console=out.console, auto_refresh=False)
        live.start()
    last = None
    try:
        while True:
            rollout = client.get_rollout(args.rollout_id)
            line = _progress(rollout)
            if out.json_mode:
                if line != last:
                    out.json(rollout)
            elif live is not None:
                live.update(_renderable(rollout), refresh=True)
            elif line != last:
                out.line(line)
            last = line
            state = rollout.get("state")
            if state in TERMINAL_STATES:
                if state != RolloutState.COMPLETED:
                    raise FleetClientError(
                        0, f"rollout {args.rollout_id} {state}: {plain(rollout.get('reason'))}"
                    )
                return
            if deadline is not None and time.monotonic() > deadline:
                raise FleetClientError(0, f"rollout {args.rollout_id} still {state} at timeout")
            time.sleep(interval)
    finally:
        if live is not None:
            live.stop()


def _progress(rollout: JsonObject) -> str:
    gates = " ".join(f"{g.get('name')}={g.get('status')}" for g in _gates(rollout))
    return (
        f"rollout {plain(rollout.get('id'))} {plain(rollout.get('state'))} "
        f"{plain(rollout.get('stage_name'))}: committed {_count(rollout, 'committed')}/"
        f"{_targeted(rollout)}, failed {_count(rollout, 'failed')}, "
        f"updating {_count(rollout, 'assigned')}" + (f" | {gates}" if gates else "")
    )


def _renderable(rollout: JsonObject) -> Any:
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    targeted = max(1, _targeted(rollout))
    done = int(_count(rollout, "committed") or 0)
    table = Table(show_header=True, title="gates", title_justify="left")
    for header, _getter in GATE_COLUMNS[:5]:
        table.add_column(header)
    for gate in _gates(rollout):
        table.add_row(*(Text(plain(getter(gate))) for _h, getter in GATE_COLUMNS[:5]))
    return Group(
        Text(_progress(rollout)),
        ProgressBar(total=targeted, completed=done, width=60),
        table,
    )


ROLLOUT_COMMANDS = {
    "rollouts_create": rollouts_create,
    "rollouts_list": rollouts_list,
    "rollouts_show": rollouts_show,
    "rollouts_report": rollouts_report,
    "rollouts_action": rollouts_action,
    "rollouts_watch": rollouts_watch,
}
