"""Capture policies: which hard examples devices send back, per model name or per version.

The policy of a version, when set, replaces its model name's (no field-by-field merge: what an
operator reads back is what devices get). It travels in the desired state
(:func:`fleet_server.services.desired.desired_state`, built by the one desired-state
writer and publisher), so setting or removing one republishes the desired state of every
device assigned an affected version.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import msgspec
from sqlmodel import Session, col, select

from edgefleet.contract import CapturePolicy, ContractError
from edgefleet.contract.parsing import validate
from fleet_server.models import CapturePolicyRow, Device
from fleet_server.models import ModelVersion as ModelVersionRow
from fleet_server.models.samples import ALL_VERSIONS
from fleet_server.models.types import utcnow
from fleet_server.services.errors import NotFound, Unprocessable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PolicyView:
    """A stored policy and where it applies (``version`` None: the whole model name)."""

    name: str
    version: str | None
    policy: CapturePolicy | None
    updated_by: str | None
    #: For a version: whose policy devices get (``version`` or ``model``); None: none.
    effective_from: str | None


def parse_policy(data: dict[str, Any]) -> CapturePolicy:
    try:
        return validate(CapturePolicy, data, what="capture policy")
    except ContractError as err:
        raise Unprocessable(str(err)) from err


def _row(session: Session, name: str, version: str | None) -> CapturePolicyRow | None:
    return session.get(CapturePolicyRow, (name, version or ALL_VERSIONS))


def _decode(row: CapturePolicyRow | None) -> CapturePolicy | None:
    if row is None:
        return None
    return msgspec.convert(row.policy, type=CapturePolicy)


def effective_policy(*, session: Session, name: str, version: str) -> CapturePolicy | None:
    """What devices running ``name@version`` capture by: the version's policy, else the
    model's, else None (capture nothing)."""
    row = _row(session, name, version) or _row(session, name, None)
    return _decode(row)


class PolicyCache:
    """Effective policies read once per (name, version) while building many desired states."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._seen: dict[tuple[str, str], CapturePolicy | None] = {}

    def get(self, name: str, version: str) -> CapturePolicy | None:
        key = (name, version)
        if key not in self._seen:
            self._seen[key] = effective_policy(session=self.session, name=name, version=version)
        return self._seen[key]


def show_policy(*, session: Session, name: str, version: str | None) -> PolicyView:
    _require_model(session, name, version)
    own = _row(session, name, version)
    effective: str | None = None
    if own is not None:
        effective = "version" if version is not None else "model"
    elif version is not None and _row(session, name, None) is not None:
        effective = "model"
    return PolicyView(
        name=name,
        version=version,
        policy=_decode(own),
        updated_by=own.updated_by if own else None,
        effective_from=effective,
    )


def set_policy(
    *, session: Session, name: str, version: str | None, policy: CapturePolicy | None, actor: str
) -> list[str]:
    """Store (or with None remove) the policy; return the devices whose desired state changes
    (assigned ``name``, or ``name@version``), for the caller to republish."""
    _require_model(session, name, version)
    row = _row(session, name, version)
    if policy is None:
        if row is not None:
            session.delete(row)
    else:
        data = msgspec.to_builtins(policy)
        if row is None:
            row = CapturePolicyRow(
                model_name=name,
                model_version=version or ALL_VERSIONS,
                policy=data,
                updated_by=actor,
            )
        else:
            row.policy = data
            row.updated_by = actor
            row.updated_at = utcnow()
        session.add(row)
    session.commit()
    query = select(Device.device_id).where(col(Device.desired_name) == name)
    if version is not None:
        query = query.where(col(Device.desired_version) == version)
    affected = list(session.exec(query).all())
    log.info(
        "capture policy set" if policy else "capture policy removed",
        extra={"model": f"{name}@{version or '*'}", "actor": actor, "devices": len(affected)},
    )
    return affected


def _require_model(session: Session, name: str, version: str | None) -> None:
    if version is not None:
        if session.get(ModelVersionRow, (name, version)) is None:
            raise NotFound(f"model {name}@{version} not found")
        return
    found = session.exec(select(ModelVersionRow.name).where(ModelVersionRow.name == name)).first()
    if found is None:
        raise NotFound(f"model {name!r} not found")
