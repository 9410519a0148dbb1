"""The one desired-state writer and publisher: assignments, pins, capture-policy republishes and
rollouts all change a device's desired state here, and publish what the database then holds.

Write, commit, then publish: :func:`write_desired` only changes rows (one UPDATE per 500
devices, revision + 1, no commit — the caller's transaction decides); :func:`publish_desired`
reads each device's desired state back from the database and publishes it retained. A state
lost between the commit and the publish (a crash, a broker outage) is republished when the bus
(re)connects, from :func:`current_desired_states`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import datetime
from enum import Enum
from typing import Any, Protocol

from sqlmodel import Session, col, select, update

from edgefleet.contract import DesiredModel, DesiredState, ShadowSpec
from edgefleet.mqtt import MqttError
from fleet_server.models import Device, DeviceShadow
from fleet_server.models import ModelVersion as ModelVersionRow
from fleet_server.models.types import utcnow
from fleet_server.services.capture import PolicyCache

log = logging.getLogger(__name__)

#: Devices per UPDATE / SELECT ... IN (...): bounds the statement size at fleet scale.
CHUNK = 500


class DesiredPublisher(Protocol):
    def publish_desired(self, state: DesiredState) -> None:
        """Publish ``state`` retained on the device's ``desired`` topic; MqttError if refused."""
        ...


class Keep(Enum):
    """``model=Keep.MODEL``: the next revision with the same model (the agent installs nothing;
    what else the payload carries, the capture policy, may have changed)."""

    MODEL = "keep"


ModelRef = tuple[str, str]


def write_desired(
    *,
    session: Session,
    device_ids: Sequence[str],
    model: ModelRef | Keep | None,
    at: datetime,
    only_unpinned: bool = False,
    pin: bool = False,
) -> None:
    """Point ``device_ids`` at ``model`` (``None``: no model) with the next desired-state
    revision, in the caller's transaction (not committed here).

    ``only_unpinned`` re-checks the pin in the UPDATE itself (a pin racing an assignment wins);
    ``pin`` also pins the devices to ``model``."""
    if pin and not isinstance(model, tuple):
        raise ValueError("a pin names a model version")
    values: dict[str, Any] = {
        "desired_revision": col(Device.desired_revision) + 1,
        "desired_at": at,
    }
    if model is not Keep.MODEL:
        values["desired_name"] = model[0] if model else None
        values["desired_version"] = model[1] if model else None
    if pin and isinstance(model, tuple):
        values["pinned_name"], values["pinned_version"] = model
    ids = list(device_ids)
    for start in range(0, len(ids), CHUNK):
        query = update(Device).where(col(Device.device_id).in_(ids[start : start + CHUNK]))
        if only_unpinned:
            query = query.where(col(Device.pinned_name).is_(None))
        # Core, not ORM: no autoflush of the caller's pending changes, no in-memory sync.
        session.connection().execute(query.values(**values))


def stamp_resent(*, session: Session, device_ids: Sequence[str], at: datetime) -> None:
    """Note that ``device_ids`` get their unchanged desired state again (same revision): the
    payload's ``ts`` and the resync's retry clock. In the caller's transaction."""
    ids = sorted(device_ids)
    for start in range(0, len(ids), CHUNK):
        session.connection().execute(
            update(Device)
            .where(col(Device.device_id).in_(ids[start : start + CHUNK]))
            .values(desired_at=at)
        )


def publish_desired(
    *, session: Session, publisher: DesiredPublisher, public_url: str, device_ids: Iterable[str]
) -> int:
    """Publish what the database holds for ``device_ids`` (call after the commit); returns how
    many were sent."""
    return publish_all(
        publisher=publisher,
        states=desired_states_of(session=session, device_ids=device_ids, public_url=public_url),
    )


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


def republish(
    *, session: Session, publisher: DesiredPublisher, public_url: str, device_ids: Sequence[str]
) -> int:
    """Give ``device_ids`` the next desired-state revision with the same model, commit, publish:
    what the payload carries besides the model changed (the capture policy, the shadow), and an
    agent ignores a revision it has already acted on. Same model: the agent installs nothing."""
    if not device_ids:
        return 0
    ids = sorted(device_ids)
    write_desired(session=session, device_ids=ids, model=Keep.MODEL, at=utcnow())
    session.commit()
    return publish_desired(
        session=session, publisher=publisher, public_url=public_url, device_ids=ids
    )


# -- what a device should run, as the database holds it ---------------------------------------
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
    it, see :func:`shadow_specs`)."""
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


def desired_states_of(
    *, session: Session, device_ids: Iterable[str], public_url: str
) -> list[DesiredState]:
    """:func:`desired_states_for` of the devices with these ids (read in chunks)."""
    ids = sorted(set(device_ids))
    devices: list[Device] = []
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        query = select(Device).where(col(Device.device_id).in_(chunk))
        # What the database holds now, even for rows this session loaded before the write.
        devices.extend(session.exec(query.execution_options(populate_existing=True)))
    return desired_states_for(session=session, devices=devices, public_url=public_url)


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
    specs = {}
    for start in range(0, len(device_ids), CHUNK):
        chunk = list(device_ids[start : start + CHUNK])
        rows = session.exec(select(DeviceShadow).where(col(DeviceShadow.device_id).in_(chunk)))
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
