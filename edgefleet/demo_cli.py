"""``edgefleet demo``: the whole loop on one machine, with nothing but Python."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the end-to-end demo: server, converter, three agents, a rollout",
        description=(
            "Start a fleet server on the embedded defaults (SQLite, in-process MQTT broker) in a "
            "temporary directory, train and convert a digits classifier, start real agent "
            "processes, give them version 1.0.0, then roll out 2.0.0 in stages gated on the "
            "canary's telemetry and print what happened. Exits 0 only if the rollout completed "
            "and every agent reported telemetry for the new version."
        ),
    )
    parser.add_argument(
        "--duration", type=float, default=45.0, help="longest the rollout may take, seconds"
    )
    parser.add_argument("--devices", type=int, default=3, help="number of agent processes (1-20)")
    parser.add_argument("--data-dir", help="keep everything here instead of a temporary directory")
    parser.add_argument("--database-url", help="use this database instead of SQLite")
    parser.add_argument("--broker-url", help="use this MQTT broker instead of the embedded one")
    parser.add_argument(
        "--telemetry-interval", type=float, default=2.0, help="agent telemetry interval, seconds"
    )
    parser.add_argument(
        "--scenario",
        choices=("rollout", "drift"),
        default="rollout",
        help="rollout (default, fast): a staged rollout; drift: the cameras drift and the "
        "retraining pipeline closes the loop (several minutes on 2 cores)",
    )
    parser.add_argument(
        "--json", action="store_true", help="drift: print the timeline and numbers as JSON"
    )
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from edgefleet.demo import DemoOptions, run_demo

    if args.scenario == "drift":
        from edgefleet.demo_drift.scenario import run_drift

        return run_drift(
            devices=args.devices,
            duration_s=max(args.duration, 300.0),
            as_json=args.json,
            data_dir=args.data_dir,
        )

    return run_demo(
        DemoOptions(
            duration_s=args.duration,
            devices=args.devices,
            data_dir=args.data_dir,
            database_url=args.database_url,
            broker_url=args.broker_url,
            telemetry_interval_s=args.telemetry_interval,
        )
    )
