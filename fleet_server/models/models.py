"""Model versions in the registry: one row per uploaded bundle."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
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
    signed: bool = Field(description="The manifest carries a signature.")
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class ModelVersion(ModelVersionBase, table=True):
    __tablename__ = "model_version"

    signature_key_id: str | None = Field(default=None, max_length=64)
    signature_value: str | None = Field(default=None, max_length=200)
    signature_verified: bool = Field(default=False)
    storage_key: str = Field(max_length=255, description="Key of the bundle in the store.")
    manifest: dict[str, Any] = Field(sa_type=sa.JSON)


class ModelVersionPublic(ModelVersionBase):
    manifest: dict[str, Any] | None = Field(default=None, description="The full manifest.")

    @classmethod
    def of(cls, row: ModelVersion, *, with_manifest: bool = True) -> ModelVersionPublic:
        data = row.model_dump(include=set(ModelVersionBase.model_fields))
        return cls(**data, manifest=row.manifest if with_manifest else None)
