"""/api/v1/samples: devices upload captured samples; people list, read, label and delete them.

A device token may only upload (``POST /samples``); every other route needs an operator API
token (viewer to read, operator to label or delete), so a device cannot read or label samples.
"""

from __future__ import annotations

import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field
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
from fleet_server.api.errors import BODY_REFUSALS, INPUT_REFUSALS, error_responses
from fleet_server.api.sample_upload import FILE, META, receive_sample
from fleet_server.models import Sample
from fleet_server.services import samples as service
from fleet_server.services.errors import ServiceError, TooLarge
from fleet_server.services.labels import BulkLabels, LabelSet, apply_labels
from fleet_server.services.samples import SampleFilter

router = APIRouter(prefix="/samples", tags=["samples"])

Reason = Literal[
    "low_confidence", "margin", "outside_reference", "class", "random", "shadow_disagreement"
]

_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [META, FILE],
                    "properties": {
                        META: {"type": "string", "description": "SampleMeta JSON."},
                        FILE: {"type": "string", "format": "binary"},
                    },
                }
            }
        },
    }
}


class SamplePublic(BaseModel):
    id: int = Field(description="Server id.")
    sample_id: str = Field(description="The device's id of the sample.")
    device_id: str
    model: str
    version: str
    reason: str
    captured_at: datetime
    received_at: datetime
    confidence: float | None
    margin: float | None
    predicted: str | None
    outputs: list[float]
    input_score: float | None
    input_stats: dict[str, Any] | None
    content_type: str
    sha256: str
    size: int
    labelled: bool
    label: str | None
    boxes: list[dict[str, Any]] | None
    labelled_by: str | None
    labelled_at: datetime | None

    @classmethod
    def of(cls, row: Sample) -> SamplePublic:
        data = row.model_dump()
        data["model"] = data.pop("model_name")
        data["version"] = data.pop("model_version")
        return cls(**data)


class SampleList(BaseModel):
    items: list[SamplePublic]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null: last.")


class UploadResult(BaseModel):
    id: int = Field(description="Server id of the sample.")
    sha256: str
    duplicate: bool = Field(
        description="This (device, sample_id) was already stored: nothing was added (HTTP 200)."
    )
    content_shared: bool = Field(
        description="The same content was already in the store (stored once)."
    )


class LabelsResult(BaseModel):
    labelled: int


@router.post(
    "",
    status_code=201,
    openapi_extra=_UPLOAD_BODY,
    responses=error_responses(
        DEVICE_REFUSALS,
        INPUT_REFUSALS,
        403,
        409,
        413,
        415,
        why={
            403: "Not a device token, another device's sample, a model the device does not "
            "run, or a model without a capture policy.",
            409: "sha256 or size do not match the content, or the sample_id is stored with "
            "other content.",
            413: "The sample is larger than `max_sample_bytes`.",
            415: "Not multipart, or the content is neither a JPEG nor a .npy (sniffed), or "
            "not the type the meta names.",
            429: "Over the device's daily sample budget (the capture policy's per-day limits), "
            "or too many failed authentications.",
        },
    ),
)
async def upload_sample(
    request: Request,
    runtime: RuntimeDep,
    settings: SettingsDep,
    session: SessionDep,
    store: StoreDep,
    caller: DeviceAuth,
) -> Any:
    """Upload one captured sample (device token; parts ``meta`` and ``file``)."""
    stats = runtime.samples
    work = Path(tempfile.mkdtemp(prefix="sample-", dir=runtime.tmp_dir))
    try:
        content = work / "content"
        try:
            received = await receive_sample(
                content_type=request.headers.get("content-type"),
                content_length=request.headers.get("content-length"),
                stream=request.stream(),
                dest=content,
                max_bytes=settings.max_sample_bytes,
            )
        except ServiceError as err:
            stats.refuse("too_big" if isinstance(err, TooLarge) else "malformed")
            raise
        stored = await run_in_threadpool(
            lambda: service.store_upload(
                session=session,
                store=store,
                stats=stats,
                caller_device=caller.device_id,
                meta_raw=received.meta,
                content=content,
                size=received.size,
                sha256=received.sha256,
                head=received.head,
                max_bytes=settings.max_sample_bytes,
            )
        )
        row = stored.row
        note_target(request, f"sample:{row.id}", device=row.device_id, replay=stored.replay)
        result = UploadResult(
            id=row.id or 0,
            sha256=row.sha256,
            duplicate=stored.replay,
            content_shared=stored.content_shared,
        )
        return JSONResponse(result.model_dump(), status_code=200 if stored.replay else 201)
    finally:
        await run_in_threadpool(shutil.rmtree, work, True)


@router.get("", responses=error_responses(VIEWER_REFUSALS, INPUT_REFUSALS))
def list_samples(
    session: SessionDep,
    _: Viewer,
    model: Annotated[str | None, Query(max_length=63)] = None,
    version: Annotated[str | None, Query(max_length=63)] = None,
    device: Annotated[str | None, Query(max_length=63)] = None,
    reason: Reason | None = None,
    labelled: bool | None = None,
    since: Annotated[datetime | None, Query(description="captured_at >= since")] = None,
    until: Annotated[datetime | None, Query(description="captured_at < until")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=40)] = None,
) -> SampleList:
    """Samples newest first, filtered; page with ``cursor`` = the previous ``next_cursor``."""
    flt = SampleFilter(
        model=model,
        version=version,
        device=device,
        reason=reason,
        labelled=labelled,
        since=_aware(since),
        until=_aware(until),
    )
    rows, next_cursor = service.list_samples(session=session, flt=flt, limit=limit, cursor=cursor)
    return SampleList(items=[SamplePublic.of(r) for r in rows], next_cursor=next_cursor)


@router.post(
    "/labels",
    responses=error_responses(
        OPERATOR_REFUSALS,
        BODY_REFUSALS,
        404,
        why={
            404: "Unknown sample ids (named); nothing labelled.",
            422: "Unknown classes (named) or an invalid body; nothing labelled.",
        },
    ),
)
def bulk_label(
    body: BulkLabels, request: Request, session: SessionDep, caller: Operator
) -> LabelsResult:
    """Label many samples at once: all or nothing."""
    note_target(request, "samples", labels=len(body.labels))
    rows = apply_labels(
        session=session, items=[(item.id, item) for item in body.labels], actor=caller.actor
    )
    return LabelsResult(labelled=len(rows))


@router.get("/{sample_id}", responses=error_responses(VIEWER_REFUSALS, INPUT_REFUSALS, 404))
def get_sample(sample_id: int, session: SessionDep, _: Viewer) -> SamplePublic:
    return SamplePublic.of(service.get_sample(session=session, sample_id=sample_id))


@router.get(
    "/{sample_id}/content",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"image/jpeg": {}, "application/x-npy": {}}},
        **error_responses(VIEWER_REFUSALS, INPUT_REFUSALS, 404),
    },
)
def get_content(
    sample_id: int, session: SessionDep, store: StoreDep, _: Viewer
) -> StreamingResponse:
    row = service.get_sample(session=session, sample_id=sample_id)
    chunks = service.content(store=store, row=row)
    return StreamingResponse(
        chunks,
        media_type=row.content_type,
        headers={"Content-Length": str(row.size), "ETag": f'"{row.sha256}"'},
    )


@router.delete(
    "/{sample_id}",
    status_code=204,
    responses=error_responses(OPERATOR_REFUSALS, INPUT_REFUSALS, 404),
)
def delete_sample(
    sample_id: int, request: Request, session: SessionDep, store: StoreDep, _: Operator
) -> None:
    note_target(request, f"sample:{sample_id}")
    service.get_sample(session=session, sample_id=sample_id)
    service.delete_samples(session=session, store=store, ids=[sample_id])


@router.put(
    "/{sample_id}/label",
    responses=error_responses(
        OPERATOR_REFUSALS,
        BODY_REFUSALS,
        404,
        why={422: "An unknown class (named) or an invalid body."},
    ),
)
def label_sample(
    sample_id: int, body: LabelSet, request: Request, session: SessionDep, caller: Operator
) -> SamplePublic:
    """Set the sample's label: ``{"label": "cat"}`` or ``{"boxes": [{label, x1, y1, x2, y2}]}``."""
    note_target(request, f"sample:{sample_id}")
    (row,) = apply_labels(session=session, items=[(sample_id, body)], actor=caller.actor)
    return SamplePublic.of(row)


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value
