"""The model registry: validating an uploaded bundle and recording it."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from edgefleet.artifact import DEFAULT_MAX_UNPACKED, ArtifactError, unpack_bundle
from edgefleet.contract import ContractError, Manifest, parse_manifest
from edgefleet.signing import SignatureError, verify_manifest
from fleet_server.models import ModelVersion
from fleet_server.services.errors import (
    BadRequest,
    Conflict,
    NotFound,
    Unavailable,
    Unprocessable,
)
from fleet_server.services.model_io import ModelIOError, io_mismatch, read_model_io
from fleet_server.storage import ArtifactStore, StoreError, bundle_key

log = logging.getLogger(__name__)

#: Largest converter report stored with a version.
MAX_REPORT_BYTES = 256 * 1024
#: Deepest lineage chain returned.
MAX_LINEAGE_DEPTH = 100


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
    lineage: Lineage | None = None,
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
    not_verified = unverified_reason(manifest, trusted_keys)
    if manifest.signature is not None and trusted_keys and not_verified is not None:
        raise BadRequest(f"invalid bundle: {not_verified}")
    if require_signed and not_verified is not None:
        raise BadRequest(
            "invalid bundle: this server only accepts manifests with a trusted signature"
        )
    if manifest.signature is not None and not_verified is not None:
        log.warning(
            "signature recorded as unverified: the server has no trusted keys",
            extra={
                "model": f"{manifest.name}@{manifest.version}",
                "key_id": manifest.signature.key_id,
            },
        )
    check_model_io(manifest, work_dir / "unpacked")
    name, version = manifest.name, manifest.version
    if session.get(ModelVersion, (name, version)) is not None:
        raise Conflict(f"model {name}@{version} already exists")
    lineage = lineage or Lineage()
    if lineage.parent_version is not None:
        if lineage.parent_version == version:
            raise BadRequest(f"model {name}@{version} cannot be its own parent")
        if session.get(ModelVersion, (name, lineage.parent_version)) is None:
            raise BadRequest(
                f"parent {name}@{lineage.parent_version} is not registered (a parent must be "
                "an uploaded version of the same model)"
            )
    report = converter_report(work_dir / "unpacked", manifest.build.report_file)
    key = bundle_key(name, version)
    row = ModelVersion(
        name=name,
        version=version,
        format=manifest.format,
        precision=manifest.precision,
        task=manifest.task,
        sha256=sha256,
        size=size,
        signed=not_verified is None,
        signature_key_id=manifest.signature.key_id if manifest.signature else None,
        signature_value=manifest.signature.value if manifest.signature else None,
        storage_key=key,
        manifest=manifest.model_dump(mode="json"),
        parent_version=lineage.parent_version,
        dataset_sha256=lineage.dataset_sha256,
        training_ref=lineage.training_ref,
        converter_report=report,
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


def check_model_io(manifest: Manifest, unpacked: Path) -> None:
    """Refuse (422) a manifest whose inputs/outputs are not the model file's own, or a model
    file that does not read as its format (:mod:`fleet_server.services.model_io`)."""
    try:
        real = read_model_io(manifest.format, unpacked / manifest.model_file)
    except ModelIOError as err:
        raise Unprocessable(
            f"invalid bundle: {manifest.model_file} is not a readable {manifest.format} model: "
            f"{err}"
        ) from err
    problem = io_mismatch(manifest, real)
    if problem is not None:
        raise Unprocessable(f"manifest does not match {manifest.model_file}: {problem}")


def unverified_reason(manifest: Manifest, trusted_keys: Sequence[bytes]) -> str | None:
    """Why ``manifest`` does not count as signed, or None when a trusted key verifies it.

    The one test of "signed" on the server: a signature counts only once verified. Without
    trusted keys nothing verifies, so a random signature is no better than none (issue #11,
    finding 7: it used to be stored as ``signed`` and shipped by rollouts).
    """
    if manifest.signature is None:
        return "the manifest is not signed"
    if not trusted_keys:
        return _no_trusted_keys(manifest.signature.key_id)
    try:
        verify_manifest(manifest, trusted_keys)
    except SignatureError as err:
        return str(err)
    return None


def require_verified(*, row: ModelVersion, trusted_keys: Sequence[bytes]) -> None:
    """Refuse (422, with the reason) a version whose signature no trusted key verifies.

    A version stored unverified (uploaded before its key was trusted) is checked again against
    today's keys and marked signed when it passes; the caller's commit keeps that.
    """
    ref = f"{row.name}@{row.version}"
    if row.signed:
        return
    if row.signature_key_id is None:
        raise Unprocessable(
            f"model {ref} is not signed; rollouts ship signed artifacts only (sign it with "
            "`edgefleet convert --signing-key`)"
        )
    if not trusted_keys:
        reason: str | None = _no_trusted_keys(row.signature_key_id)
    else:
        try:
            manifest = parse_manifest(json.dumps(row.manifest).encode())
        except ContractError as err:
            raise Unprocessable(f"model {ref}: its stored manifest does not parse: {err}") from err
        reason = unverified_reason(manifest, trusted_keys)
    if reason is not None:
        raise Unprocessable(
            f"model {ref} has an unverified signature ({reason}); rollouts ship artifacts "
            "signed by a trusted key only (agents with trusted keys still verify every bundle)"
        )
    row.signed = True
    log.info("signature verified", extra={"model": ref, "key_id": row.signature_key_id})


def _no_trusted_keys(key_id: str) -> str:
    return (
        f"this server has no trusted keys (EDGEFLEET_TRUSTED_KEYS), so nothing verifies the "
        f"signature of key {key_id}"
    )


@dataclass(frozen=True)
class Lineage:
    """Where a version came from, as given at upload (each part optional, checked by the API)."""

    parent_version: str | None = None
    dataset_sha256: str | None = None
    training_ref: str | None = None


def converter_report(unpacked: Path, report_file: str | None) -> dict[str, Any] | None:
    """The parsed converter report the manifest names, if the bundle carries it (it is then
    listed in the manifest's files, so its hash was verified); a report that is not a JSON
    object, or larger than :data:`MAX_REPORT_BYTES`, is refused."""
    if report_file is None:
        return None
    path = unpacked / report_file
    if not path.is_file():
        return None
    if path.stat().st_size > MAX_REPORT_BYTES:
        raise BadRequest(
            f"invalid bundle: converter report {report_file!r} is larger than "
            f"{MAX_REPORT_BYTES} bytes"
        )
    try:
        data = json.loads(path.read_bytes())
    except (ValueError, RecursionError) as err:
        raise BadRequest(f"invalid bundle: converter report {report_file!r} is not JSON") from err
    if not isinstance(data, dict):
        raise BadRequest(f"invalid bundle: converter report {report_file!r} is not an object")
    return data


def lineage_chain(
    *, session: Session, name: str, version: str, max_depth: int = MAX_LINEAGE_DEPTH
) -> tuple[list[ModelVersion], bool]:
    """``version`` and its ancestors, nearest first; True if the walk stopped early (depth
    limit, a cycle, or a parent no longer registered)."""
    row = get_model(session=session, name=name, version=version)
    chain = [row]
    seen = {row.version}
    while row.parent_version is not None:
        if len(chain) >= max_depth or row.parent_version in seen:
            return chain, True
        parent = session.get(ModelVersion, (name, row.parent_version))
        if parent is None:
            return chain, True
        chain.append(parent)
        seen.add(parent.version)
        row = parent
    return chain, False


def list_models(*, session: Session) -> Sequence[ModelVersion]:
    query = select(ModelVersion).order_by(col(ModelVersion.name), col(ModelVersion.created_at))
    return session.exec(query).all()


def get_model(*, session: Session, name: str, version: str) -> ModelVersion:
    row = session.get(ModelVersion, (name, version))
    if row is None:
        raise NotFound(f"model {name[:64]}@{version[:64]} not found")
    return row
