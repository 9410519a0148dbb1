"""``edgefleet fleet quality MODEL VERSION [--json]``: what labels say about a model version,
the random (unbiased) subset first, always named."""

from __future__ import annotations

import argparse
from typing import Any

from fleet_server.client.api import FleetClient, JsonObject
from fleet_server.client.render import Column, Output, plain


def _pct(value: Any) -> str:
    return f"{100 * float(value):.1f} %" if isinstance(value, int | float) else "-"


QUALITY_COLUMNS: list[Column] = [
    ("SUBSET", lambda r: r.get("subset")),
    ("DEVICE CLASS", lambda r: r.get("device_class")),
    ("SAMPLES", lambda r: r.get("samples", r.get("images"))),
    ("ACCURACY", lambda r: _pct(r.get("accuracy"))),
    (
        "95 % CI",
        lambda r: (
            f"{_pct(r['accuracy_ci']['low'])} – {_pct(r['accuracy_ci']['high'])}"
            if isinstance(r.get("accuracy_ci"), dict)
            else "-"
        ),
    ),  # fmt: skip
    ("MAP@0.5", lambda r: _pct(r.get("map50"))),
]


def quality(client: FleetClient, args: argparse.Namespace, out: Output) -> None:
    report = client.quality(args.name, args.version)
    if out.json_mode:
        out.json(report)
        return
    out.line(f"{plain(args.name)}@{plain(args.version)} ({plain(report.get('task'))})")
    rows: list[JsonObject] = []
    subsets = report.get("subsets")
    for name in ("random", "all"):
        subset = subsets.get(name) if isinstance(subsets, dict) else None
        if not isinstance(subset, dict):
            continue
        rows.append({**subset.get("overall", {}), "subset": name, "device_class": "(all)"})
        for device_class, values in (subset.get("by_device_class") or {}).items():
            rows.append({**values, "subset": name, "device_class": device_class})
    out.table("quality (random: unbiased samples; all: every labelled sample)", QUALITY_COLUMNS,
              rows)  # fmt: skip


QUALITY_COMMANDS = {"quality": quality}
