"""``edgefleet fleet models compare MODEL A B --data DATA [--labels FILE] [--json]``.

Downloads both versions' bundles from the server (the operator's bundle download), unpacks and
verifies them, runs both on the same inputs on this machine (:mod:`fleet_server.compare_engine`),
prints the result and posts it to the server, where it is kept with B (the candidate) and read
by ``rollouts create --require-compare``. ``--data fleet`` exports MODEL's labelled samples
(the dataset snapshot of ``samples export``) and compares on them.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from fleet_server.client.api import FleetClient, FleetClientError, JsonObject, one_line
from fleet_server.client.render import Column, Output, plain

#: ``--data fleet``: compare on the fleet's labelled samples of the model.
FLEET_DATA = "fleet"

DISAGREEMENT_COLUMNS: list[Column] = [
    ("INPUT", lambda d: d.get("input")),
    ("SCORE", lambda d: d.get("score")),
    ("A SAID", lambda d: d.get("baseline")),
    ("B SAID", lambda d: d.get("candidate")),
    ("LABEL", lambda d: d.get("label")),
]


def models_compare(client: FleetClient, args: argparse.Namespace, out: Output) -> None:
    if args.baseline == args.candidate:
        raise FleetClientError(0, "A and B are the same version")
    try:
        from fleet_server.compare_engine import CompareError, compare_artifacts
    except ImportError as err:  # the agent extra (numpy, onnxruntime, opencv) is missing
        raise FleetClientError(
            0, f"compare needs the agent runtime: pip install 'edgefleet[agent,cli]' ({err.name})"
        ) from err
    with tempfile.TemporaryDirectory(prefix="edgefleet-compare-") as tmp:
        work = Path(tmp)
        a = _artifact(client, args.name, args.baseline, work / "a")
        b = _artifact(client, args.name, args.candidate, work / "b")
        data, kind, sha = _data(client, args, work / "fleet")
        try:
            result = compare_artifacts(
                baseline=a,
                candidate=b,
                data=data,
                labels=args.labels,
                source_kind=kind,
                limit=args.limit,
                top=args.top,
            )
        except CompareError as err:
            raise FleetClientError(0, one_line(str(err))) from err
    if sha is not None:
        result["data"]["sha256"] = sha
    stored = client.post_comparison(args.name, args.candidate, result)
    if out.json_mode:
        out.json(stored)
        return
    show(stored, out)


def _artifact(client: FleetClient, name: str, version: str, where: Path) -> Path:
    from edgefleet.artifact import ArtifactError, unpack_bundle

    where.mkdir()
    bundle = where / "bundle.tar.gz"
    client.download_bundle(name, version, bundle)
    try:
        unpack_bundle(bundle, where / "artifact")
    except (ArtifactError, OSError) as err:
        raise FleetClientError(0, f"{name}@{version}: bad bundle: {one_line(str(err))}") from err
    finally:
        bundle.unlink(missing_ok=True)
    return where / "artifact"


def _data(
    client: FleetClient, args: argparse.Namespace, where: Path
) -> tuple[Path, str | None, str | None]:
    """(path to read, the source kind when not the file's own, the dataset sha256 if fleet)."""
    if str(args.data) != FLEET_DATA:
        return Path(args.data), None, None
    from fleet_server.client.samples import export_snapshot

    snapshot = export_snapshot(client, where, args.name, format="imagefolder")
    if not snapshot["manifest"].get("counts", {}).get("samples"):
        raise FleetClientError(0, f"the fleet has no labelled samples of {args.name}")
    return where, FLEET_DATA, str(snapshot["sha256"])


def _pct(value: Any) -> str:
    return f"{100 * float(value):.1f} %" if isinstance(value, int | float) else "-"


def show(stored: JsonObject, out: Output) -> None:
    """A stored comparison for people: headline figures, then the worst inputs."""
    r = stored.get("result") or {}
    data, latency = r.get("data") or {}, r.get("latency") or {}
    fields: list[tuple[str, Any]] = [
        ("A (baseline)", stored.get("baseline_version")),
        ("B (candidate)", stored.get("candidate_version")),
        ("task", r.get("task")),
        ("data", f"{plain(data.get('kind'))} {plain(data.get('name'))} ({r.get('samples')} rows)"),
        ("agreement", _pct(r.get("agreement"))),
    ]
    fields += [(k, plain(v)) for k, v in sorted((r.get("measures") or {}).items())]
    labelled = r.get("labelled")
    if isinstance(labelled, dict):
        for key in ("accuracy", "macro_f1"):
            a, b = labelled["baseline"][key], labelled["candidate"][key]
            fields.append((key, f"A {_pct(a)}  B {_pct(b)}  Δ {100 * (b - a):+.1f} pt"))
        fields.append(("labelled rows", labelled.get("samples")))
    else:
        fields.append(("labelled", "no labels"))
    fields.append(
        (
            "latency (median, 1 thread)",
            f"A {plain(latency.get('baseline_ms'))} ms  B {plain(latency.get('candidate_ms'))} ms"
            f"  ×{plain(latency.get('ratio'))} on {plain(latency.get('host'))} "
            f"({plain(latency.get('arch'))})",
        )
    )
    fields.append(("stored as", f"comparison {stored.get('id')}"))
    name = f"{plain(stored.get('model'))}: {plain(stored.get('baseline_version'))} vs " + plain(
        stored.get("candidate_version")
    )
    out.record(f"compare {name}", fields)
    out.table("inputs where they disagree most", DISAGREEMENT_COLUMNS, r.get("disagreements") or [])


def models_comparison(client: FleetClient, args: argparse.Namespace, out: Output) -> None:
    listed = client.comparisons(args.name, args.version)
    if out.json_mode:
        out.json(listed)
        return
    latest = listed.get("latest")
    if not isinstance(latest, dict):
        out.line(f"{plain(args.name)}@{plain(args.version)} has no stored comparison")
        return
    show(latest, out)
    if len(listed.get("items") or []) > 1:
        out.line(f"({len(listed['items'])} stored; --json lists them all)")


COMPARE_COMMANDS = {"models_compare": models_compare, "models_comparison": models_comparison}
