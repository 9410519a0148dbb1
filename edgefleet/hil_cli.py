"""``edgefleet hil run``: a scenario on a real board over SSH (docs/hil.md).

The runner (``hil.ssh``) lives in the source tree, not in the wheel: it builds this tree's
wheel for the board. From an installed wheel the command says so in one line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def _default_known_hosts() -> Path:
    base = os.environ.get("EDGEFLEET_HIL_CACHE")
    root = Path(base) if base else Path.home() / ".cache" / "edgefleet" / "hil"
    return root / "known_hosts"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "hil", help="hardware in the loop: run a scenario on a real board over SSH"
    )
    actions = parser.add_subparsers(dest="hil_command", metavar="ACTION", required=True)
    run = actions.add_parser(
        "run",
        help="install this tree's agent on a board over SSH and run a scenario there",
        description=(
            "Copy this tree's wheel to the board, install edgefleet[agent] into a venv there, "
            "run the scenario against a fleet server (started here, on the address the board "
            "reaches us from, unless --server), bring back a JSON report (latency of the served "
            "models, RSS, descriptors, threads, temperature) and remove everything it put on "
            "the board. Exits 0 when the scenario's checks held and the board is clean."
        ),
    )
    run.add_argument("--target", required=True, metavar="ssh://USER@HOST[:PORT]")
    run.add_argument("--scenario", required=True, choices=("update", "outage", "soak"))
    run.add_argument("--identity", type=Path, metavar="KEY", help="ssh private key (ssh -i)")
    run.add_argument(
        "--known-hosts",
        type=Path,
        default=None,
        help="known_hosts file this tool owns (default ~/.cache/edgefleet/hil/known_hosts; "
        "a new host is recorded, a changed key refused)",
    )
    run.add_argument("--server", metavar="URL", help="an existing fleet server the board reaches")
    run.add_argument("--broker", metavar="URL", help="with --server: the MQTT broker devices use")
    run.add_argument("--token", help="with --server: operator token (EDGEFLEET_OPERATOR_TOKEN)")
    run.add_argument("--models", metavar="FROM,TO", help="with --server: two model refs")
    run.add_argument("--trusted-key", type=Path, help="with --server: the models' public key")
    run.add_argument(
        "--system-site-packages",
        action="store_true",
        help="the venv sees the board's system packages (numpy, onnxruntime, ... from apt)",
    )
    run.add_argument(
        "--no-index", action="store_true", help="pip installs nothing from the network"
    )
    run.add_argument("--duration", type=float, default=600.0, help="soak: seconds (default 600)")
    run.add_argument("--outage", type=float, default=30.0, help="outage: seconds (default 30)")
    run.add_argument("--bench-runs", type=int, default=500, help="timed calls per model")
    run.add_argument(
        "--step-timeout", type=float, default=300.0, help="longest one step may take, seconds"
    )
    run.add_argument("--json", action="store_true", help="print the JSON report, not the table")
    run.add_argument("--report", type=Path, help="also write the JSON report to this file")
    run.set_defaults(handler=_run)


def _say(line: str) -> None:
    print(f"[hil] {line}", flush=True)  # noqa: T201 (progress lines)


def _fail(message: str, code: int = 2) -> int:
    print(f"edgefleet hil: {message}", file=sys.stderr)  # noqa: T201 (a CLI's one line)
    return code


def _run(args: argparse.Namespace) -> int:
    try:
        from hil.ssh.errors import HilError
        from hil.ssh.runner import RunOptions, run, table
        from hil.ssh.target import parse_target
    except ModuleNotFoundError as err:
        if (err.name or "").split(".")[0] != "hil":
            raise
        return _fail("run it from a source checkout: the hil package is not part of the wheel")
    if not 1 <= args.duration <= 7 * 86400 or not 1 <= args.outage <= 3600:
        return _fail("--duration must be 1 s to 7 days and --outage 1 s to 1 h")
    if not 10 <= args.bench_runs <= 1_000_000 or not 10 <= args.step_timeout <= 86400:
        return _fail("--bench-runs must be 10-1000000 and --step-timeout 10-86400 s")
    models = None
    if args.models:
        parts = args.models.split(",")
        if len(parts) != 2 or not all("@" in p for p in parts):
            return _fail("--models takes FROM,TO, e.g. digits@1.0.0,digits@2.0.0")
        models = (parts[0].strip(), parts[1].strip())
    try:
        target = parse_target(args.target)
        if args.identity is not None and not args.identity.is_file():
            raise HilError(f"--identity {args.identity} is not a file")
        options = RunOptions(
            target=target,
            scenario=args.scenario,
            known_hosts=args.known_hosts or _default_known_hosts(),
            identity=args.identity,
            server_url=args.server,
            broker_url=args.broker,
            token=args.token or os.environ.get("EDGEFLEET_OPERATOR_TOKEN"),
            models=models,
            trusted_key=args.trusted_key,
            system_site_packages=args.system_site_packages,
            no_index=args.no_index,
            duration_s=args.duration,
            outage_s=args.outage,
            bench_runs=args.bench_runs,
            step_timeout_s=args.step_timeout,
            say=(lambda line: None) if args.json else _say,
        )
        report = run(options)
    except HilError as err:
        return _fail(str(err))
    text = json.dumps(report, indent=2, sort_keys=True)
    if args.report is not None:
        args.report.write_text(text + "\n")
    print(text if args.json else table(report), flush=True)  # noqa: T201 (the report)
    clean = bool((report.get("cleanup") or {}).get("removed"))
    return 0 if report.get("ok") and clean else 1
