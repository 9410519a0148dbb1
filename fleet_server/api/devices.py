"""/api/v1/devices"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from fleet_server.api.deps import Operator, SessionDep
from fleet_server.models import DeviceCreate, DeviceCreated, DevicePublic, TelemetryPublic
from fleet_server.services import devices as service
from fleet_server.services.telemetry import list_telemetry

router = APIRouter(prefix="/devices", tags=["devices"])


@router.post("", status_code=201)
def create_device(body: DeviceCreate, session: SessionDep, _: Operator) -> DeviceCreated:
    device, token = service.register_device(session=session, data=body)
    return DeviceCreated(
        device_id=device.device_id,
        device_class=device.device_class,
        tags=list(device.tags),
        token=token,
    )


@router.post("/{device_id}/token")
def rotate_token(device_id: str, session: SessionDep, _: Operator) -> DeviceCreated:
    """A new token for the device (its HTTP bearer token and MQTT password); shown once."""
    device, token = service.rotate_device_token(session=session, device_id=device_id)
    return DeviceCreated(
        device_id=device.device_id,
        device_class=device.device_class,
        tags=list(device.tags),
        token=token,
    )


@router.get("")
def list_devices(session: SessionDep, _: Operator) -> list[DevicePublic]:
    return [DevicePublic.of(d) for d in service.list_devices(session=session)]


@router.get("/{device_id}")
def get_device(device_id: str, session: SessionDep, _: Operator) -> DevicePublic:
    return DevicePublic.of(service.get_device(session=session, device_id=device_id))


@router.get("/{device_id}/telemetry")
def device_telemetry(
    device_id: str,
    session: SessionDep,
    _: Operator,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[TelemetryPublic]:
    rows = list_telemetry(session=session, device_id=device_id, limit=limit)
    return [TelemetryPublic.model_validate(row.model_dump()) for row in rows]
