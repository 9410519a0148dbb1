"""Assigning a model version to devices: the database first, then retained MQTT desired state."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlmodel import Session, col, select, update

from edgefleet.contract import DesiredModel, DesiredState, ShadowSpec
from edgefleet.contract.pydantic_types import DeviceId, ModelName, ModelVersion
from edgefleet.mqtt import MqttError
from fleet_server.models import Device, DeviceShadow
from fleet_server.models import ModelVersion as ModelVersionRow
from fleet_server.models.types import utcnow
from fleet_server.services.capture import PolicyCache
from fleet_server.services.devices import is_pinned
from fleet_server.services.errors import NotFound

log = logging.getLogger(__name__)


class DesiredPublisher(Protocol):
    def publish_desired(self, state: DesiredState) -> None:
        """Publish ``state`` retained on the device's ``desired`` topic; MqttError if refused."""
        ...


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


def bundle_url(*, public_url: str, name: str, version: str) -> str:
    return f"{public_url}/api/v1/models/{name}/{version}/bundle"


def desired_state(
    *,
    device: Device,
    model: ModelVersionRow | None,
    public_url: str,
    policies: PolicyCache,
    shadow: ShadowSpec | None = None,
) -> DesiredState:
    """The retained ``desired`` payload for ``device`` at its current revision: the one place
    that builds it, for assignments, pins, rollouts and shadows alike (the capture policy of the
    assigned version rides along; no model, no capture; ``shadow``: the model to run beside
    it, see :func:`fleet_server.services.shadow.shadow_spec`)."""
    desired = None
    capture = None
    if model is not None:
        capture = policies.get(model.name, model.version)
        desired = DesiredModel(
            name=model.name,
            version=model.version,
            url=bundle_url(public_url=public_url, name=model.name, version=model.version),
            sha256=model.sha256,
            size=model.size,
            signature=model.signature_value,
        )
    return DesiredState(
        # The oldest version that holds what is sent, so an older agent still reads it: no
        # capture policy and no shadow is exactly a version-1 payload; a policy needs an agent
        # that knows version 2, a shadow one that knows version 3.
        schema_version=3 if shadow is not None else 2 if capture is not None else 1,
        device_id=device.device_id,
        seq=device.desired_revision,
        ts=device.desired_at or utcnow(),
        model=desired,
        capture=capture,
        shadow=shadow,
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
        if session.get(Device, device_id) is None:
            raise NotFound(f"device {device_id!r} not found")
        targets.add(device_id)
    if request.tag is not None:
        tagged = [d.device_id for d in session.exec(select(Device)) if request.tag in d.tags]
        if not tagged:
            raise NotFound(f"no device has tag {request.tag!r}")
        targets.update(tagged)
    pinned = {
        d.device_id
        for d in session.exec(select(Device).where(col(Device.device_id).in_(sorted(targets))))
        if is_pinned(d)
    }
    ids = sorted(targets - pinned)
    if not ids:
        return AssignmentPublic(
            model=model.name, version=model.version, devices=[], skipped=sorted(pinned)
        )
    _set_desired(session=session, ids=ids, model=model, only_unpinned=True)
    devices = session.exec(select(Device).where(col(Device.device_id).in_(ids))).all()
    publish_all(
        publisher=publisher,
        states=desired_states_for(session=session, devices=devices, public_url=public_url),
    )
    log.info(
        "model assigned",
        extra={
            "model": f"{model.name}@{model.version}",
            "devices": ids,
            "skipped_pinned": sorted(pinned),
        },
    )
    return AssignmentPublic(
        model=model.name, version=model.version, devices=ids, skipped=sorted(pinned)
    )


def _set_desired(
    *,
    session: Session,
    ids: Sequence[str],
    model: ModelVersionRow,
    only_unpinned: bool = False,
    **extra: str | None,
) -> None:
    """Desired model + revision bump for ``ids``, committed (``extra``: more columns to set).
    ``only_unpinned`` re-checks the pin in the UPDATE itself (a pin racing an assignment wins)."""
    query = update(Device).where(col(Device.device_id).in_(ids))
    if only_unpinned:
        query = query.where(col(Device.pinned_name).is_(None))
    session.exec(
        query.values(
            desired_name=model.name,
            desired_version=model.version,
            desired_revision=col(Device.desired_revision) + 1,
            desired_at=utcnow(),
            **extra,
        )
    )
    session.commit()


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
    if session.get(Device, device_id) is None:
        raise NotFound(f"device {device_id[:80]!r} not found")
    _set_desired(
        session=session,
        ids=[device_id],
        model=model,
        pinned_name=model.name,
        pinned_version=model.version,
    )
    device = session.get(Device, device_id)
    assert device is not None
    session.refresh(device)
    publish_all(
        publisher=publisher,
        states=desired_states_for(session=session, devices=[device], public_url=public_url),
    )
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


def publish_all(*, publisher: DesiredPublisher, states: Iterable[DesiredState]) -> int:
    """Publish each state; a failure is logged (the server republishes on reconnect)."""
    sent = 0
    for state in states:
        try:
            publisher.publish_desired(state)
            sent += 1
        except MqttError as err:
            log.warning(
                "desired state not published",
                extra={"device_id": state.device_id, "error": str(err)},
            )
    return sent


def current_desired_states(*, session: Session, public_url: str) -> Sequence[DesiredState]:
    """The desired state of every device that has an assignment (for republishing)."""
    query = select(Device).where(col(Device.desired_name).is_not(None))
    return desired_states_for(session=session, devices=session.exec(query), public_url=public_url)


def desired_states_for(
    *, session: Session, devices: Iterable[Device], public_url: str
) -> list[DesiredState]:
    """Each device's desired state as the database holds it (``model: null`` for a device
    assigned no model; one whose assigned version is gone from the registry is left out).
    Each model row is read once."""
    models: dict[tuple[str, str], ModelVersionRow | None] = {}
    policies = PolicyCache(session)
    devices = list(devices)
    shadows = shadow_specs(
        session=session, device_ids=[d.device_id for d in devices], public_url=public_url
    )
    states = []
    for device in devices:
        model = None
        if device.desired_name is not None and device.desired_version is not None:
            key = (device.desired_name, device.desired_version)
            if key not in models:
                models[key] = session.get(ModelVersionRow, key)
            model = models[key]
            if model is None:
                continue
        states.append(
            desired_state(
                device=device,
                model=model,
                public_url=public_url,
                policies=policies,
                shadow=shadows.get(device.device_id),
            )
        )
    return states


def shadow_specs(
    *, session: Session, device_ids: Sequence[str], public_url: str
) -> dict[str, ShadowSpec]:
    """The shadow each of ``device_ids`` should run (devices without one, or whose shadow
    version is gone from the registry, are left out)."""
    if not device_ids:
        return {}
    rows = session.exec(select(DeviceShadow).where(col(DeviceShadow.device_id).in_(device_ids)))
    specs = {}
    for row in rows:
        model = session.get(ModelVersionRow, (row.model_name, row.model_version))
        if model is None:
            continue
        specs[row.device_id] = ShadowSpec(
            name=model.name,
            version=model.version,
            url=bundle_url(public_url=public_url, name=model.name, version=model.version),
            sha256=model.sha256,
            size=model.size,
            signature=model.signature_value,
            sample_rate=row.sample_rate,
            cpu_budget=row.cpu_budget,
        )
    return specs


def republish(
    *, session: Session, publisher: DesiredPublisher, public_url: str, device_ids: Sequence[str]
) -> int:
    """Give ``device_ids`` the next desired-state revision with the same model, then publish
    it: what the payload carries besides the model changed (capture policy, shadow), and an agent
    ignores a revision it has already acted on. Same model: the agent installs nothing."""
    if not device_ids:
        return 0
    ids = sorted(device_ids)
    session.exec(
        update(Device)
        .where(col(Device.device_id).in_(ids))
        .values(desired_revision=col(Device.desired_revision) + 1, desired_at=utcnow())
    )
    session.commit()
    devices = session.exec(select(Device).where(col(Device.device_id).in_(ids)))
    return publish_all(
        publisher=publisher,
        states=desired_states_for(session=session, devices=devices, public_url=public_url),
    )
