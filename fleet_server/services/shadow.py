"""Shadow models on devices: put one on a device, take it off, and sum what devices reported.

Setting or removing a shadow writes ``device_shadow`` and republishes the device's desired
state through the one builder (:func:`~fleet_server.services.desired.desired_state`, via
:func:`~fleet_server.services.desired.republish`): the next revision carries the shadow (or
no longer does), with the same serving model, so the agent installs nothing it serves.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from fleet_server.models import Device, DeviceShadow, ShadowReportRow, ShadowRequest
from fleet_server.models import ModelVersion as ModelVersionRow
from fleet_server.models.shadow import DeviceShadowPublic, ShadowGroup, ShadowSummary
from fleet_server.models.types import utcnow
from fleet_server.services.desired import CHUNK, DesiredPublisher, republish
from fleet_server.services.errors import Conflict, NotFound

log = logging.getLogger(__name__)

#: Reports summed per request, newest first: a bound on what one GET reads.
MAX_REPORTS = 100_000


def set_shadow(
    *,
    session: Session,
    publisher: DesiredPublisher,
    public_url: str,
    device_id: str,
    request: ShadowRequest,
) -> DeviceShadowPublic:
    """Ask ``device_id`` to run ``request``'s version as its shadow, and publish it."""
    device = session.get(Device, device_id)
    if device is None:
        raise NotFound(f"device {device_id[:80]!r} not found")
    if session.get(ModelVersionRow, (request.model, request.version)) is None:
        raise NotFound(f"model {request.model}@{request.version} not found")
    if device.desired_name is None:
        raise Conflict(f"device {device_id!r} is assigned no model: a shadow runs beside one")
    row = session.get(DeviceShadow, device_id) or DeviceShadow(
        device_id=device_id,
        model_name=request.model,
        model_version=request.version,
        sample_rate=request.sample_rate,
        cpu_budget=request.cpu_budget,
    )
    row.model_name, row.model_version = request.model, request.version
    row.sample_rate, row.cpu_budget = request.sample_rate, request.cpu_budget
    row.set_at = utcnow()
    session.add(row)
    session.commit()
    session.refresh(row)
    republish(session=session, publisher=publisher, public_url=public_url, device_ids=[device_id])
    log.info(
        "shadow set",
        extra={"device_id": device_id, "model": f"{request.model}@{request.version}"},
    )
    return DeviceShadowPublic.of(row)


def clear_shadow(
    *, session: Session, publisher: DesiredPublisher, public_url: str, device_id: str
) -> None:
    """Take the shadow off ``device_id`` (the agent unloads it); NotFound if it has none."""
    row = session.get(DeviceShadow, device_id)
    if row is None:
        raise NotFound(f"device {device_id[:80]!r} has no shadow")
    session.delete(row)
    session.commit()
    republish(session=session, publisher=publisher, public_url=public_url, device_ids=[device_id])
    log.info("shadow removed", extra={"device_id": device_id})


def _rows_of(session: Session, device_ids: Sequence[str]) -> dict[str, DeviceShadow]:
    ids = sorted(set(device_ids))
    rows: dict[str, DeviceShadow] = {}
    for start in range(0, len(ids), CHUNK):
        query = select(DeviceShadow).where(
            col(DeviceShadow.device_id).in_(ids[start : start + CHUNK])
        )
        rows.update((row.device_id, row) for row in session.exec(query))
    return rows


def place_shadows(
    *,
    session: Session,
    device_ids: Sequence[str],
    model: tuple[str, str],
    sample_rate: float,
    cpu_budget: float,
    at: datetime,
) -> list[str]:
    """Make ``model`` the shadow of every one of ``device_ids`` (a rollout's shadow stage), in
    the caller's transaction; returns the devices whose row changed (their desired state needs
    the next revision: :func:`~fleet_server.services.desired.write_desired` with ``Keep``)."""
    rows = _rows_of(session, device_ids)
    changed = []
    for device_id in sorted(set(device_ids)):
        row = rows.get(device_id)
        wanted = (model[0], model[1], sample_rate, cpu_budget)
        if (
            row is not None
            and (row.model_name, row.model_version, row.sample_rate, row.cpu_budget) == wanted
        ):
            continue
        if row is None:
            row = DeviceShadow(
                device_id=device_id,
                model_name=model[0],
                model_version=model[1],
                sample_rate=sample_rate,
                cpu_budget=cpu_budget,
                set_at=at,
            )
        row.model_name, row.model_version = model
        row.sample_rate, row.cpu_budget, row.set_at = sample_rate, cpu_budget, at
        session.add(row)
        changed.append(device_id)
    return changed


def remove_shadows(
    *, session: Session, device_ids: Sequence[str], model: tuple[str, str]
) -> list[str]:
    """Take shadow ``model`` off ``device_ids`` (a shadow of another version is left alone), in
    the caller's transaction; returns the devices whose row went (they need the next revision)."""
    wanted = set(device_ids)
    removed = []
    for row in [r for r in session.new if isinstance(r, DeviceShadow)]:  # added, not flushed
        if row.device_id in wanted and (row.model_name, row.model_version) == model:
            session.expunge(row)
            removed.append(row.device_id)
    for device_id, row in sorted(_rows_of(session, device_ids).items()):
        if (row.model_name, row.model_version) == model:
            session.delete(row)
            removed.append(device_id)
    return sorted(set(removed))


def may_download(*, session: Session, device_id: str, name: str, version: str) -> bool:
    """Whether ``name@version`` is the device's shadow (it may fetch that bundle too)."""
    row = session.get(DeviceShadow, device_id)
    return row is not None and (row.model_name, row.model_version) == (name, version)


def summarise(*, session: Session, name: str, version: str) -> ShadowSummary:
    """What devices reported about shadow ``name@version``: the fleet and per device class."""
    if session.get(ModelVersionRow, (name, version)) is None:
        raise NotFound(f"model {name}@{version} not found")
    query = (
        select(ShadowReportRow, Device.device_class)
        .join(Device, col(Device.device_id) == col(ShadowReportRow.device_id))
        .where(col(ShadowReportRow.model_name) == name)
        .where(col(ShadowReportRow.model_version) == version)
        .order_by(col(ShadowReportRow.ts).desc())
        .limit(MAX_REPORTS)
    )
    fleet = _Sum()
    classes: dict[str, _Sum] = defaultdict(_Sum)
    for row, device_class in session.exec(query):
        fleet.add(row)
        classes[device_class or ""].add(row)
    return ShadowSummary(
        model=name,
        version=version,
        fleet=fleet.group(),
        device_classes={key: value.group() for key, value in sorted(classes.items())},
    )


def summarise_devices(
    *,
    session: Session,
    name: str,
    version: str,
    device_ids: Sequence[str],
    since: datetime,
) -> dict[str, ShadowGroup]:
    """What ``device_ids`` reported about shadow ``name@version`` since ``since``, per device
    class (a class-less device counts under ``""``): a rollout's shadow stage reads this."""
    classes: dict[str, _Sum] = defaultdict(_Sum)
    ids = sorted(set(device_ids))
    read = 0
    for start in range(0, len(ids), CHUNK):
        query = (
            select(ShadowReportRow, Device.device_class)
            .join(Device, col(Device.device_id) == col(ShadowReportRow.device_id))
            .where(col(ShadowReportRow.device_id).in_(ids[start : start + CHUNK]))
            .where(col(ShadowReportRow.model_name) == name)
            .where(col(ShadowReportRow.model_version) == version)
            .where(col(ShadowReportRow.ts) >= since)
            .order_by(col(ShadowReportRow.ts).desc())
            .limit(MAX_REPORTS - read)
        )
        for row, device_class in session.exec(query):
            classes[device_class or ""].add(row)
            read += 1
        if read >= MAX_REPORTS:
            break
    return {key: value.group() for key, value in sorted(classes.items())}


class _Sum:
    """Reports summed: counts add up; agreement and p95 latencies are weighted by paired."""

    def __init__(self) -> None:
        self.devices: set[str] = set()
        self.reports = self.paired = self.skipped = self.disagreements = 0
        self.serving_p95 = self.shadow_p95 = 0.0
        self.latency_weight = 0
        self.serving_cpu = self.shadow_cpu = 0.0
        self.errors: dict[str, int] = defaultdict(int)

    def add(self, row: ShadowReportRow) -> None:
        figures: dict[str, Any] = row.figures or {}
        self.devices.add(row.device_id)
        self.reports += 1
        self.paired += row.paired
        self.skipped += row.skipped
        self.disagreements += row.disagreements
        serving = _number(figures.get("serving_p95_ms"))
        shadow = _number(figures.get("shadow_p95_ms"))
        if row.paired and serving is not None and shadow is not None:
            self.serving_p95 += serving * row.paired
            self.shadow_p95 += shadow * row.paired
            self.latency_weight += row.paired
        self.serving_cpu += _number(figures.get("serving_cpu_ms")) or 0.0
        self.shadow_cpu += _number(figures.get("shadow_cpu_ms")) or 0.0
        errors = figures.get("errors")
        if isinstance(errors, dict):
            for kind, n in errors.items():
                if isinstance(n, int):
                    self.errors[str(kind)] += n

    def group(self) -> ShadowGroup:
        weight = self.latency_weight
        serving = self.serving_p95 / weight if weight else None
        shadow = self.shadow_p95 / weight if weight else None
        return ShadowGroup(
            devices=len(self.devices),
            reports=self.reports,
            paired=self.paired,
            skipped=self.skipped,
            disagreements=self.disagreements,
            agreement=(self.paired - self.disagreements) / self.paired if self.paired else None,
            serving_p95_ms=serving,
            shadow_p95_ms=shadow,
            latency_ratio_p95=shadow / serving if shadow is not None and serving else None,
            cpu_ratio=self.shadow_cpu / self.serving_cpu if self.serving_cpu > 0 else None,
            errors=dict(self.errors),
        )


def _number(value: object) -> float | None:
    """A JSON number as a float (None for anything else: the column is the device's JSON)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)
