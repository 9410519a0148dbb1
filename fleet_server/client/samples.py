"""The ``edgefleet fleet capture ...`` and ``edgefleet fleet samples ...`` commands (the parser
is in :mod:`.samples_cli`)."""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path, PurePosixPath
from typing import Any

from edgefleet.contract.parsing import canonical_json
from fleet_server.client.api import FleetClient, FleetClientError, JsonObject
from fleet_server.client.labelstudio import LabelStudioError, labels_from_export, read_export
from fleet_server.client.render import Column, Output, plain, when

#: The snapshot manifest's file name in an exported directory (``sha256sum`` of it is the
#: dataset_sha256).
SNAPSHOT_FILE = "snapshot.json"
#: Labels sent per bulk request (the server takes at most 10,000).
BULK = 5000

SAMPLE_COLUMNS: list[Column] = [
    ("id", lambda s: s.get("id")),
    ("device", lambda s: s.get("device_id")),
    ("model", lambda s: f"{plain(s.get('model'))}@{plain(s.get('version'))}"),
    ("reason", lambda s: s.get("reason")),
    ("predicted", lambda s: s.get("predicted")),
    ("confidence", lambda s: s.get("confidence")),
    ("label", lambda s: s.get("label") or (f"{len(s['boxes'])} boxes" if s.get("boxes") else "")),
    ("captured", lambda s: when(s.get("captured_at"))),
]


def capture_set(client: FleetClient, args: argparse.Namespace, out: Output) -> None:
    policy: dict[str, Any] = {}
    for key in ("low_confidence", "margin", "outside_reference", "random"):
        if getattr(args, key) is not None:
            policy[key] = getattr(args, key)
    if args.classes:
        policy["classes"] = args.classes
    for key in ("max_per_hour", "max_per_day", "max_side", "jpeg_quality"):
        if getattr(args, key) is not None:
            policy[key] = getattr(args, key)
    if args.max_mb_per_day is not None:
        policy["max_bytes_per_day"] = int(args.max_mb_per_day * 1_000_000)
    shown = client.set_capture(args.name, args.version, policy)
    _show_policy(shown, out)


def capture_show(client: FleetClient, args: argparse.Namespace, out: Output) -> None:
    _show_policy(client.get_capture(args.name, args.version), out)


def _show_policy(shown: JsonObject, out: Output) -> None:
    if out.json_mode:
        out.json(shown)
        return
    where = f"{plain(shown.get('model'))}@{plain(shown.get('version') or '*')}"
    policy = shown.get("policy") or {}
    fields = [("effective from", shown.get("effective_from") or "none (captures nothing)")]
    fields += [(key, value) for key, value in sorted(policy.items())]
    if shown.get("republished"):
        fields.append(("republished to", f"{shown['republished']} devices"))
    out.record(f"capture policy {where}", fields)


def samples_list(client: FleetClient, args: argparse.Namespace, out: Output) -> None:
    page = client.list_samples(
        model=args.model,
        version=args.version,
        device=args.device,
        reason=args.reason,
        labelled="false" if args.unlabelled else None,
        limit=max(1, min(args.limit, 1000)),
    )
    if out.json_mode:
        out.json(page)
        return
    out.table("samples", SAMPLE_COLUMNS, page.get("items") or [])
    if page.get("next_cursor"):
        out.line("(more: narrow the filters or use the API's cursor)")


def samples_get(client: FleetClient, args: argparse.Namespace, out: Output) -> None:
    meta = client.get_sample(args.sample_id)
    written = client.sample_content(args.sample_id, args.output)
    if _sha256(args.output) != meta.get("sha256"):
        raise FleetClientError(0, f"{args.output}: the content does not match its sha256")
    if out.json_mode:
        out.json(meta | {"written": str(args.output)})
    else:
        out.line(f"sample {args.sample_id}: {written} bytes written to {args.output}")


def samples_label(client: FleetClient, args: argparse.Namespace, out: Output) -> None:
    row = client.label_sample(args.sample_id, {"label": args.label})
    if out.json_mode:
        out.json(row)
    else:
        out.line(f"sample {row.get('id')} labelled {plain(row.get('label'))}")


def samples_import(client: FleetClient, args: argparse.Namespace, out: Output) -> None:
    try:
        imported = labels_from_export(read_export(args.file))
    except LabelStudioError as err:
        raise FleetClientError(0, str(err)) from err
    done = 0
    for start in range(0, len(imported.labels), BULK):
        done += int(client.label_samples(imported.labels[start : start + BULK])["labelled"])
    result = {"labelled": done, "skipped_without_annotation": imported.skipped}
    if out.json_mode:
        out.json(result)
    else:
        out.line(f"labelled {done} samples ({imported.skipped} tasks had no annotation)")


def samples_export(client: FleetClient, args: argparse.Namespace, out: Output) -> None:
    root: Path = args.output
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FleetClientError(0, f"{root} exists and is not an empty directory")
    snapshot = export_snapshot(
        client,
        root,
        args.name,
        format=args.format,
        version=args.version,
        device=args.device,
        reason=args.reason,
    )
    manifest = snapshot["manifest"]
    result = {"dataset_sha256": snapshot["sha256"], "dir": str(root), **manifest["counts"]}
    if out.json_mode:
        out.json(result)
        return
    counts = manifest["counts"]
    out.line(f"{counts['samples']} samples ({len(manifest['files'])} files) written to {root}")
    out.line(f"per class: {json.dumps(counts['per_class'])}")
    out.line(f"dataset_sha256: {snapshot['sha256']} (sha256 of {SNAPSHOT_FILE})")


def export_snapshot(client: FleetClient, root: Path, model: str, **filters: Any) -> JsonObject:
    """Write a dataset snapshot of ``model``'s labelled samples under ``root`` (every file
    checked against the manifest's sha256); the server's snapshot (``manifest``, ``sha256``)."""
    snapshot = client.snapshot(model, **filters)
    manifest = snapshot.get("manifest")
    documents = snapshot.get("documents") or {}
    if not isinstance(manifest, dict) or not isinstance(documents, dict):
        raise FleetClientError(0, "the server's snapshot has no manifest")
    if hashlib.sha256(canonical_json(manifest)).hexdigest() != snapshot.get("sha256"):
        raise FleetClientError(0, "the snapshot manifest does not match its sha256")
    root.mkdir(parents=True, exist_ok=True)
    for entry in manifest.get("files") or []:
        target = _inside(root, str(entry.get("path")))
        target.parent.mkdir(parents=True, exist_ok=True)
        if "sample" in entry:
            client.sample_content(int(entry["sample"]), target)
        else:
            target.write_bytes(canonical_json(documents.get(entry["path"])))
        if _sha256(target) != entry.get("sha256"):
            raise FleetClientError(0, f"{target}: content does not match the manifest's sha256")
    (root / SNAPSHOT_FILE).write_bytes(canonical_json(manifest))
    return snapshot


def _inside(root: Path, path: str) -> Path:
    """A manifest path as a file under ``root``: relative, no '..' (the server is untrusted)."""
    pure = PurePosixPath(path)
    if pure.is_absolute() or ".." in pure.parts or not pure.parts:
        raise FleetClientError(0, f"the snapshot lists an unsafe path {path[:120]!r}")
    return root.joinpath(*pure.parts)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 16), b""):
            digest.update(chunk)
    return digest.hexdigest()


SAMPLE_COMMANDS = {
    "capture_set": capture_set,
    "capture_show": capture_show,
    "samples_list": samples_list,
    "samples_get": samples_get,
    "samples_label": samples_label,
    "samples_import": samples_import,
    "samples_export": samples_export,
}
