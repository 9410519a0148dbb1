"""A local base image for hosts that cannot pull ``python:3.11-slim`` (no registry reachable).

The Containerfiles take their base as the build argument ``BASE`` (default
``docker.io/library/python:3.11-slim``). Where no registry answers, this module makes a stand-in
with the same contract (Python 3.11 with ``venv``/``ensurepip``, ``useradd``, CA certificates):
a Debian ``minbase`` root from ``debootstrap``, packed as a tarball and ``podman import``-ed.

The tarball is cached under ``~/.cache/edgefleet/images`` (or ``$EDGEFLEET_IMAGES_CACHE``) keyed
on what goes into it (suite, arch, packages, the recipe version): the debootstrap is the one slow
step of a first build (docs/containers.md has the figure), a cache hit is an import or nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

#: Bumped when the recipe changes in a way the other key fields do not show.
RECIPE = 1
DEFAULT_BASE = "docker.io/library/python:3.11-slim"


class BaseImageError(RuntimeError):
    """The base image could not be built; the message names the step (and its log)."""


@dataclass(frozen=True)
class BaseSpec:
    """Everything that goes into the base root (and so into its key)."""

    suite: str = "bookworm"
    arch: str = "amd64"
    mirror: str = "http://deb.debian.org/debian"
    #: bookworm's python3 is 3.11, the version of the default base; python3-venv brings ensurepip.
    packages: tuple[str, ...] = ("python3", "python3-venv", "ca-certificates")

    def key(self) -> str:
        """A hash of suite, arch, packages and recipe (the mirror is left out: same root)."""
        material = json.dumps(
            {
                "suite": self.suite,
                "arch": self.arch,
                "packages": sorted(self.packages),
                "recipe": RECIPE,
            },
            sort_keys=True,
        )
        return hashlib.sha256(material.encode()).hexdigest()[:12]

    @property
    def tag(self) -> str:
        return f"localhost/edgefleet-base:{self.suite}-{self.arch}-{self.key()}"


def cache_dir() -> Path:
    """``$EDGEFLEET_IMAGES_CACHE`` or ``~/.cache/edgefleet/images``."""
    env = os.environ.get("EDGEFLEET_IMAGES_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "edgefleet" / "images"


def podman_problem() -> str | None:
    """Why this host cannot build images, or None when it can."""
    if shutil.which("podman") is None:
        return "podman is not installed: apt-get install -y podman runc"
    return None


def image_exists(tag: str) -> bool:
    done = subprocess.run(["podman", "image", "exists", tag], check=False)  # noqa: S603, S607
    return done.returncode == 0


def image_arch(tag: str) -> str:
    done = subprocess.run(  # noqa: S603
        ["podman", "image", "inspect", "--format", "{{.Architecture}}", tag],  # noqa: S607
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip()


def ensure_base(spec: BaseSpec | None = None, *, log: Path | None = None) -> tuple[str, str]:
    """The base image's tag, building or importing it first when missing.

    Returns ``(tag, how)`` where ``how`` is ``present``, ``imported`` or ``built``.
    """
    spec = spec or BaseSpec()
    problem = podman_problem()
    if problem is not None:
        raise BaseImageError(problem)
    if image_exists(spec.tag) and image_arch(spec.tag) == spec.arch:
        return spec.tag, "present"
    tarball = cache_dir() / f"base-{spec.suite}-{spec.arch}-{spec.key()}.tar"
    how = "imported"
    if not tarball.exists():
        _debootstrap(spec, tarball, log=log)
        how = "built"
    # --arch: without it podman labels the image with the host's architecture, and a build for
    # another --platform then looks for the base in a registry instead.
    _run(
        ["podman", "import", "--os", "linux", "--arch", spec.arch, str(tarball), spec.tag],
        step="podman import",
        log=log,
    )
    return spec.tag, how


def _debootstrap(spec: BaseSpec, tarball: Path, *, log: Path | None) -> None:
    if os.geteuid() != 0:
        raise BaseImageError("debootstrap needs root (or pull python:3.11-slim instead)")
    if shutil.which("debootstrap") is None:
        raise BaseImageError("debootstrap is not installed: apt-get install -y debootstrap")
    tarball.parent.mkdir(parents=True, exist_ok=True)
    work = tarball.parent / f".partial-{spec.arch}-{spec.key()}-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    root = work / "root"
    started = time.monotonic()
    try:
        _run(
            [
                "debootstrap",
                f"--arch={spec.arch}",
                "--variant=minbase",
                f"--include={','.join(spec.packages)}",
                spec.suite,
                str(root),
                spec.mirror,
            ],
            step="debootstrap",
            log=log,
        )
        # What an image does not need: apt lists, docs, man pages, the debootstrap log.
        for junk in ("var/lib/apt/lists", "usr/share/doc", "usr/share/man", "var/cache/apt"):
            shutil.rmtree(root / junk, ignore_errors=True)
            (root / junk).mkdir(parents=True, exist_ok=True)
        partial = work / "base.tar"
        _run(
            ["tar", "--numeric-owner", "-C", str(root), "-cf", str(partial), "."],
            step="tar",
            log=log,
        )
        partial.rename(tarball)
        meta = {"tag": spec.tag, "built_s": round(time.monotonic() - started, 1), **spec.__dict__}
        tarball.with_suffix(".json").write_text(json.dumps(meta, indent=2, default=list))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run(argv: list[str], *, step: str, log: Path | None) -> None:
    sink = log.open("ab") if log is not None else subprocess.DEVNULL
    try:
        done = subprocess.run(  # noqa: S603
            argv, stdout=sink, stderr=subprocess.STDOUT if log else subprocess.PIPE, check=False
        )
    finally:
        if log is not None and not isinstance(sink, int):
            sink.close()
    if done.returncode != 0:
        detail = f"see {log}" if log else (done.stderr or b"").decode(errors="replace")[-400:]
        raise BaseImageError(f"{step} failed (exit {done.returncode}): {detail.strip()}")
