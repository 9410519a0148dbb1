"""``edgefleet server``: run the fleet server (standard library only at module level)."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "server",
        help="run the fleet server (HTTP API, MQTT ingest, embedded broker)",
        description="Run the fleet server. Flags override EDGEFLEET_* environment settings.",
    )
    parser.add_argument("--data-dir", help="data directory (EDGEFLEET_DATA_DIR)")
    parser.add_argument("--host", help="HTTP listen address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="HTTP listen port (default 8080)")
    parser.add_argument("--database-url", help="SQLAlchemy URL (default SQLite in the data dir)")
    parser.add_argument("--broker-url", help="external broker mqtt://host:port (default embedded)")
    parser.add_argument("--broker-port", type=int, help="embedded broker port (default 1884)")
    parser.add_argument("--public-url", help="base URL devices download bundles from")
    parser.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], help="default info"
    )
    parser.set_defaults(handler=run)


def settings_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given as flags (None = not given, so the environment decides)."""
    mapping = {
        "data_dir": args.data_dir,
        "host": args.host,
        "port": args.port,
        "database_url": args.database_url,
        "broker_url": args.broker_url,
        "embedded_broker_port": args.broker_port,
        "public_url": args.public_url,
        "log_level": args.log_level,
    }
    return {key: value for key, value in mapping.items() if value is not None}


def run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from fleet_server.settings import ServerSettings

    try:
        settings = ServerSettings(**settings_overrides(args))
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        print(f"edgefleet server: invalid setting {where}: {first['msg']}", file=sys.stderr)
        return 2
    from fleet_server.serve import serve

    return serve(settings)
