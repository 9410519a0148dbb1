"""The drift job's input half: sum telemetry's input statistics and class counts into
``drift_input_bucket`` (whole fleet, per device class, per tag), and build what the ``input_*``
detectors compare them with — the manifest's ``reference_stats``.

Segments use the device's class and tags *now* (when the bucket is summed), not when the
telemetry was sent: a device re-tagged mid-window moves its later telemetry only.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, func, select

from fleet_server.models import Device, DriftInputBucket, ModelVersion
from fleet_server.services.drift.aggregate import Aggregate

#: The whole fleet's segment.
FLEET = ""

Row = tuple[str, dict[str, Any] | None, datetime, dict[str, Any] | None, dict[str, int] | None]


def segments_of(device: Device | None) -> list[str]:
    if device is None:
        return [FLEET]
    found = [FLEET]
    if device.device_class:
        found.append(f"class={device.device_class}")
    found.extend(f"tag={tag}" for tag in device.tags)
    return found


def summarise_inputs(
    session: Session, rows: Sequence[Row], bucket_of: Any, *, segments: bool
) -> None:
    """Add the input statistics of telemetry ``rows`` to their buckets (in the caller's
    transaction, so they move with the cursor). v1 telemetry (no inputs, no class counts)
    adds nothing."""
    rows = [r for r in rows if r[3] or r[4]]
    if not rows:
        return
    devices = {
        d.device_id: d
        for d in session.exec(select(Device).where(col(Device.device_id).in_({r[0] for r in rows})))
    }
    sums: dict[tuple[str, str, str, datetime], Aggregate] = defaultdict(Aggregate)
    for device_id, model, received_at, inputs, class_counts in rows:
        if not isinstance(model, dict) or "name" not in model or "version" not in model:
            continue
        bucket = bucket_of(received_at)
        wanted = segments_of(devices.get(device_id)) if segments else [FLEET]
        for segment in wanted:
            total = sums[(model["name"], model["version"], segment, bucket)]
            if inputs:
                total.add_inputs(
                    int(inputs.get("samples", 0)),
                    [list(map(int, h)) for h in inputs.get("channel_histograms", [])],
                    int(inputs.get("outside_reference", 0)),
                    {},
                )
            total.add_inputs(0, [], 0, {str(k): int(v) for k, v in (class_counts or {}).items()})
    for (name, version, segment, bucket_start), add in sums.items():
        row = session.get(DriftInputBucket, (name, version, segment, bucket_start))
        if row is None:
            row = DriftInputBucket(
                model_name=name, model_version=version, segment=segment, bucket_start=bucket_start
            )
        total = _of(row)
        total.add_inputs(
            add.input_samples, add.input_histograms, add.outside_reference, add.class_counts
        )
        row.input_samples, row.outside_reference = total.input_samples, total.outside_reference
        row.input_histograms, row.class_counts = total.input_histograms, total.class_counts
        session.add(row)


def _of(row: DriftInputBucket) -> Aggregate:
    total = Aggregate()
    total.add_inputs(
        row.input_samples,
        [list(h) for h in row.input_histograms],
        row.outside_reference,
        dict(row.class_counts),
    )
    return total


def segments(session: Session, name: str, version: str, since: datetime) -> list[str]:
    return list(
        session.exec(
            select(DriftInputBucket.segment)
            .where(
                DriftInputBucket.model_name == name,
                DriftInputBucket.model_version == version,
                col(DriftInputBucket.bucket_start) >= since,
            )
            .distinct()
            .order_by(col(DriftInputBucket.segment))
        ).all()
    )


def first_bucket(session: Session, name: str, version: str, segment: str) -> datetime | None:
    return session.exec(
        select(func.min(DriftInputBucket.bucket_start)).where(
            DriftInputBucket.model_name == name,
            DriftInputBucket.model_version == version,
            DriftInputBucket.segment == segment,
        )
    ).one()


def summed(
    session: Session,
    name: str,
    version: str,
    segment: str,
    start: datetime,
    end: datetime | None,
    labels: Sequence[str],
) -> Aggregate:
    query = select(DriftInputBucket).where(
        DriftInputBucket.model_name == name,
        DriftInputBucket.model_version == version,
        DriftInputBucket.segment == segment,
        col(DriftInputBucket.bucket_start) >= start,
    )
    if end is not None:
        query = query.where(col(DriftInputBucket.bucket_start) < end)
    total = Aggregate()
    for row in session.exec(query):
        total.add_inputs(
            row.input_samples,
            [list(h) for h in row.input_histograms],
            row.outside_reference,
            _named(row.class_counts.items(), labels),
        )
    return total


def _named(counts: Iterable[tuple[str, int]], labels: Sequence[str]) -> dict[str, int]:
    """Class keys by label: an index key ('3') becomes the manifest's label when it has one."""
    named: dict[str, int] = {}
    for key, count in counts:
        if key.isdigit() and int(key) < len(labels):
            key = labels[int(key)]
        named[key] = named.get(key, 0) + int(count)
    return named


def manifest_reference(session: Session, name: str, version: str) -> tuple[Aggregate, list[str]]:
    """The manifest's reference_stats as an aggregate (empty when it has none) and its labels.

    ``output_distribution`` (class frequencies by index) becomes counts over the rows the
    converter measured, so the class-shift null accounts for the reference being a sample.
    """
    row = session.exec(
        select(ModelVersion).where(ModelVersion.name == name, ModelVersion.version == version)
    ).first()
    manifest = row.manifest if row is not None else {}
    labels = [str(x) for x in manifest.get("labels") or []]
    stats = manifest.get("reference_stats") or {}
    reference = Aggregate()
    samples = int(stats.get("samples") or 0)
    histograms = [list(map(int, h)) for h in stats.get("channel_histograms") or []]
    if samples and histograms:
        reference.add_inputs(samples, histograms, 0, {})
        reference.source = "manifest"
    distribution = [float(x) for x in stats.get("output_distribution") or []]
    if samples and distribution and sum(distribution) > 0:
        total = sum(distribution)
        reference.class_counts = _named(
            ((str(i), round(samples * share / total)) for i, share in enumerate(distribution)),
            labels,
        )
        reference.class_source = "manifest"
    return reference, labels
