"""/api/v1/devices"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

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
from fleet_server.models import (
    DeviceCreate,
    DeviceCreated,
    DevicePublic,
    DeviceShadowPublic,
    EventPublic,
    PinRequest,
    ShadowRequest,
    TagsUpdate,
    TelemetryPublic,
)
from fleet_server.services import devices as service
from fleet_server.services import shadow as shadow_service
from fleet_server.services.assignments import pin_device, unpin_device
from fleet_server.services.device_lifecycle import decommission as decommission_device
from fleet_server.services.errors import Unavailable
from fleet_server.services.telemetry import list_events, list_telemetry

router = APIRouter(prefix="/devices", tags=["devices"])


@router.post(
    "",
    status_code=201,
    responses=error_responses(
        OPERATOR_REFUSALS, BODY_REFUSALS, 409, why={409: "A device with this id exists."}
    ),
)
def create_device(
    body: DeviceCreate, request: Request, session: SessionDep, runtime: RuntimeDep, _: Operator
) -> DeviceCreated:
    note_target(request, f"device:{body.device_id}")
    device, token = service.register_device(
        session=session, data=body, credentials=runtime.credentials
    )
    return DeviceCreated(
        device_id=device.device_id,
        device_class=device.device_class,
        tags=list(device.tags),
        token=token,
    )


@router.post(
    "/{device_id}/token", responses=error_responses(OPERATOR_REFUSALS, INPUT_REFUSALS, 404)
)
def rotate_token(
    device_id: str, request: Request, session: SessionDep, runtime: RuntimeDep, _: Operator
) -> DeviceCreated:
    """A new token for the device (its HTTP bearer token and MQTT password); shown once."""
    note_target(request, f"device:{device_id[:80]}")
    device, token = service.rotate_device_token(
        session=session, device_id=device_id, credentials=runtime.credentials
    )
    return DeviceCreated(
        device_id=device.device_id,
        device_class=device.device_class,
        tags=list(device.tags),
        token=token,
    )


@router.delete(
    "/{device_id}",
    responses=error_responses(
        OPERATOR_REFUSALS,
        INPUT_REFUSALS,
        404,
        why={503: "Decommissioned, but the broker did not take the removal: repeat the call."},
    ),
)
def decommission(
    device_id: str, request: Request, session: SessionDep, runtime: RuntimeDep, _: Operator
) -> DevicePublic:
    """Decommission: revoke the device's token and broker login at once and take it out of
    the fleet (counts, rollouts, ingest); its history stays for the audit. Idempotent."""
    note_target(request, f"device:{device_id[:80]}")
    device = decommission_device(
        session=session, credentials=runtime.credentials, device_id=device_id
    )
    return DevicePublic.of(device)


@router.patch("/{device_id}/tags", responses=error_responses(OPERATOR_REFUSALS, BODY_REFUSALS, 404))
def update_tags(
    device_id: str, body: TagsUpdate, request: Request, session: SessionDep, _: Operator
) -> DevicePublic:
    """Add and remove tags (a tag in both lists is removed)."""
    note_target(request, f"device:{device_id[:80]}", add=body.add, remove=body.remove)
    device = service.update_tags(
        session=session, device_id=device_id, add=body.add, remove=body.remove
    )
    return DevicePublic.of(device)


@router.put(
    "/{device_id}/pin",
    responses=error_responses(
        OPERATOR_REFUSALS,
        BODY_REFUSALS,
        404,
        why={
            404: "No such device or model version.",
            503: "The MQTT bus or the database is not ready; try again later.",
        },
    ),
)
def pin(
    device_id: str,
    body: PinRequest,
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    settings: SettingsDep,
    _: Operator,
) -> DevicePublic:
    """Pin the device to a version and assign it now; assignments skip pinned devices."""
    note_target(request, f"device:{device_id[:80]}", model=f"{body.model}@{body.version}")
    if runtime.bus is None:
        raise Unavailable("the MQTT bus is not running")
    device = pin_device(
        session=session,
        publisher=runtime.bus,
        public_url=settings.resolved_public_url,
        device_id=device_id,
        name=body.model,
        version=body.version,
    )
    return DevicePublic.of(device)


@router.delete(
    "/{device_id}/pin", responses=error_responses(OPERATOR_REFUSALS, INPUT_REFUSALS, 404)
)
def unpin(device_id: str, request: Request, session: SessionDep, _: Operator) -> DevicePublic:
    """Remove the pin (the device keeps its model until the next assignment)."""
    note_target(request, f"device:{device_id[:80]}")
    return DevicePublic.of(unpin_device(session=session, device_id=device_id))


@router.put(
    "/{device_id}/shadow",
    responses=error_responses(
        OPERATOR_REFUSALS,
        BODY_REFUSALS,
        404,
        409,
        why={
            404: "No such device or model version.",
            409: "The device is assigned no model (a shadow runs beside one).",
            503: "The MQTT bus or the database is not ready; try again later.",
        },
    ),
)
def put_shadow(
    device_id: str,
    body: ShadowRequest,
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    settings: SettingsDep,
    _: Operator,
) -> DeviceShadowPublic:
    """Run a version as the device's shadow (beside its model, on a sample of its inputs,
    outputs sent nowhere); published at once. Replaces any shadow it had."""
    note_target(request, f"device:{device_id[:80]}", shadow=f"{body.model}@{body.version}")
    if runtime.bus is None:
        raise Unavailable("the MQTT bus is not running")
    return shadow_service.set_shadow(
        session=session,
        publisher=runtime.bus,
        public_url=settings.resolved_public_url,
        device_id=device_id,
        request=body,
    )


@router.delete(
    "/{device_id}/shadow",
    status_code=204,
    responses=error_responses(
        OPERATOR_REFUSALS, INPUT_REFUSALS, 404, why={404: "No such device, or it has no shadow."}
    ),
)
def delete_shadow(
    device_id: str,
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    settings: SettingsDep,
    _: Operator,
) -> None:
    """Take the shadow off the device (it unloads it; what it serves is unchanged)."""
    note_target(request, f"device:{device_id[:80]}")
    if runtime.bus is None:
        raise Unavailable("the MQTT bus is not running")
    shadow_service.clear_shadow(
        session=session,
        publisher=runtime.bus,
        public_url=settings.resolved_public_url,
        device_id=device_id,
    )


@router.get("", responses=error_responses(VIEWER_REFUSALS, INPUT_REFUSALS))
def list_devices(
    session: SessionDep,
    _: Viewer,
    decommissioned: Annotated[
        bool, Query(description="Include decommissioned devices (kept for the audit).")
    ] = False,
) -> list[DevicePublic]:
    rows = service.list_devices(session=session, decommissioned=decommissioned)
    return [DevicePublic.of(d) for d in rows]


@router.get("/{device_id}", responses=error_responses(VIEWER_REFUSALS, INPUT_REFUSALS, 404))
def get_device(device_id: str, session: SessionDep, _: Viewer) -> DevicePublic:
    return DevicePublic.of(service.get_device(session=session, device_id=device_id))


@router.get(
    "/{device_id}/telemetry", responses=error_responses(VIEWER_REFUSALS, INPUT_REFUSALS, 404)
)
def device_telemetry(
    device_id: str,
    session: SessionDep,
    _: Viewer,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[TelemetryPublic]:
    rows = list_telemetry(session=session, device_id=device_id, limit=limit)
    return [TelemetryPublic.model_validate(row.model_dump()) for row in rows]


@router.get("/{device_id}/events", responses=error_responses(VIEWER_REFUSALS, INPUT_REFUSALS, 404))
def device_events(
    device_id: str,
    session: SessionDep,
    _: Viewer,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[EventPublic]:
    """The device's events (download, verify, probation, commit, rollback...), newest first."""
    rows = list_events(session=session, device_id=device_id, limit=limit)
    return [EventPublic.model_validate(row.model_dump()) for row in rows]
