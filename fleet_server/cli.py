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
    parser.add_argument(
        "--no-mqtt-auth",
        dest="mqtt_auth",
        action="store_const",
        const=False,
        help="embedded broker: admit anonymous clients to every topic (closed lab networks only)",
    )
    parser.set_defaults(handler=run)
    actions = parser.add_subparsers(dest="server_command", metavar="ACTION")
    acl = actions.add_parser(
        "acl",
        help="write Mosquitto password_file, acl_file and mosquitto.conf from the database",
        description="Write a Mosquitto 2.0 password_file (every device), a "
        "server_password_file (the server), an acl_file confining each device to its own "
        "topics, and a sample mosquitto.conf into DIR: devices on one listener (client id = "
        "device id), the server on another. Run again after registering devices, then send "
        "Mosquitto SIGHUP.",
    )
    acl.add_argument("--out", required=True, help="directory to write the three files into")
    acl.add_argument("--data-dir", help="data directory (EDGEFLEET_DATA_DIR)")
    acl.add_argument("--database-url", help="SQLAlchemy URL (default SQLite in the data dir)")
    acl.add_argument(
        "--listen-port", type=int, default=1883, help="port in the sample mosquitto.conf"
    )
    acl.add_argument(
        "--listen-host",
        default="0.0.0.0",  # noqa: S104 - written into a sample config, not bound here
        help="address in the sample mosquitto.conf (default 0.0.0.0)",
    )
    acl.add_argument(
        "--server-listen-port",
        type=int,
        default=1885,
        help="port of the server's own listener in the sample mosquitto.conf (default 1885; "
        "the server's broker_url points here)",
    )
    acl.add_argument(
        "--server-listen-host",
        default="127.0.0.1",
        help="address of the server's own listener (default 127.0.0.1)",
    )
    acl.add_argument(
        "--persistence-dir",
        default="/var/lib/mosquitto",
        help="persistence_location in the sample mosquitto.conf (writable by Mosquitto's "
        "user; default /var/lib/mosquitto)",
    )
    acl.add_argument(
        "--dynsec",
        action="store_true",
        help="for Mosquitto's dynamic-security plugin (EDGEFLEET_BROKER_DYNSEC=1): write the "
        "plugin's initial dynamic-security.json and mosquitto.conf into DIR and print the "
        "conf lines; run once, the server then adds and removes devices itself",
    )
    acl.set_defaults(handler=run_acl)


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
        "mqtt_auth": getattr(args, "mqtt_auth", None),
    }
    return {key: value for key, value in mapping.items() if value is not None}


def _settings(overrides: dict[str, Any]) -> Any:
    """ServerSettings, or None after printing the first invalid setting in one line."""
    from pydantic import ValidationError

    from fleet_server.settings import ServerSettings

    try:
        return ServerSettings(**overrides)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        print(f"edgefleet server: invalid setting {where}: {first['msg']}", file=sys.stderr)
        return None


def run(args: argparse.Namespace) -> int:
    settings = _settings(settings_overrides(args))
    if settings is None:
        return 2
    from fleet_server.serve import serve

    return int(serve(settings))


def run_acl(args: argparse.Namespace) -> int:
    mapping = {"data_dir": args.data_dir, "database_url": args.database_url}
    settings = _settings({key: value for key, value in mapping.items() if value is not None})
    if settings is None:
        return 2
    for flag, port in (
        ("--listen-port", args.listen_port),
        ("--server-listen-port", args.server_listen_port),
    ):
        if not 1 <= port <= 65535:
            print(f"edgefleet server acl: {flag} must be 1..65535", file=sys.stderr)
            return 2
    from pathlib import Path

    from fleet_server.acl import AclError, export_mosquitto

    if args.dynsec:
        return _run_dynsec(args, settings)
    try:
        files = export_mosquitto(
            settings=settings,
            out=Path(args.out),
            port=args.listen_port,
            host=args.listen_host,
            server_port=args.server_listen_port,
            server_host=args.server_listen_host,
            persistence_location=Path(args.persistence_dir),
        )
    except AclError as err:
        print(f"edgefleet server acl: {err}", file=sys.stderr)
        return 1
    print(
        f"wrote {files.password_file} ({files.devices} devices), {files.server_password_file} "
        f"(the server), {files.acl_file}"
    )
    print(f"wrote {files.conf_file} (sample: merge it into your mosquitto.conf)")
    if files.skipped:
        print(
            f"left out {len(files.skipped)} devices registered before MQTT hashes were stored "
            f"(give each a new token: POST /api/v1/devices/<id>/token): "
            f"{', '.join(files.skipped[:20])}",
            file=sys.stderr,
        )
    return 0


def _run_dynsec(args: argparse.Namespace, settings: Any) -> int:
    from pathlib import Path

    from fleet_server.acl import AclError, export_dynsec

    try:
        path, conf, devices = export_dynsec(
            settings=settings,
            out=Path(args.out),
            port=args.listen_port,
            host=args.listen_host,
            server_port=args.server_listen_port,
            server_host=args.server_listen_host,
            persistence_location=Path(args.persistence_dir),
        )
    except AclError as err:
        print(f"edgefleet server acl: {err}", file=sys.stderr)
        return 1
    print(conf, end="")
    print(
        f"# wrote {path} (the server and {devices} devices; Mosquitto's user must be able to "
        "write it and its directory) and the lines above into "
        f"{Path(args.out) / 'mosquitto.conf'}"
    )
    return 0
