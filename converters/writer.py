"""Writing an artifact directory atomically: build it in a temporary sibling, then rename.

A failed or interrupted conversion leaves no OUT_DIR and no temporary directory behind.
``--force`` replaces only something that is recognisably an artifact (or an empty directory).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from converters.device_check import check_on_device_engine
from converters.errors import ConvertError, InputError, one_line
from edgefleet.artifact import ArtifactError, hash_file, load_artifact
from edgefleet.contract import MANIFEST_FILE, Manifest, ModelFile

FileRole = Literal["model", "selftest", "labels", "extra"]


def check_out_dir(out_dir: Path, *, force: bool) -> None:
    """Refuse an existing OUT_DIR unless ``force``, and never replace a non-artifact."""
    if not (out_dir.exists() or out_dir.is_symlink()):
        return
    if not force:
        raise InputError(f"{out_dir} already exists; pass --force to replace it")
    if out_dir.is_symlink() or not out_dir.is_dir():
        raise InputError(f"{out_dir} is not a directory; refusing to replace it")
    if any(out_dir.iterdir()) and not (out_dir / MANIFEST_FILE).is_file():
        raise InputError(
            f"{out_dir} is not empty and holds no {MANIFEST_FILE}; refusing to replace it"
        )


def write_artifact(
    out_dir: Path,
    *,
    files: list[tuple[str, bytes, FileRole]],
    make_manifest: Callable[[list[ModelFile]], Manifest],
    force: bool,
) -> Manifest:
    """Write ``files`` and the manifest built from their hashes, verify (the contract's checks,
    then the agent's engine: load and self-test), and move into place."""
    check_out_dir(out_dir, force=force)
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
        work.chmod(0o755)  # mkdtemp makes 0700; an artifact is meant to be read by services
    except OSError as err:
        raise InputError(f"cannot create {out_dir}: {one_line(err)}") from err
    try:
        entries: list[ModelFile] = []
        for path, data, role in files:
            (work / path).write_bytes(data)
            sha, size = hash_file(work / path)
            entries.append(ModelFile(path=path, sha256=sha, size=size, role=role))
        manifest = make_manifest(entries)
        (work / MANIFEST_FILE).write_text(manifest.to_json(), encoding="utf-8")
        load_artifact(work)
        check_on_device_engine(work)
        _install(work, out_dir, force=force)
        return manifest
    except ArtifactError as err:
        raise ConvertError(f"the written artifact does not verify: {one_line(err)}") from err
    except OSError as err:
        raise ConvertError(f"cannot write the artifact: {one_line(err)}") from err
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _install(work: Path, out_dir: Path, *, force: bool) -> None:
    check_out_dir(out_dir, force=force)
    if not out_dir.exists():
        os.rename(work, out_dir)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
    old.rmdir()
    os.rename(out_dir, old)
    try:
        os.rename(work, out_dir)
    except OSError:
        os.rename(old, out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)
