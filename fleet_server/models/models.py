"""Model versions in the registry: one row per uploaded bundle."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel
from pydantic import Field as PydanticField
from sqlmodel import Field, SQLModel

from fleet_server.models.types import UTCDateTime, utcnow


class ModelVersionBase(SQLModel):
    name: str = Field(primary_key=True, max_length=63, description="Model name.")
    version: str = Field(primary_key=True, max_length=63, description="Model version.")
    format: str = Field(max_length=16, description="'onnx' or 'tflite'.")
    precision: str = Field(max_length=16, description="'fp32', 'fp16', 'int8' or 'mixed'.")
    task: str = Field(max_length=32, description="What the outputs mean.")
    sha256: str = Field(max_length=64, description="SHA-256 of the bundle file.")
    size: int = Field(sa_type=sa.BigInteger, description="Bundle size in bytes.")
    signed: bool = Field(
        description="A trusted key of this server verified the manifest's signature. False for an "
        "unsigned manifest and for a signature nothing here could verify (see signature_status)."
    )
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    # Lineage, given at upload (all optional).
    parent_version: str | None = Field(
        default=None, max_length=63, description="The version of the same model it came from."
    )
    dataset_sha256: str | None = Field(
        default=None, max_length=64, description="SHA-256 of the training data set."
    )
    training_ref: str | None = Field(
        default=None, max_length=200, description="Training code reference, e.g. a commit."
    )


class ModelVersion(ModelVersionBase, table=True):
    __tablename__ = "model_version"

    signature_key_id: str | None = Field(default=None, max_length=64)
    signature_value: str | None = Field(default=None, max_length=200)
    storage_key: str = Field(max_length=255, description="Key of the bundle in the store.")
    manifest: dict[str, Any] = Field(sa_type=sa.JSON)
    converter_report: dict[str, Any] | None = Field(
        default=None,
        sa_type=sa.JSON,
        description="The bundle's converter report (manifest build.report_file), if it has one.",
    )


#: What a version's signature is worth: ``verified`` by a trusted key (``signed`` is true),
#: ``unverified`` (present, but this server had no trusted key that verifies it; agents with
#: trusted keys still check it), or ``unsigned``.
SignatureStatus = Literal["verified", "unverified", "unsigned"]


def signature_status(row: ModelVersion) -> SignatureStatus:
    if row.signed:
        return "verified"
    return "unsigned" if row.signature_key_id is None else "unverified"


class ModelVersionPublic(ModelVersionBase):
    signature_status: SignatureStatus = Field(
        description="'verified' (a trusted key verified it: the only kind rollouts ship), "
        "'unverified' (the manifest carries a signature no trusted key of this server verified) "
        "or 'unsigned'."
    )
    signature_key_id: str | None = Field(
        default=None, description="Key id the manifest's signature names, verified or not."
    )
    manifest: dict[str, Any] | None = Field(default=None, description="The full manifest.")
    converter_report: dict[str, Any] | None = Field(
        default=None, description="The converter's report, if the bundle carried one."
    )

    @classmethod
    def of(cls, row: ModelVersion, *, with_manifest: bool = True) -> ModelVersionPublic:
        data = row.model_dump(include=set(ModelVersionBase.model_fields))
        data.update(signature_status=signature_status(row), signature_key_id=row.signature_key_id)
        if not with_manifest:
            return cls(**data)
        return cls(**data, manifest=row.manifest, converter_report=row.converter_report)


class LineageEntry(BaseModel):
    """One version in a lineage chain (the asked-for version first, then its ancestors)."""

    name: str
    version: str
    parent_version: str | None
    dataset_sha256: str | None
    training_ref: str | None
    created_at: datetime
    has_converter_report: bool

    @classmethod
    def of(cls, row: ModelVersion) -> LineageEntry:
        return cls(
            name=row.name,
            version=row.version,
            parent_version=row.parent_version,
            dataset_sha256=row.dataset_sha256,
            training_ref=row.training_ref,
            created_at=row.created_at,
            has_converter_report=row.converter_report is not None,
        )


class LineagePublic(BaseModel):
    name: str
    version: str
    chain: list[LineageEntry] = PydanticField(
        description="The version itself, then its parent, grandparent, ... (at most 100)."
    )
    truncated: bool = PydanticField(
        description="The chain stopped early: at the depth limit, a cycle or a missing parent."
    )
