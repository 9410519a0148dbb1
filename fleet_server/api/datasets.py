"""/api/v1/datasets/{model}/snapshot: a labelled dataset snapshot's manifest (and generated
documents); the client fetches each listed file from ``/samples/{id}/content`` and checks its
sha256."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from fleet_server.api.deps import VIEWER_REFUSALS, SessionDep, StoreDep, Viewer
from fleet_server.api.errors import INPUT_REFUSALS, error_responses
from fleet_server.api.samples import Reason
from fleet_server.services.snapshots import SnapshotFormat, build_snapshot

router = APIRouter(prefix="/datasets", tags=["samples"])


class SnapshotPublic(BaseModel):
    sha256: str = Field(
        description="SHA-256 of the manifest's canonical JSON (sorted keys, no spaces): the "
        "dataset_sha256 to give a model trained on this snapshot."
    )
    manifest: dict[str, Any] = Field(description="Files (path, sha256, size, sample), counts.")
    documents: dict[str, Any] = Field(
        description="Generated files by path (COCO annotations.json, Label Studio tasks.json)."
    )


@router.get(
    "/{model}/snapshot",
    responses=error_responses(
        VIEWER_REFUSALS,
        INPUT_REFUSALS,
        404,
        why={404: "No (labelled) samples match.", 400: "More samples match than a snapshot holds."},
    ),
)
async def snapshot(
    session: SessionDep,
    store: StoreDep,
    _: Viewer,
    model: Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$", description="Model name.")],
    format: SnapshotFormat = "imagefolder",  # noqa: A002 - the CLI's and the API's name
    version: Annotated[str | None, Query(max_length=63)] = None,
    device: Annotated[str | None, Query(max_length=63)] = None,
    reason: Reason | None = None,
) -> SnapshotPublic:
    """The snapshot of ``model``'s labelled samples (every sample for ``labelstudio``)."""
    built = await run_in_threadpool(
        lambda: build_snapshot(
            session=session,
            store=store,
            model=model,
            version=version,
            fmt=format,
            device=device,
            reason=reason,
        )
    )
    return SnapshotPublic(sha256=built.sha256, manifest=built.manifest, documents=built.documents)
