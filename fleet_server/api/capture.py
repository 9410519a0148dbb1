"""/api/v1/models/{name}/capture and /api/v1/models/{name}/{version}/capture: the capture
policy devices get in their desired state (a version's replaces its model name's)."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Body, Path, Request
from pydantic import BaseModel, Field

from fleet_server.api.deps import (
    OPERATOR_REFUSALS,
    VIEWER_REFUSALS,
    Operator,
    RuntimeDep,
    SessionDep,
    SettingsDep,
    Viewer,
    note_target,
)
from fleet_server.api.errors import BODY_REFUSALS, INPUT_REFUSALS, error_responses
from fleet_server.services import capture as service
from fleet_server.services.desired import republish
from fleet_server.services.errors import Unavailable

router = APIRouter(prefix="/models", tags=["capture"])

_NAME = r"^[a-z0-9][a-z0-9._-]{0,62}$"
_VERSION = r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,62}$"
Name = Annotated[str, Path(pattern=_NAME, description="Model name.")]
Version = Annotated[str, Path(pattern=_VERSION, description="Model version.")]
PolicyBody = Annotated[
    dict[str, Any],
    Body(
        description="A CapturePolicy (edgefleet.contract): low_confidence, margin, "
        "outside_reference, classes, random, shadow_disagreement, max_per_hour, max_per_day, "
        "max_bytes_per_day, max_side, jpeg_quality."
    ),
]


class CapturePolicyPublic(BaseModel):
    model: str
    version: str | None = Field(description="Null: the policy of the whole model name.")
    policy: dict[str, Any] | None = Field(description="The policy stored here (null: none).")
    effective_from: str | None = Field(
        description="Whose policy devices running this get: 'version', 'model' or null (none: "
        "they capture nothing)."
    )
    updated_by: str | None
    republished: int = Field(
        default=0, description="Devices whose desired state was republished by this change."
    )


def _public(view: service.PolicyView, republished: int = 0) -> CapturePolicyPublic:
    return CapturePolicyPublic(
        model=view.name,
        version=view.version,
        policy=msgspec.to_builtins(view.policy) if view.policy is not None else None,
        effective_from=view.effective_from,
        updated_by=view.updated_by,
        republished=republished,
    )


def _set(
    *,
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    settings: SettingsDep,
    actor: str,
    name: str,
    version: str | None,
    body: dict[str, Any] | None,
) -> CapturePolicyPublic:
    policy = service.parse_policy(body) if body is not None else None
    note_target(request, f"capture:{name}@{version or '*'}", removed=policy is None)
    if runtime.bus is None:
        raise Unavailable("the MQTT bus is not running")
    affected = service.set_policy(
        session=session, name=name, version=version, policy=policy, actor=actor
    )
    sent = republish(
        session=session,
        publisher=runtime.bus,
        public_url=settings.resolved_public_url,
        device_ids=affected,
    )
    return _public(service.show_policy(session=session, name=name, version=version), sent)


_PUT = error_responses(
    OPERATOR_REFUSALS,
    BODY_REFUSALS,
    404,
    why={404: "No such model (version).", 503: "The MQTT bus or the database is not ready."},
)
_GET = error_responses(VIEWER_REFUSALS, INPUT_REFUSALS, 404)


@router.put("/{name}/capture", responses=_PUT)
def put_model_capture(
    name: Name,
    body: PolicyBody,
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    settings: SettingsDep,
    caller: Operator,
) -> CapturePolicyPublic:
    """Set the capture policy of every version of ``name`` (a version's own overrides it);
    devices assigned the model get it at once (desired state republished)."""
    return _set(
        request=request,
        session=session,
        runtime=runtime,
        settings=settings,
        actor=caller.actor,
        name=name,
        version=None,
        body=body,
    )


@router.delete("/{name}/capture", responses=_PUT)
def delete_model_capture(
    name: Name,
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    settings: SettingsDep,
    caller: Operator,
) -> CapturePolicyPublic:
    """Remove the model name's policy (devices without a version policy stop capturing)."""
    return _set(
        request=request,
        session=session,
        runtime=runtime,
        settings=settings,
        actor=caller.actor,
        name=name,
        version=None,
        body=None,
    )


@router.get("/{name}/capture", responses=_GET)
def get_model_capture(name: Name, session: SessionDep, _: Viewer) -> CapturePolicyPublic:
    return _public(service.show_policy(session=session, name=name, version=None))


@router.put("/{name}/{version}/capture", responses=_PUT)
def put_version_capture(
    name: Name,
    version: Version,
    body: PolicyBody,
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    settings: SettingsDep,
    caller: Operator,
) -> CapturePolicyPublic:
    """Set the policy of one version (replaces the model name's for it)."""
    return _set(
        request=request,
        session=session,
        runtime=runtime,
        settings=settings,
        actor=caller.actor,
        name=name,
        version=version,
        body=body,
    )


@router.delete("/{name}/{version}/capture", responses=_PUT)
def delete_version_capture(
    name: Name,
    version: Version,
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    settings: SettingsDep,
    caller: Operator,
) -> CapturePolicyPublic:
    """Remove the version's own policy (it falls back to the model name's)."""
    return _set(
        request=request,
        session=session,
        runtime=runtime,
        settings=settings,
        actor=caller.actor,
        name=name,
        version=version,
        body=None,
    )


@router.get("/{name}/{version}/capture", responses=_GET)
def get_version_capture(
    name: Name, version: Version, session: SessionDep, _: Viewer
) -> CapturePolicyPublic:
    return _public(service.show_policy(session=session, name=name, version=version))
