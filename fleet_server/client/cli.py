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

from fleet_server.client import pipelines_cli, quality_cli, rollouts_cli, samples_cli

DEFAULT_SERVER = "http://127.0.0.1:8080"
SERVER_ENV = "EDGEFLEET_SERVER"
TOKEN_ENV = "EDGEFLEET_TOKEN"  # noqa: S105  # an environment variable name, not a secret
#: A token file larger than this is not a token.
MAX_TOKEN_FILE_BYTES = 4096
MAX_TELEMETRY_LIMIT = 1000

EXIT_OK, EXIT_REFUSED, EXIT_UNREACHABLE = 0, 1, 2
ROLES = ("viewer", "operator", "admin")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "fleet",
        help="operate a fleet server: devices, models, assignments, tokens, audit",
        description="Talk to a fleet server's HTTP API. Options may also follow the subcommand.",
    )
    _connection_options(parser, suppress=False)
    actions = parser.add_subparsers(dest="fleet_command", metavar="COMMAND", required=True)
    common = argparse.ArgumentParser(add_help=False)
    _connection_options(common, suppress=True)

    devices = actions.add_parser("devices", help="list, show, add, tag and pin devices")
    device_actions = devices.add_subparsers(dest="devices_command", metavar="ACTION", required=True)
    leaf = device_actions.add_parser("list", parents=[common], help="list every device")
    leaf.add_argument(
        "--decommissioned", action="store_true", help="include removed devices (kept for audit)"
    )
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
    leaf = device_actions.add_parser("tag", parents=[common], help="add and remove tags")
    leaf.add_argument("device_id", metavar="ID")
    leaf.add_argument("--add", action="append", default=[], metavar="T", help="repeatable")
    leaf.add_argument("--remove", action="append", default=[], metavar="T", help="repeatable")
    leaf.set_defaults(action="devices_tag")
    leaf = device_actions.add_parser(
        "pin", parents=[common], help="pin a device to a version (assigned now; others skip it)"
    )
    leaf.add_argument("device_id", metavar="ID")
    leaf.add_argument("name", metavar="NAME")
    leaf.add_argument("version", metavar="VERSION")
    leaf.set_defaults(action="devices_pin")
    leaf = device_actions.add_parser("unpin", parents=[common], help="remove a device's pin")
    leaf.add_argument("device_id", metavar="ID")
    leaf.set_defaults(action="devices_unpin")
    leaf = device_actions.add_parser(
        "remove",
        parents=[common],
        help="decommission a device: revoke its token and broker login now, keep its history",
    )
    leaf.add_argument("device_id", metavar="ID")
    leaf.set_defaults(action="devices_remove")

    models = actions.add_parser("models", help="push, list and show models")
    model_actions = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    leaf = model_actions.add_parser(
        "push", parents=[common], help="upload a .tar.gz bundle or an artifact directory"
    )
    leaf.add_argument("path", metavar="BUNDLE_OR_ARTIFACT_DIR", type=Path)
    leaf.add_argument("--parent", metavar="VERSION", help="version of the same model it came from")
    leaf.add_argument(
        "--dataset-sha256", metavar="HEX", type=_sha256, help="SHA-256 of the training data"
    )
    leaf.add_argument("--training-ref", metavar="REF", help="training code ref, e.g. a commit")
    leaf.set_defaults(action="models_push")
    leaf = model_actions.add_parser("list", parents=[common], help="list registered models")
    leaf.set_defaults(action="models_list")
    leaf = model_actions.add_parser("show", parents=[common], help="one model and its manifest")
    leaf.add_argument("name", metavar="NAME")
    leaf.add_argument("version", metavar="VERSION")
    leaf.set_defaults(action="models_show")
    leaf = model_actions.add_parser(
        "lineage", parents=[common], help="a version and its ancestors (parent chain)"
    )
    leaf.add_argument("name", metavar="NAME")
    leaf.add_argument("version", metavar="VERSION")
    leaf.set_defaults(action="models_lineage")
    leaf = model_actions.add_parser(
        "compare",
        parents=[common],
        help="run versions A and B on the same inputs here; store the result with B",
        description="Downloads both bundles, runs them with the agent's engine (1 thread) on "
        "DATA, prints agreement, labelled accuracy/F1 deltas, both latencies on this host and "
        "the inputs where they disagree most, and posts the result to the server (kept with B; "
        "read by 'rollouts create --require-compare').",
    )
    leaf.add_argument("name", metavar="MODEL")
    leaf.add_argument("baseline", metavar="A", help="the version B would replace")
    leaf.add_argument("candidate", metavar="B", help="the candidate version")
    leaf.add_argument(
        "--data",
        required=True,
        metavar="DATA",
        help="an .npz (x, optional y), an image folder (sub-folders: labels), or 'fleet' "
        "(the fleet's labelled samples of MODEL)",
    )
    leaf.add_argument(
        "--labels", type=Path, metavar="FILE", help="one label per line, in row order"
    )
    leaf.add_argument(
        "--limit", type=_positive, default=2000, metavar="N", help="rows compared (default 2000)"
    )
    leaf.add_argument(
        "--top", type=_top, default=10, metavar="K", help="disagreeing inputs listed, 0..50"
    )
    leaf.set_defaults(action="models_compare")
    leaf = model_actions.add_parser(
        "comparison", parents=[common], help="the latest stored comparison of a candidate version"
    )
    leaf.add_argument("name", metavar="MODEL")
    leaf.add_argument("version", metavar="VERSION", help="the candidate (B) version")
    leaf.set_defaults(action="models_comparison")

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
    samples_cli.register(actions, common)
    pipelines_cli.register(actions, common)

    leaf = actions.add_parser("telemetry", parents=[common], help="a device's latest telemetry")
    leaf.add_argument("device_id", metavar="ID")
    leaf.add_argument(
        "--limit", type=_limit, default=20, metavar="N", help=f"rows, 1..{MAX_TELEMETRY_LIMIT}"
    )
    leaf.set_defaults(action="telemetry")

    tokens = actions.add_parser("tokens", help="operator API tokens with roles (admin)")
    token_actions = tokens.add_subparsers(dest="tokens_command", metavar="ACTION", required=True)
    leaf = token_actions.add_parser(
        "create", parents=[common], help="create a token and print it (shown once)"
    )
    leaf.add_argument("name", metavar="NAME", help="unique; shown as the actor in the audit log")
    leaf.add_argument("--role", required=True, choices=ROLES, help="what the token may do")
    leaf.add_argument(
        "--expires-in",
        type=_duration,
        default=None,
        metavar="D",
        help="refused after: seconds or 30m / 12h / 7d (at most 2 years; default never)",
    )
    leaf.set_defaults(action="tokens_create")
    leaf = token_actions.add_parser("list", parents=[common], help="list tokens (never secrets)")
    leaf.set_defaults(action="tokens_list")
    leaf = token_actions.add_parser("revoke", parents=[common], help="revoke a token by id")
    leaf.add_argument("token_id", metavar="ID", type=_positive)
    leaf.set_defaults(action="tokens_revoke")
    leaf = token_actions.add_parser(
        "rotate", parents=[common], help="a new secret for a token (the old one stops at once)"
    )
    leaf.add_argument("token_id", metavar="ID", type=_positive)
    leaf.add_argument(
        "--expires-in",
        type=_duration,
        default=None,
        metavar="D",
        help="new lifetime (default: kept)",
    )
    leaf.set_defaults(action="tokens_rotate")

    enrollment = actions.add_parser(
        "enrollment-tokens", help="tokens devices trade for credentials (edgefleet agent enroll)"
    )
    enrollment_actions = enrollment.add_subparsers(
        dest="enrollment_command", metavar="ACTION", required=True
    )
    leaf = enrollment_actions.add_parser(
        "create", parents=[common], help="create an enrollment token (shown once)"
    )
    leaf.add_argument(
        "--expires-in",
        type=_duration,
        default=24 * 3600,
        metavar="D",
        help="lifetime: seconds or 30m / 12h / 7d (default 24h, at most 30d)",
    )
    leaf.add_argument("--uses", type=_positive, default=1, metavar="N", help="devices (default 1)")
    leaf.add_argument("--class", dest="device_class", metavar="C", help="class for its devices")
    leaf.add_argument(
        "--tag", dest="tags", action="append", default=[], metavar="T", help="repeatable"
    )
    leaf.set_defaults(action="enrollment_create")
    leaf = enrollment_actions.add_parser(
        "list", parents=[common], help="list enrollment tokens and their state (never secrets)"
    )
    leaf.add_argument("--active", action="store_true", help="only those that can still enroll")
    leaf.set_defaults(action="enrollment_list")
    leaf = enrollment_actions.add_parser(
        "revoke", parents=[common], help="revoke an enrollment token by id"
    )
    leaf.add_argument("token_id", metavar="ID", type=_positive)
    leaf.set_defaults(action="enrollment_revoke")

    leaf = actions.add_parser(
        "drift", parents=[common], help="drift verdicts per model version, and recent alerts"
    )
    leaf.add_argument("--limit", type=_positive, default=20, metavar="N", help="alerts shown")
    leaf.set_defaults(action="drift")
    quality_cli.add_parser(actions, common)

    leaf = actions.add_parser("audit", parents=[common], help="the audit log, newest first")
    leaf.add_argument("--actor", metavar="A", help="only this actor (token name, bootstrap, ...)")
    leaf.add_argument("--since", metavar="ISO", help="only at or after, e.g. 2026-11-23T10:00Z")
    leaf.add_argument(
        "--limit", type=_limit, default=50, metavar="N", help=f"rows, 1..{MAX_TELEMETRY_LIMIT}"
    )
    leaf.set_defaults(action="audit")

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


def _top(text: str) -> int:
    try:
        value = int(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from err
    if not 0 <= value <= 50:
        raise argparse.ArgumentTypeError("must be between 0 and 50")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from err
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(text: str) -> int:
    """Seconds from '3600', '30m', '12h' or '7d'."""
    value = text.strip().lower()
    unit = _UNITS.get(value[-1:], 0)
    number = value[:-1] if unit else value
    if not number.isdigit():
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 3600, 30m, 12h, 7d)")
    return int(number) * (unit or 1)


def _sha256(text: str) -> str:
    value = text.strip().lower()
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise argparse.ArgumentTypeError("must be 64 hexadecimal characters")
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
