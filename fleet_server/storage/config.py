"""Typed configuration of each artifact store, discriminated on ``kind`` (the server's
``artifact_store`` setting; the stores themselves are :mod:`.local` and :mod:`.s3`)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

MIB = 1024 * 1024


class LocalStoreConfig(BaseModel):
    """Bundles in a local directory as ``<name>/<version>.tar.gz``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["local"] = Field(default="local", description="Store type key.")
    root: Path | None = Field(
        default=None, description="Directory for bundles; default <data_dir>/artifacts."
    )


#: S3 bucket names: 3-63 lower-case letters, digits, '.' and '-', starting and ending with a
#: letter or digit, no '..', not an IP address.
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IPV4 = re.compile(r"\d{1,3}(\.\d{1,3}){3}")
_PREFIX = re.compile(r"[A-Za-z0-9._/-]{0,200}")


class S3StoreConfig(BaseModel):
    """Bundles in an S3-compatible bucket as ``<prefix><name>/<version>.tar.gz`` (needs the
    ``s3`` extra: boto3). Without access_key_id/secret_access_key, boto3's standard chain is
    used: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, ~/.aws, an instance role."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["s3"] = Field(description="Store type key.")
    bucket: str = Field(description="Bucket name (must exist; the server does not create it).")
    prefix: str = Field(
        default="",
        description="Key prefix inside the bucket, e.g. 'edgefleet/' (letters, digits, . _ - /; "
        "a trailing '/' is added).",
    )
    endpoint_url: str | None = Field(
        default=None,
        description="http(s)://host[:port] of an S3-compatible server (MinIO, Ceph, ...); "
        "None: AWS S3.",
    )
    region: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9-]{1,40}$",
        description="Region; None: AWS_DEFAULT_REGION or boto3's default.",
    )
    access_key_id: SecretStr | None = Field(
        default=None, description="Access key id; None: the standard AWS environment variables."
    )
    secret_access_key: SecretStr | None = Field(
        default=None, description="Secret access key; set together with access_key_id."
    )
    addressing_style: Literal["auto", "path", "virtual"] = Field(
        default="auto",
        description="'path' for most self-hosted servers (http://host/bucket/key); 'virtual' "
        "for bucket.host.",
    )
    multipart_threshold_bytes: int = Field(
        default=64 * MIB,
        ge=5 * MIB,
        le=5 * 1024 * MIB,
        description="Bundles at least this large are uploaded in parts of this size "
        "(S3's minimum part is 5 MiB).",
    )
    timeout_s: float = Field(
        default=30.0, gt=0, le=600, description="Connect and read timeout of each S3 request."
    )

    @field_validator("bucket")
    @classmethod
    def _check_bucket(cls, value: str) -> str:
        if not _BUCKET.fullmatch(value) or ".." in value or _IPV4.fullmatch(value):
            raise ValueError(
                "bucket must be 3-63 lower-case letters, digits, '.' or '-', start and end "
                "with a letter or digit, with no '..' and not an IP address"
            )
        return value

    @field_validator("prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        if not _PREFIX.fullmatch(value):
            raise ValueError("prefix may use only letters, digits and . _ - / (at most 200)")
        if value.startswith("/") or "//" in value:
            raise ValueError("prefix must not start with '/' or contain '//'")
        if any(part in (".", "..") for part in value.split("/")):
            raise ValueError("prefix must not contain '.' or '..' segments")
        return value if not value or value.endswith("/") else value + "/"

    @field_validator("endpoint_url")
    @classmethod
    def _check_endpoint(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("endpoint_url must be http(s)://host[:port]")
        if parts.username is not None or parts.password is not None:
            raise ValueError(
                "endpoint_url must not carry credentials; use access_key_id/secret_access_key"
            )
        if parts.query or parts.fragment:
            raise ValueError("endpoint_url must not have a query or fragment")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _check_keys(self) -> S3StoreConfig:
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("set access_key_id and secret_access_key together (or neither)")
        return self


#: Where bundles live: a discriminated union on ``kind``.
StoreConfig = Annotated[LocalStoreConfig | S3StoreConfig, Field(discriminator="kind")]
