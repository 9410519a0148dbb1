"""``edgefleet fleet``: the operator's command line over the server's HTTP API.

Standard library only at module level: httpx and rich are imported by the handler, so
``edgefleet fleet --help`` works without the ``cli`` extra.

Exit codes: 0 done; 1 the server refused (its ``detail`` is printed) or a local input is bad;
2 the server cannot be reached or addressed (bad URL, connection refused, timeout, no token
file).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from fleet_server.client import rollouts_cli

DEFAULT_SERVER = "http://127.0.0.1:8080"
SERVER_ENV = "EDGEFLEET_SERVER"
TOKEN_ENV = "EDGEFLEET_TOKEN"  # noqa: S105  # an environment variable name, not a secret
#: A token file larger than this is not a token.
MAX_TOKEN_FILE_BYTES = 4096
MAX_TELEMETRY_LIMIT = 1000

EXIT_OK, EXIT_REFUSED, EXIT_UNREACHABLE = 0, 1, 2


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "fleet",
        help="operate a fleet server: devices, models, assignments, telemetry",
        description="Talk to a fleet server's HTTP API. Options may also follow the subcommand.",
    )
    _connection_options(parser, suppress=False)
    actions = parser.add_subparsers(dest="fleet_command", metavar="COMMAND", required=True)
    common = argparse.ArgumentParser(add_help=False)
    _connection_options(common, suppress=True)

    devices = actions.add_parser("devices", help="list, show and add devices")
    device_actions = devices.add_subparsers(dest="devices_command", metavar="ACTION", required=True)
    leaf = device_actions.add_parser("list", parents=[common], help="list every device")
    leaf.set_defaults(action="devices_list")
    leaf = device_actions.add_parser("show", parents=[common], help="one device in detail")
    leaf.add_argument("device_id", metavar="ID")
    leaf.set_defaults(action="devices_show")
    leaf = device_actions.add_parser(
        "add", parents=[common], help="register a device and print its token (shown once)"
    )
    leaf.add_argument("device_id", metavar="ID", help="[a-z0-9][a-z0-9_-]{0,62}")
    leaf.add_argument("--class", dest="device_class", metavar="C", help="hardware class, e.g. rpi4")
    leaf.add_argument(
        "--tag", dest="tags", action="append", default=[], metavar="T", help="repeatable"
    )
    leaf.set_defaults(action="devices_add")

    models = actions.add_parser("models", help="push, list and show models")
    model_actions = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    leaf = model_actions.add_parser(
        "push", parents=[common], help="upload a .tar.gz bundle or an artifact directory"
    )
    leaf.add_argument("path", metavar="BUNDLE_OR_ARTIFACT_DIR", type=Path)
    leaf.set_defaults(action="models_push")
    leaf = model_actions.add_parser("list", parents=[common], help="list registered models")
    leaf.set_defaults(action="models_list")
    leaf = model_actions.add_parser("show", parents=[common], help="one model and its manifest")
    leaf.add_argument("name", metavar="NAME")
    leaf.add_argument("version", metavar="VERSION")
    leaf.set_defaults(action="models_show")

    leaf = actions.add_parser(
        "assign", parents=[common], help="set the desired model of devices (by id or by tag)"
    )
    leaf.add_argument("name", metavar="NAME")
    leaf.add_argument("version", metavar="VERSION")
    target = leaf.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "--device", dest="device_ids", action="append", metavar="ID", help="repeatable"
    )
    target.add_argument("--tag", metavar="T", help="every device with this tag")
    leaf.set_defaults(action="assign")

    rollouts_cli.register(actions, common)

    leaf = actions.add_parser("telemetry", parents=[common], help="a device's latest telemetry")
    leaf.add_argument("device_id", metavar="ID")
    leaf.add_argument(
        "--limit", type=_limit, default=20, metavar="N", help=f"rows, 1..{MAX_TELEMETRY_LIMIT}"
    )
    leaf.set_defaults(action="telemetry")

    parser.set_defaults(handler=run)


def _connection_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument(
        "--server",
        metavar="URL",
        default=default,
        help=f"server base URL (env {SERVER_ENV}, default {DEFAULT_SERVER})",
    )
    tokens = parser.add_mutually_exclusive_group()
    tokens.add_argument(
        "--token", metavar="TOKEN", default=default, help=f"operator token (env {TOKEN_ENV})"
    )
    tokens.add_argument(
        "--token-file",
        metavar="PATH",
        type=Path,
        default=default,
        help="read the token from a file",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS if suppress else False,
        help="print the server's JSON instead of tables",
    )


def _limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from err
    if not 1 <= value <= MAX_TELEMETRY_LIMIT:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_TELEMETRY_LIMIT}")
    return value


class TokenError(Exception):
    """The token file is missing, unreadable, empty or not a token."""


def resolve_server(args: argparse.Namespace) -> str:
    return str(args.server or os.environ.get(SERVER_ENV) or DEFAULT_SERVER)


def resolve_token(args: argparse.Namespace) -> str | None:
    """``--token``, else ``--token-file``, else ``$EDGEFLEET_TOKEN``, else none."""
    if args.token:
        return str(args.token)
    path: Path | None = args.token_file
    if path is not None:
        try:
            with path.open("rb") as fh:
                raw = fh.read(MAX_TOKEN_FILE_BYTES + 1)
        except OSError as err:
            raise TokenError(f"cannot read token file {path}: {err.strerror or err}") from err
        if len(raw) > MAX_TOKEN_FILE_BYTES:
            raise TokenError(f"token file {path} is larger than {MAX_TOKEN_FILE_BYTES} bytes")
        try:
            token = raw.decode("ascii").strip()
        except UnicodeDecodeError as err:
            raise TokenError(f"token file {path} is not ASCII text") from err
        if not token:
            raise TokenError(f"token file {path} is empty")
        return token
    return os.environ.get(TOKEN_ENV) or None


def run(args: argparse.Namespace) -> int:
    from fleet_server.client.api import FleetClient, FleetClientError, FleetUnreachableError
    from fleet_server.client.commands import COMMANDS
    from fleet_server.client.render import Output

    try:
        token = resolve_token(args)
    except TokenError as err:
        print(f"edgefleet fleet: {err}", file=sys.stderr)
        return EXIT_UNREACHABLE
    output = Output(json_mode=bool(args.json))
    try:
        with FleetClient(resolve_server(args), token) as client:
            COMMANDS[args.action](client, args, output)
    except FleetUnreachableError as err:
        print(f"edgefleet fleet: {err.detail}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except FleetClientError as err:
        print(f"edgefleet fleet: {err}", file=sys.stderr)
        return EXIT_REFUSED
    return EXIT_OK
