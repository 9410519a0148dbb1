"""One function per ``edgefleet fleet`` command: call the API, hand the result to the output."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from fleet_server.client.api import FleetClient
from fleet_server.client.render import (
    DEVICE_COLUMNS,
    MODEL_COLUMNS,
    TELEMETRY_COLUMNS,
    Output,
    device_fields,
    model_fields,
    plain,
    short_hash,
)
from fleet_server.client.rollouts import ROLLOUT_COMMANDS

Command = Callable[[FleetClient, argparse.Namespace, Output], None]


def devices_list(client: FleetClient, args: argparse.Namespace, out: Output) -> None:
    devices = client.list_devices()
    if out.json_mode:
        out.json(devices)
    else:
        out.table("devices", DEVICE_COLUMNS, devices)


def devices_show(client: FleetClient, args: argparse.Namespace, out: Output) -> None:
    device = client.get_device(args.device_id)
    if out.json_mode:
        out.json(device)
    else:
        out.record(f"device {plain(device.get('device_id'))}", device_fields(device))


def devices_add(client: FleetClient, args: argparse.Namespace, out: Output) -> None:
    created = client.add_device(args.device_id, device_class=args.device_class, tags=args.tags)
    if out.json_mode:
        out.json(created)
        return
    out.line(f"registered device {plain(created.get('device_id'))}; its token (shown once):")
    out.line(plain(created.get("token"), 4096))


def models_push(client: FleetClient, args: argparse.Namespace, out: Output) -> None:
    model = client.push_model(args.path)
    if out.json_mode:
        out.json(model)
        return
    signed = "signed" if model.get("signed") else "unsigned"
    out.line(
        f"registered {plain(model.get('name'))}@{plain(model.get('version'))} "
        f"({plain(model.get('size'))} bytes, sha256 {short_hash(model.get('sha256'))}…, {signed})"
    )


def models_list(client: FleetClient, args: argparse.Namespace, out: Output) -> None:
    models = client.list_models()
    if out.json_mode:
        out.json(models)
    else:
        out.table("models", MODEL_COLUMNS, models)


def models_show(client: FleetClient, args: argparse.Namespace, out: Output) -> None:
    model = client.get_model(args.name, args.version)
    if out.json_mode:
        out.json(model)
    else:
        out.record("model", model_fields(model))


def assign(client: FleetClient, args: argparse.Namespace, out: Output) -> None:
    result = client.assign(args.name, args.version, device_ids=args.device_ids or (), tag=args.tag)
    if out.json_mode:
        out.json(result)
        return
    devices = result.get("devices")
    devices = devices if isinstance(devices, list) else []
    ref = f"{plain(result.get('model'))}@{plain(result.get('version'))}"
    if not devices:
        out.warn(f"{ref}: the assignment matched no device")
        return
    out.line(f"{ref} → {len(devices)} device(s): {plain(devices, 2000)}")


def telemetry(client: FleetClient, args: argparse.Namespace, out: Output) -> None:
    rows = client.device_telemetry(args.device_id, limit=args.limit)
    if out.json_mode:
        out.json(rows)
    else:
        out.table(f"telemetry of {plain(args.device_id)}", TELEMETRY_COLUMNS, rows)


#: argparse ``action`` → command (hand-written, like every registry here).
COMMANDS: dict[str, Command] = {
    "devices_list": devices_list,
    "devices_show": devices_show,
    "devices_add": devices_add,
    "models_push": models_push,
    "models_list": models_list,
    "models_show": models_show,
    "assign": assign,
    "telemetry": telemetry,
    **ROLLOUT_COMMANDS,
}
