"""/api/v1/models: upload, list, show and download bundles."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from fleet_server.api.deps import (
    DeviceAuth,
    Operator,
    RuntimeDep,
    SessionDep,
    SettingsDep,
    StoreDep,
)
from fleet_server.api.upload import FIELD, receive_bundle
from fleet_server.models import Device, ModelVersionPublic
from fleet_server.services import models as service
from fleet_server.services.errors import Forbidden, NotFound
from fleet_server.storage import StoreError

router = APIRouter(prefix="/models", tags=["models"])

_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [FIELD],
                    "properties": {FIELD: {"type": "string", "format": "binary"}},
                }
            }
        },
    }
}


@router.post(
    "",
    status_code=201,
    openapi_extra=_UPLOAD_BODY,
    responses={400: {}, 409: {}, 413: {}},
)
async def upload_model(
    request: Request,
    runtime: RuntimeDep,
    settings: SettingsDep,
    session: SessionDep,
    store: StoreDep,
    _: Operator,
) -> ModelVersionPublic:
    work = Path(tempfile.mkdtemp(prefix="upload-", dir=runtime.tmp_dir))
    try:
        bundle = work / "bundle.tar.gz"
        sha256, size = await receive_bundle(
            content_type=request.headers.get("content-type"),
            content_length=request.headers.get("content-length"),
            stream=request.stream(),
            dest=bundle,
            max_bytes=settings.max_bundle_bytes,
        )
        row = await run_in_threadpool(
            lambda: service.register_bundle(
                session=session,
                store=store,
                bundle=bundle,
                sha256=sha256,
                size=size,
                work_dir=work,
                trusted_keys=runtime.trusted_keys,
                require_signed=settings.require_signed,
            )
        )
        return ModelVersionPublic.of(row)
    finally:
        await run_in_threadpool(shutil.rmtree, work, True)


@router.get("")
def list_models(session: SessionDep, _: Operator) -> list[ModelVersionPublic]:
    rows = service.list_models(session=session)
    return [ModelVersionPublic.of(r, with_manifest=False) for r in rows]


@router.get("/{name}/{version}")
def get_model(name: str, version: str, session: SessionDep, _: Operator) -> ModelVersionPublic:
    return ModelVersionPublic.of(service.get_model(session=session, name=name, version=version))


@router.get(
    "/{name}/{version}/bundle",
    response_class=FileResponse,
    responses={200: {"content": {"application/gzip": {}}}, 206: {}, 403: {}, 404: {}},
)
def download_bundle(
    name: str, version: str, session: SessionDep, store: StoreDep, principal: DeviceAuth
) -> FileResponse:
    row = service.get_model(session=session, name=name, version=version)
    if not principal.operator:
        device = session.get(Device, principal.device_id)
        if device is None or (device.desired_name, device.desired_version) != (name, version):
            raise Forbidden(f"model {name}@{version} is not assigned to this device")
    try:
        path = store.local_path(row.storage_key)
    except StoreError as err:
        raise NotFound(f"bundle of {name}@{version} is missing from the store") from err
    return FileResponse(
        path,
        media_type="application/gzip",
        filename=f"{name}-{version}.tar.gz",
        headers={"ETag": f'"{row.sha256}"'},
    )
