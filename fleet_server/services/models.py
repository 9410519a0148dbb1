"""The model registry: validating an uploaded bundle and recording it."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from edgefleet.artifact import DEFAULT_MAX_UNPACKED, ArtifactError, unpack_bundle
from edgefleet.signing import SignatureError, verify_manifest
from fleet_server.models import ModelVersion
from fleet_server.services.errors import BadRequest, Conflict, NotFound, Unavailable
from fleet_server.storage import ArtifactStore, StoreError, bundle_key

log = logging.getLogger(__name__)


def register_bundle(
    *,
    session: Session,
    store: ArtifactStore,
    bundle: Path,
    sha256: str,
    size: int,
    work_dir: Path,
    trusted_keys: Sequence[bytes],
    require_signed: bool,
    max_unpacked_bytes: int = DEFAULT_MAX_UNPACKED,
) -> ModelVersion:
    """Check a received bundle file (hostile input) and, if sound, store it and record it.

    ``bundle`` is moved into the store on success; on any refusal nothing already stored
    changes. ``work_dir`` is scratch space the caller removes.
    """
    try:
        manifest = unpack_bundle(
            bundle, work_dir / "unpacked", max_unpacked_bytes=max_unpacked_bytes
        )
    except ArtifactError as err:
        raise BadRequest(f"invalid bundle: {err}") from err
    verified = False
    if manifest.signature is not None and trusted_keys:
        try:
            verify_manifest(manifest, trusted_keys)
        except SignatureError as err:
            raise BadRequest(f"invalid bundle: {err}") from err
        verified = True
    if require_signed and not verified:
        raise BadRequest(
            "invalid bundle: this server only accepts manifests with a trusted signature"
        )
    name, version = manifest.name, manifest.version
    if session.get(ModelVersion, (name, version)) is not None:
        raise Conflict(f"model {name}@{version} already exists")
    key = bundle_key(name, version)
    row = ModelVersion(
        name=name,
        version=version,
        format=manifest.format,
        precision=manifest.precision,
        task=manifest.task,
        sha256=sha256,
        size=size,
        signed=manifest.signature is not None,
        signature_key_id=manifest.signature.key_id if manifest.signature else None,
        signature_value=manifest.signature.value if manifest.signature else None,
        signature_verified=verified,
        storage_key=key,
        manifest=manifest.model_dump(mode="json"),
    )
    session.add(row)
    try:
        # The row first: a concurrent upload of the same version fails here, before it could
        # touch the stored file.
        session.flush()
    except IntegrityError as err:
        session.rollback()
        raise Conflict(f"model {name}@{version} already exists") from err
    try:
        if store.exists(key):
            log.warning("replacing an unrecorded bundle left in the store", extra={"key": key})
            store.delete(key)
        store.put(key, bundle)
    except StoreError as err:
        session.rollback()
        raise Unavailable(f"cannot store the bundle: {err}") from err
    try:
        session.commit()
    except Exception:
        session.rollback()
        store.delete(key)
        raise
    session.refresh(row)
    log.info("model registered", extra={"model": f"{name}@{version}", "sha256": sha256})
    return row


def list_models(*, session: Session) -> Sequence[ModelVersion]:
    query = select(ModelVersion).order_by(col(ModelVersion.name), col(ModelVersion.created_at))
    return session.exec(query).all()


def get_model(*, session: Session, name: str, version: str) -> ModelVersion:
    row = session.get(ModelVersion, (name, version))
    if row is None:
        raise NotFound(f"model {name[:64]}@{version[:64]} not found")
    return row
