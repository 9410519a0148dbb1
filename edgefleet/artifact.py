"""Artifact directories and bundles, shared by the converter, the server and the agent.

An *artifact* is a directory holding ``manifest.json`` and the files it lists. A *bundle* is that
directory packed as one ``.tar.gz`` for upload and download. Unpacking treats the bundle as
hostile: only regular files the manifest lists, no links, no paths outside the target, bounded
sizes, every SHA-256 checked. Standard library and the contract only.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from edgefleet.contract import MANIFEST_FILE, ContractError, Manifest, parse_manifest
from edgefleet.contract.manifest import MAX_MANIFEST_BYTES

#: Default ceiling for a bundle's unpacked size; devices pass their disk budget instead.
DEFAULT_MAX_UNPACKED = 512 * 1024 * 1024
_CHUNK = 1024 * 1024


class ArtifactError(Exception):
    """An artifact or bundle that is malformed, incomplete or not what its manifest says."""


def hash_file(path: Path) -> tuple[str, int]:
    """SHA-256 (hex) and size of a file, read in chunks."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def read_manifest(artifact_dir: Path) -> Manifest:
    path = artifact_dir / MANIFEST_FILE
    try:
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise ArtifactError(f"{path} is larger than {MAX_MANIFEST_BYTES} bytes")
        return parse_manifest(path.read_bytes())
    except FileNotFoundError as err:
        raise ArtifactError(f"no {MANIFEST_FILE} in {artifact_dir}") from err
    except ContractError as err:
        raise ArtifactError(str(err)) from err


def verify_files(artifact_dir: Path, manifest: Manifest) -> None:
    """Every listed file exists as a regular file with the listed size and SHA-256."""
    for entry in manifest.files:
        path = artifact_dir / entry.path
        if path.is_symlink() or not path.is_file():
            raise ArtifactError(f"{entry.path}: missing or not a regular file")
        sha, size = hash_file(path)
        if size != entry.size:
            raise ArtifactError(f"{entry.path}: size {size} != manifest {entry.size}")
        if sha != entry.sha256:
            raise ArtifactError(f"{entry.path}: sha256 does not match the manifest")


def load_artifact(artifact_dir: Path) -> Manifest:
    """Read and fully verify an artifact directory."""
    manifest = read_manifest(artifact_dir)
    verify_files(artifact_dir, manifest)
    return manifest


def pack_bundle(artifact_dir: Path, out_path: Path) -> Path:
    """Verify ``artifact_dir`` and pack it into a deterministic ``.tar.gz`` at ``out_path``."""
    manifest = load_artifact(artifact_dir)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".part")
    # No file name or time in the gzip header and none in the tar headers: the same artifact
    # always packs to the same bytes, so its SHA-256 identifies it.
    with (
        tmp.open("wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for name in [MANIFEST_FILE, *sorted(f.path for f in manifest.files)]:
            path = artifact_dir / name
            info = tarfile.TarInfo(name)
            info.size = path.stat().st_size
            info.mode = 0o644
            with path.open("rb") as fh:
                tar.addfile(info, fh)
    os.replace(tmp, out_path)
    return out_path


def unpack_bundle(
    bundle: Path | io.BufferedIOBase,
    dest_dir: Path,
    *,
    max_unpacked_bytes: int = DEFAULT_MAX_UNPACKED,
) -> Manifest:
    """Safely unpack a bundle into ``dest_dir`` (which must not exist) and verify it.

    Writes into a temporary sibling directory and renames it into place only when every check
    has passed, so a failed unpack leaves nothing behind.
    """
    if dest_dir.exists():
        raise ArtifactError(f"{dest_dir} already exists")
    dest_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".unpack-", dir=dest_dir.parent))
    try:
        manifest = _extract(bundle, work, max_unpacked_bytes)
        verify_files(work, manifest)
        os.replace(work, dest_dir)
        return manifest
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def _extract(bundle: Path | io.BufferedIOBase, work: Path, max_bytes: int) -> Manifest:
    try:
        tar = (
            tarfile.open(bundle, "r:gz")
            if isinstance(bundle, Path)
            else tarfile.open(fileobj=bundle, mode="r:gz")
        )
    except (tarfile.TarError, OSError, EOFError) as err:
        raise ArtifactError(f"not a readable .tar.gz bundle: {err}") from err
    with tar:
        try:
            members = _members(tar)
        except (tarfile.TarError, OSError, EOFError) as err:
            raise ArtifactError(f"corrupt or truncated bundle: {err}") from err
        if MANIFEST_FILE not in members:
            raise ArtifactError(f"bundle has no {MANIFEST_FILE}")
        manifest_info = members[MANIFEST_FILE]
        if manifest_info.size > MAX_MANIFEST_BYTES:
            raise ArtifactError(f"{MANIFEST_FILE} in the bundle is too large")
        manifest = _parse(_read(tar, manifest_info))
        wanted = {f.path: f for f in manifest.files}
        unexpected = sorted(set(members) - set(wanted) - {MANIFEST_FILE})
        if unexpected:
            raise ArtifactError(f"bundle holds files the manifest does not list: {unexpected[:5]}")
        total = sum(f.size for f in manifest.files)
        if total > max_bytes:
            raise ArtifactError(f"bundle unpacks to {total} bytes; the limit is {max_bytes}")
        for path, entry in wanted.items():
            info = members.get(path)
            if info is None:
                raise ArtifactError(f"bundle is missing {path}")
            if info.size != entry.size:
                raise ArtifactError(f"{path}: size {info.size} != manifest {entry.size}")
            target = work / path
            target.parent.mkdir(parents=True, exist_ok=True)
            _copy_member(tar, info, target)
        # Keep the manifest byte-for-byte as shipped: the signature covers its content.
        (work / MANIFEST_FILE).write_bytes(_read(tar, manifest_info))
    return manifest


def _members(tar: tarfile.TarFile) -> dict[str, tarfile.TarInfo]:
    members: dict[str, tarfile.TarInfo] = {}
    for count, info in enumerate(tar, start=1):
        if count > 256:
            raise ArtifactError("bundle has too many members")
        if not info.isreg():
            raise ArtifactError(f"bundle member {info.name!r} is not a regular file")
        name = info.name
        if name.startswith("./"):
            name = name[2:]
        if name.startswith("/") or ".." in Path(name).parts or "\\" in name:
            raise ArtifactError(f"bundle member {info.name!r} escapes the artifact directory")
        if name in members:
            raise ArtifactError(f"bundle member {name!r} appears twice")
        members[name] = info
    return members


def _read(tar: tarfile.TarFile, info: tarfile.TarInfo) -> bytes:
    fh = tar.extractfile(info)
    if fh is None:
        raise ArtifactError(f"cannot read {info.name!r} from the bundle")
    try:
        return fh.read()
    except (tarfile.TarError, OSError, EOFError) as err:
        raise ArtifactError(f"corrupt or truncated bundle at {info.name!r}: {err}") from err


def _copy_member(tar: tarfile.TarFile, info: tarfile.TarInfo, target: Path) -> None:
    fh = tar.extractfile(info)
    if fh is None:
        raise ArtifactError(f"cannot read {info.name!r} from the bundle")
    try:
        with target.open("wb") as out:
            shutil.copyfileobj(fh, out, _CHUNK)
    except (tarfile.TarError, OSError, EOFError) as err:
        raise ArtifactError(f"corrupt or truncated bundle at {info.name!r}: {err}") from err


def _parse(raw: bytes) -> Manifest:
    try:
        return parse_manifest(raw)
    except ContractError as err:
        raise ArtifactError(str(err)) from err
