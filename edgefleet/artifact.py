"""Artifact directories and bundles, shared by the converter, the server and the agent.

An *artifact* is a directory holding ``manifest.json`` and the files it lists. A *bundle* is that
directory packed as one ``.tar.gz`` for upload and download. Unpacking treats the bundle as
hostile: only regular files the manifest lists, no links, no paths outside the target, bounded
sizes, every SHA-256 checked. It reads the stream with :mod:`edgefleet.tar_stream` (headers
checked before what they announce is read), never :mod:`tarfile`, which is used to pack only.
Standard library and the contract only.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, cast

from edgefleet.contract import MANIFEST_FILE, ContractError, Manifest, parse_manifest
from edgefleet.contract.manifest import MAX_MANIFEST_BYTES
from edgefleet.digest import sha256
from edgefleet.tar_stream import TarStream, TarStreamError

#: Default ceiling for a bundle's unpacked size; devices pass their disk budget instead.
DEFAULT_MAX_UNPACKED = 512 * 1024 * 1024
#: Most members a bundle may hold (ours hold the manifest and three to five files).
MAX_MEMBERS = 256
_CHUNK = 1024 * 1024


class ArtifactError(Exception):
    """An artifact or bundle that is malformed, incomplete or not what its manifest says."""


def hash_file(path: Path) -> tuple[str, int]:
    """SHA-256 (hex) and size of a file, read in chunks."""
    digest = sha256()  # OpenSSL's only where already loaded (edgefleet.digest)
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
    # Here, not at the top: a device only unpacks (edgefleet.tar_stream), and tarfile is
    # 0.4 MB of RSS it never uses (bench/memory_bench.py).
    import tarfile

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
    """Stream the members into ``work`` (the caller removes it on failure), then check them
    against the manifest. :class:`TarStream` refuses hostile headers before reading them; the
    manifest's own size is bounded separately from ``max_bytes``."""
    try:
        with _opened(bundle) as raw:
            stream = TarStream(
                raw, max_members=MAX_MEMBERS, max_data_bytes=max_bytes + MAX_MANIFEST_BYTES
            )
            manifest_raw, sizes = _stream_members(stream, work, max_bytes)
    except TarStreamError as err:
        raise ArtifactError(f"not a readable .tar.gz bundle: {err}") from err
    except OSError as err:
        raise ArtifactError(f"cannot unpack the bundle: {err}") from err
    if manifest_raw is None:
        raise ArtifactError(f"bundle has no {MANIFEST_FILE}")
    manifest = _parse(manifest_raw)
    wanted = {f.path: f for f in manifest.files}
    unexpected = sorted(set(sizes) - set(wanted))
    if unexpected:
        raise ArtifactError(f"bundle holds files the manifest does not list: {unexpected[:5]}")
    for path, entry in wanted.items():
        if path not in sizes:
            raise ArtifactError(f"bundle is missing {path}")
        if sizes[path] != entry.size:
            raise ArtifactError(f"{path}: size {sizes[path]} != manifest {entry.size}")
    # Keep the manifest byte-for-byte as shipped: the signature covers its content.
    (work / MANIFEST_FILE).write_bytes(manifest_raw)
    return manifest


def _stream_members(
    stream: TarStream, work: Path, max_bytes: int
) -> tuple[bytes | None, dict[str, int]]:
    """Write every member but the manifest under ``work``; return the manifest's bytes and
    each written member's size."""
    manifest_raw: bytes | None = None
    sizes: dict[str, int] = {}
    total = 0
    for member in stream:
        name = _safe_name(member.name)
        if name in sizes or (name == MANIFEST_FILE and manifest_raw is not None):
            raise ArtifactError(f"bundle member {name!r} appears twice")
        if name == MANIFEST_FILE:
            if member.size > MAX_MANIFEST_BYTES:
                raise ArtifactError(f"{MANIFEST_FILE} in the bundle is too large")
            manifest_raw = stream.read(member.size)
            continue
        total += member.size
        if total > max_bytes:
            raise ArtifactError(
                f"bundle unpacks to {total} bytes or more; the limit is {max_bytes}"
            )
        target = work / name
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("wb") as out:
            while chunk := stream.read(_CHUNK):
                out.write(chunk)
        sizes[name] = member.size
    return manifest_raw, sizes


def _safe_name(raw: str) -> str:
    name = raw[2:] if raw.startswith("./") else raw
    if not name or name.startswith("/") or ".." in Path(name).parts or "\\" in name:
        raise ArtifactError(f"bundle member {raw!r} escapes the artifact directory")
    return name


@contextlib.contextmanager
def _opened(bundle: Path | io.BufferedIOBase) -> Iterator[BinaryIO]:
    if isinstance(bundle, Path):
        with bundle.open("rb") as fh:
            yield fh
    else:
        yield cast(BinaryIO, bundle)


def _parse(raw: bytes) -> Manifest:
    try:
        return parse_manifest(raw)
    except ContractError as err:
        raise ArtifactError(str(err)) from err
