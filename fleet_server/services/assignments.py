"""Assigning a model version to devices (and pinning one): who gets which version. The write and
the publish are :mod:`fleet_server.services.desired`'s, as for rollouts."""

from __future__ import annotations

import logging

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlmodel import Session, col, select

from edgefleet.contract.pydantic_types import DeviceId, ModelName, ModelVersion
from fleet_server.models import Device
from fleet_server.models import ModelVersion as ModelVersionRow
from fleet_server.models.types import utcnow
from fleet_server.services.compat import can_run, cannot_run
from fleet_server.services.desired import DesiredPublisher, publish_desired, write_desired
from fleet_server.services.devices import is_pinned
from fleet_server.services.errors import NotFound, Unprocessable

log = logging.getLogger(__name__)


class AssignmentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: ModelName = Field(description="Model name.")
    version: ModelVersion = Field(description="Model version.")
    device_ids: list[DeviceId] = Field(
        default_factory=list, max_length=10_000, description="Devices to assign."
    )
    tag: str | None = Field(default=None, max_length=64, description="Also every device so tagged.")

    @model_validator(mode="after")
    def _targets(self) -> AssignmentCreate:
        if not self.device_ids and not self.tag:
            raise ValueError("give device_ids, a tag, or both")
        return self


class AssignmentPublic(BaseModel):
    model: str
    version: str
    devices: list[str] = Field(description="Devices now assigned this version.")
    skipped: list[str] = Field(
        default_factory=list, description="Targeted devices left alone because they are pinned."
    )
    incompatible: list[str] = Field(
        default_factory=list,
        description="Targeted devices left alone because their device class cannot run this "
        "artifact's format (e.g. an ONNX model for a 32-bit ARM board).",
    )


def assign_model(
    *,
    session: Session,
    publisher: DesiredPublisher,
    public_url: str,
    request: AssignmentCreate,
) -> AssignmentPublic:
    """Record the assignment per device (revision + 1), then publish each desired state."""
    model = session.get(ModelVersionRow, (request.model, request.version))
    if model is None:
        raise NotFound(f"model {request.model}@{request.version} not found")
    targets = set()
    for device_id in request.device_ids:
        found = session.get(Device, device_id)
        if found is None or found.decommissioned_at is not None:
            raise NotFound(f"device {device_id!r} not found")
        targets.add(device_id)
    if request.tag is not None:
        in_fleet = select(Device).where(col(Device.decommissioned_at).is_(None))
        tagged = [d.device_id for d in session.exec(in_fleet) if request.tag in d.tags]
        if not tagged:
            raise NotFound(f"no device has tag {request.tag!r}")
        targets.update(tagged)
    rows = session.exec(select(Device).where(col(Device.device_id).in_(sorted(targets)))).all()
    pinned = {d.device_id for d in rows if is_pinned(d)}
    incompatible = cannot_run([d for d in rows if d.device_id not in pinned], fmt=model.format)
    ids = sorted(targets - pinned - set(incompatible))
    if not ids:
        return AssignmentPublic(
            model=model.name,
            version=model.version,
            devices=[],
            skipped=sorted(pinned),
            incompatible=incompatible,
        )
    write_desired(
        session=session,
        device_ids=ids,
        model=(model.name, model.version),
        at=utcnow(),
        only_unpinned=True,
    )
    session.commit()
    publish_desired(session=session, publisher=publisher, public_url=public_url, device_ids=ids)
    log.info(
        "model assigned",
        extra={
            "model": f"{model.name}@{model.version}",
            "devices": ids,
            "skipped_pinned": sorted(pinned),
            "skipped_incompatible": incompatible,
        },
    )
    return AssignmentPublic(
        model=model.name,
        version=model.version,
        devices=ids,
        skipped=sorted(pinned),
        incompatible=incompatible,
    )


def pin_device(
    *,
    session: Session,
    publisher: DesiredPublisher,
    public_url: str,
    device_id: str,
    name: str,
    version: str,
) -> Device:
    """Pin the device to ``name@version`` and assign that version now (published at once)."""
    model = session.get(ModelVersionRow, (name, version))
    if model is None:
        raise NotFound(f"model {name}@{version} not found")
    found = session.get(Device, device_id)
    if found is None:
        raise NotFound(f"device {device_id[:80]!r} not found")
    if not can_run(device_class=found.device_class, fmt=model.format):
        raise Unprocessable(
            f"device {device_id[:80]!r} (class {found.device_class}) cannot run "
            f"{model.format} artifacts"
        )
    write_desired(
        session=session,
        device_ids=[device_id],
        model=(model.name, model.version),
        at=utcnow(),
        pin=True,
    )
    session.commit()
    publish_desired(
        session=session, publisher=publisher, public_url=public_url, device_ids=[device_id]
    )
    device = session.get(Device, device_id)
    assert device is not None
    session.refresh(device)
    log.info("device pinned", extra={"device_id": device_id, "model": f"{name}@{version}"})
    return device


def unpin_device(*, session: Session, device_id: str) -> Device:
    """Remove the pin; the device keeps running what it has until the next assignment."""
    device = session.get(Device, device_id)
    if device is None:
        raise NotFound(f"device {device_id[:80]!r} not found")
    device.pinned_name = None
    device.pinned_version = None
    session.add(device)
    session.commit()
    session.refresh(device)
    log.info("device unpinned", extra={"device_id": device_id})
    return device
