"""One function per ``edgefleet fleet`` command: call the API, hand the result to the output."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from fleet_server.client.api import FleetClient
from fleet_server.client.compare import COMPARE_COMMANDS
from fleet_server.client.pipelines import PIPELINE_COMMANDS
from fleet_server.client.quality import QUALITY_COMMANDS
from fleet_server.client.render import (
    ALERT_COLUMNS,
    AUDIT_COLUMNS,
    DEVICE_COLUMNS,
    DRIFT_COLUMNS,
    ENROLLMENT_COLUMNS,
    LINEAGE_COLUMNS,
    MODEL_COLUMNS,
    TELEMETRY_COLUMNS,
    TOKEN_COLUMNS,
    Output,
    device_fields,
    model_fields,
    plain,
    short_hash,
    signature,
    when,
)
from fleet_server.client.rollouts import ROLLOUT_COMMANDS
from fleet_server.client.samples import SAMPLE_COMMANDS

Command = Callable[[FleetClient, argparse.Namespace, Output], None]


def devices_list(client: FleetClient, args: argparse.Namespace, out: Output) -> None:
    devices = client.list_devices(decommissioned=args.decommissioned)
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


def devices_tag(client: FleetClient, args: argparse.Namespace, out: Output) -> None:
    device = client.tag_device(args.device_id, add=args.add, remove=args.remove)
    if out.json_mode:
        out.json(device)
        return
    out.line(f"device {plain(device.get('device_id'))} tags: {plain(device.get('tags'), 2000)}")


def devices_pin(client: FleetClient, args: argparse.Namespace, out: Output) -> None:
    device = client.pin_device(args.device_id, args.name, args.version)
    if out.json_mode:
        out.json(device)
        return
    out.line(
        f"device {plain(device.get('device_id'))} pinned to {plain(device.get('pinned'))} "
        "(assigned now; assignments skip it until unpinned)"
    )


def devices_unpin(client: FleetClient, args: argparse.Namespace, out: Output) -> None:
    device = client.unpin_device(args.device_id)
    if out.json_mode:
        out.json(device)
        return
    out.line(
        f"device {plain(device.get('device_id'))} unpinned "
        f"(desired stays {plain(device.get('desired'))})"
    )


def devices_remove(client: FleetClient, args: argparse.Namespace, out: Output) -> None:
    device = client.remove_device(args.device_id)
    if out.json_mode:
        out.json(device)
        return
    out.line(
        f"device {plain(device.get('device_id'))} decommissioned "
        f"{when(device.get('decommissioned_at'))}: its token and broker login are revoked; "
        "its history stays (devices list --decommissioned)"
    )


def tokens_create(client: FleetClient, args: argparse.Namespace, out: Output) -> None:
    created = client.create_token(args.name, args.role, expires_in_s=args.expires_in)
    if out.json_mode:
        out.json(created)
        return
    out.line(
        f"created {plain(created.get('role'))} token {plain(created.get('name'))} "
        f"(id {plain(created.get('id'))}); the token (shown once):"
    )
    out.line(plain(created.get("token"), 4096))


def tokens_list(client: FleetClient, args: argparse.Namespace, out: Output) -> None:
    tokens = client.list_tokens()
    if out.json_mode:
        out.json(tokens)
    else:
        out.table("tokens", TOKEN_COLUMNS, tokens)


def tokens_revoke(client: FleetClient, args: argparse.Namespace, out: Output) -> None:
    revoked = client.revoke_token(args.token_id)
    if out.json_mode:
        out.json(revoked)
        return
    out.line(f"revoked token {plain(revoked.get('name'))} (id {plain(revoked.get('id'))})")


def tokens_rotate(client: FleetClient, args: argparse.Namespace, out: Output) -> None:
    rotated = client.rotate_token(args.token_id, expires_in_s=args.expires_in)
    if out.json_mode:
        out.json(rotated)
        return
    out.line(
        f"rotated token {plain(rotated.get('name'))} (id {plain(rotated.get('id'))}; expires "
        f"{when(rotated.get('expires_at'))}); the new token (shown once):"
    )
    out.line(plain(rotated.get("token"), 4096))


def enrollment_create(client: FleetClient, args: argparse.Namespace, out: Output) -> None:
    created = client.create_enrollment_token(
        expires_in_s=args.expires_in,
        uses=args.uses,
        device_class=args.device_class,
        tags=args.tags,
    )
    if out.json_mode:
        out.json(created)
        return
    out.line(
        f"enrollment token {plain(created.get('id'))}: {plain(created.get('uses'))} use(s), "
        f"expires {when(created.get('expires_at'))}; the token (shown once):"
    )
    out.line(plain(created.get("token"), 4096))


def enrollment_list(client: FleetClient, args: argparse.Namespace, out: Output) -> None:
    tokens = client.list_enrollment_tokens(active=args.active)
    if out.json_mode:
        out.json(tokens)
    else:
        out.table("enrollment tokens", ENROLLMENT_COLUMNS, tokens)


def enrollment_revoke(client: FleetClient, args: argparse.Namespace, out: Output) -> None:
    revoked = client.revoke_enrollment_token(args.token_id)
    if out.json_mode:
        out.json(revoked)
        return
    out.line(
        f"revoked enrollment token {plain(revoked.get('id'))} "
        f"({plain(revoked.get('uses_left'))} of {plain(revoked.get('uses'))} uses were left)"
    )


def drift(client: FleetClient, args: argparse.Namespace, out: Output) -> None:
    report = client.drift(limit=args.limit)
    if out.json_mode:
        out.json(report)
        return
    statuses = report.get("statuses")
    alerts = report.get("alerts")
    out.table("drift", DRIFT_COLUMNS, statuses if isinstance(statuses, list) else [])
    out.table("drift alerts", ALERT_COLUMNS, alerts if isinstance(alerts, list) else [])


def audit(client: FleetClient, args: argparse.Namespace, out: Output) -> None:
    rows = client.audit(actor=args.actor, since=args.since, limit=args.limit)
    if out.json_mode:
        out.json(rows)
    else:
        out.table("audit log", AUDIT_COLUMNS, rows)


def models_push(client: FleetClient, args: argparse.Namespace, out: Output) -> None:
    lineage = {
        key: value
        for key, value in (
            ("parent", args.parent),
            ("dataset_sha256", args.dataset_sha256),
            ("training_ref", args.training_ref),
        )
        if value is not None
    }
    model = client.push_model(args.path, lineage=lineage)
    if out.json_mode:
        out.json(model)
        return
    status = signature(model)
    label = {"verified": "signature verified", "unverified": "signature NOT verified"}
    out.line(
        f"registered {plain(model.get('name'))}@{plain(model.get('version'))} "
        f"({plain(model.get('size'))} bytes, sha256 {short_hash(model.get('sha256'))}…, "
        f"{label.get(status, status)})"
    )
    if status == "unverified":
        out.warn(
            f"the server trusts no key that verifies this signature (key id "
            f"{plain(model.get('signature_key_id'))}): rollouts refuse this version until it "
            "does (EDGEFLEET_TRUSTED_KEYS)"
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


def models_lineage(client: FleetClient, args: argparse.Namespace, out: Output) -> None:
    lineage = client.model_lineage(args.name, args.version)
    if out.json_mode:
        out.json(lineage)
        return
    chain = lineage.get("chain")
    rows = [e for e in chain if isinstance(e, dict)] if isinstance(chain, list) else []
    out.table(f"lineage of {plain(args.name)}@{plain(args.version)}", LINEAGE_COLUMNS, rows)
    if lineage.get("truncated"):
        out.warn("the chain stops early (depth limit, a cycle, or a parent no longer registered)")


def assign(client: FleetClient, args: argparse.Namespace, out: Output) -> None:
    result = client.assign(args.name, args.version, device_ids=args.device_ids or (), tag=args.tag)
    if out.json_mode:
        out.json(result)
        return
    devices = result.get("devices")
    devices = devices if isinstance(devices, list) else []
    skipped = result.get("skipped")
    ref = f"{plain(result.get('model'))}@{plain(result.get('version'))}"
    if isinstance(skipped, list) and skipped:
        out.warn(f"{ref}: skipped {len(skipped)} pinned device(s): {plain(skipped, 2000)}")
    incompatible = result.get("incompatible")
    if isinstance(incompatible, list) and incompatible:
        out.warn(
            f"{ref}: skipped {len(incompatible)} device(s) whose class cannot run its format: "
            f"{plain(incompatible, 2000)}"
        )
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
    "devices_tag": devices_tag,
    "devices_pin": devices_pin,
    "devices_unpin": devices_unpin,
    "devices_remove": devices_remove,
    "models_push": models_push,
    "models_list": models_list,
    "models_show": models_show,
    "models_lineage": models_lineage,
    "assign": assign,
    "telemetry": telemetry,
    "tokens_create": tokens_create,
    "tokens_list": tokens_list,
    "tokens_revoke": tokens_revoke,
    "tokens_rotate": tokens_rotate,
    "enrollment_create": enrollment_create,
    "enrollment_list": enrollment_list,
    "enrollment_revoke": enrollment_revoke,
    "audit": audit,
    "drift": drift,
    **ROLLOUT_COMMANDS,
    **QUALITY_COMMANDS,
    **SAMPLE_COMMANDS,
    **COMPARE_COMMANDS,
    **PIPELINE_COMMANDS,
}
