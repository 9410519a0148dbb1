"""/api/v1/models: upload, list, show and download bundles."""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from fleet_server.api.deps import (
    DEVICE_REFUSALS,
    OPERATOR_REFUSALS,
    VIEWER_REFUSALS,
    DeviceAuth,
    Operator,
    RuntimeDep,
    SessionDep,
    SettingsDep,
    StoreDep,
    Viewer,
    note_target,
)
from fleet_server.api.errors import INPUT_REFUSALS, ErrorBody, error_responses
from fleet_server.api.ranges import Unsatisfiable, byte_range, if_range_matches
from fleet_server.api.upload import FIELD, receive_bundle
from fleet_server.models import (
    Device,
    LineageEntry,
    LineagePublic,
    ModelVersionPublic,
    ShadowSummary,
)
from fleet_server.services import models as service
from fleet_server.services import shadow as shadow_service
from fleet_server.services.errors import NotFound, Unavailable
from fleet_server.services.models import Lineage
from fleet_server.storage import MissingBundle, StoreError

log = logging.getLogger(__name__)
router = APIRouter(prefix="/models", tags=["models"])
#: A model version (the contract's pattern).
_VERSION = r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,62}$"

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
    responses=error_responses(
        OPERATOR_REFUSALS,
        INPUT_REFUSALS,
        409,
        413,
        415,
        why={
            400: "The bundle is refused (not a valid, safe bundle; a signature required; an "
            "unknown parent) or the form is malformed.",
            409: "This model version exists.",
            413: "The bundle is larger than the server's limit.",
            415: "The body is not multipart/form-data with a boundary.",
            503: "The database or the artifact store is not ready; try again later.",
        },
    ),
)
async def upload_model(
    request: Request,
    runtime: RuntimeDep,
    settings: SettingsDep,
    session: SessionDep,
    store: StoreDep,
    _: Operator,
    parent: Annotated[
        str | None,
        Query(
            pattern=_VERSION,
            description="Version of the same model this one was derived from (must exist).",
        ),
    ] = None,
    dataset_sha256: Annotated[
        str | None,
        Query(pattern=r"^[0-9a-fA-F]{64}$", description="SHA-256 (hex) of the training data."),
    ] = None,
    training_ref: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=200,
            pattern=r"^[\x20-\x7e]+$",
            description="Training code reference, e.g. a git commit or URL (printable ASCII).",
        ),
    ] = None,
) -> ModelVersionPublic:
    """Upload a bundle (multipart field ``bundle``); lineage is optional."""
    lineage = Lineage(
        parent_version=parent,
        dataset_sha256=dataset_sha256.lower() if dataset_sha256 else None,
        training_ref=training_ref,
    )
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
                lineage=lineage,
            )
        )
        note_target(request, f"model:{row.name}@{row.version}")
        return ModelVersionPublic.of(row)
    finally:
        await run_in_threadpool(shutil.rmtree, work, True)


@router.get("", responses=error_responses(VIEWER_REFUSALS))
def list_models(session: SessionDep, _: Viewer) -> list[ModelVersionPublic]:
    rows = service.list_models(session=session)
    return [ModelVersionPublic.of(r, with_manifest=False) for r in rows]


@router.get("/{name}/{version}", responses=error_responses(VIEWER_REFUSALS, INPUT_REFUSALS, 404))
def get_model(name: str, version: str, session: SessionDep, _: Viewer) -> ModelVersionPublic:
    return ModelVersionPublic.of(service.get_model(session=session, name=name, version=version))


@router.get(
    "/{name}/{version}/lineage", responses=error_responses(VIEWER_REFUSALS, INPUT_REFUSALS, 404)
)
def get_lineage(name: str, version: str, session: SessionDep, _: Viewer) -> LineagePublic:
    """The version and its ancestors (parent, grandparent, ...), at most 100, cycle-safe."""
    chain, truncated = service.lineage_chain(session=session, name=name, version=version)
    return LineagePublic(
        name=name,
        version=version,
        chain=[LineageEntry.of(row) for row in chain],
        truncated=truncated,
    )


_BUNDLE_HEADERS: dict[str, dict[str, Any]] = {
    "ETag": {
        "description": "The bundle's sha256 in quotes; send it back in `If-Range`.",
        "required": True,
        "schema": {"type": "string"},
    },
    "Accept-Ranges": {"required": True, "schema": {"type": "string", "const": "bytes"}},
    "Content-Length": {"required": True, "schema": {"type": "integer", "minimum": 0}},
}
_BUNDLE = {"application/gzip": {"schema": {"type": "string", "format": "binary"}}}


@router.get(
    "/{name}/{version}/bundle",
    response_class=StreamingResponse,
    responses={
        200: {"description": "The whole bundle.", "content": _BUNDLE, "headers": _BUNDLE_HEADERS},
        206: {
            "description": "The one byte range asked for.",
            "content": _BUNDLE,
            "headers": {
                **_BUNDLE_HEADERS,
                "Content-Range": {
                    "description": "`bytes <first>-<last>/<size>`.",
                    "required": True,
                    "schema": {"type": "string", "pattern": r"^bytes [0-9]+-[0-9]+/[0-9]+$"},
                },
            },
        },
        **error_responses(
            DEVICE_REFUSALS,
            INPUT_REFUSALS,
            404,
            416,
            why={
                404: "No such version, or (to a device) not the version assigned to it: the "
                "two answers are identical, so a device cannot probe which versions exist.",
                503: "The database or the artifact store is not ready; try again later.",
            },
        ),
    },
)
def download_bundle(
    name: str,
    version: str,
    session: SessionDep,
    store: StoreDep,
    principal: DeviceAuth,
    range_: Annotated[
        str | None,
        Header(
            alias="Range",
            description="One byte range, e.g. 'bytes=1048576-' to resume; several ranges or "
            "another unit get the whole bundle.",
        ),
    ] = None,
    if_range: Annotated[
        str | None,
        Header(
            alias="If-Range",
            description="The bundle's ETag: Range applies only while it still matches.",
        ),
    ] = None,
) -> Response:
    """The bundle, streamed from the store; one ``Range`` (e.g. ``bytes=N-``) resumes (206).

    A device gets only the version assigned to it, or its shadow. Anything else is the same
    404, whether the version exists or not, checked before the version is looked up: a device
    cannot tell which versions exist (it used to get 403 for "exists, not yours" and 404 for
    "no such version")."""
    if not principal.operator:
        device = session.get(Device, principal.device_id)
        if device is None or (
            (device.desired_name, device.desired_version) != (name, version)
            and not shadow_service.may_download(
                session=session, device_id=device.device_id, name=name, version=version
            )
        ):
            raise NotFound(_not_assigned(name, version))
    row = service.get_model(session=session, name=name, version=version)
    key = row.storage_key
    etag = f'"{row.sha256}"'
    headers = {
        "ETag": etag,
        "Accept-Ranges": "bytes",
        "Content-Disposition": f'attachment; filename="{name}-{version}.tar.gz"',
    }
    try:
        size = store.size(key)
        span = None
        if if_range_matches(if_range, etag):
            span = byte_range(range_, size)
    except Unsatisfiable:
        return JSONResponse(
            ErrorBody(detail=f"range not satisfiable: the bundle has {size} bytes").model_dump(),
            status_code=416,
            headers={**headers, "Content-Range": f"bytes */{size}"},
        )
    except MissingBundle as err:
        raise NotFound(f"bundle of {name}@{version} is missing from the store") from err
    except StoreError as err:
        log.error("artifact store failed", extra={"key": key, "error": str(err)})
        raise Unavailable("the artifact store is unavailable; try again later") from err
    start, end = span or (0, size)
    try:
        body = store.read(key, start, end)
    except MissingBundle as err:
        raise NotFound(f"bundle of {name}@{version} is missing from the store") from err
    except StoreError as err:
        log.error("artifact store failed", extra={"key": key, "error": str(err)})
        raise Unavailable("the artifact store is unavailable; try again later") from err
    headers["Content-Length"] = str(end - start)
    if span is not None:
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    return StreamingResponse(
        _logged(body, key),
        status_code=206 if span is not None else 200,
        media_type="application/gzip",
        headers=headers,
    )


@router.get(
    "/{name}/{version}/shadow",
    responses=error_responses(VIEWER_REFUSALS, INPUT_REFUSALS, 404),
)
def get_shadow_summary(name: str, version: str, session: SessionDep, _: Viewer) -> ShadowSummary:
    """What devices running this version as a shadow reported, beside their serving model on
    the same inputs: agreement (paired-weighted), p95 latencies and their ratio, CPU ratio,
    errors; for the fleet and per device class (the newest 100,000 reports)."""
    return shadow_service.summarise(session=session, name=name, version=version)


def _not_assigned(name: str, version: str) -> str:
    return f"no bundle {name[:64]}@{version[:64]} for this device"


def _logged(body: Iterator[bytes], key: str) -> Iterator[bytes]:
    """A store failing mid-body cuts the connection (the device resumes); say why in the log."""
    try:
        yield from body
    except StoreError as err:
        log.error("artifact store failed mid-download", extra={"key": key, "error": str(err)})
        raise
