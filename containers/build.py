"""``python -m containers.build`` (``make images``): the server and agent images.

Steps: this tree's edgefleet wheel (built from a copy: setuptools writes build/ beside the
sources), the dependency wheels of each image's extra for the target platform (``pip download``
on the host — a container needs no registry access, and pip's cache makes a rebuild cheap),
then ``podman build`` of containers/Containerfile.{server,agent} with ``BASE`` as a build
argument. ``--base`` defaults to the official ``python:3.11-slim``; when it is neither present
nor pullable (no registry reachable), the local debootstrap base of :mod:`containers.base` is
used instead and the build says so.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from containers.base import (
    DEFAULT_BASE,
    BaseImageError,
    BaseSpec,
    cache_dir,
    ensure_base,
    image_arch,
    image_exists,
)
from containers.emulation import emulation_problem, host_arch
from edgefleet import wheel
from edgefleet.wheel import ROOT

HERE = Path(__file__).resolve().parent
#: image name → (Containerfile, the edgefleet extras its venv holds).
IMAGES: dict[str, tuple[str, str]] = {
    "server": ("Containerfile.server", "server,s3"),
    "agent": ("Containerfile.agent", "agent"),
}
#: Debian architecture → (OCI platform, CPU name in manylinux tags).
ARCHES: dict[str, tuple[str, str]] = {
    "amd64": ("linux/amd64", "x86_64"),
    "arm64": ("linux/arm64", "aarch64"),
}
#: The base's glibc (bookworm, as in python:3.11-slim): with an explicit --platform pip takes
#: only the tags it is given, so every manylinux_2_N up to it is listed.
GLIBC_MINOR = 36


def platform_tags(arch: str) -> list[str]:
    cpu = ARCHES[arch][1]
    tags = [f"manylinux_2_{minor}_{cpu}" for minor in range(GLIBC_MINOR, 16, -1)]
    return [*tags, f"manylinux2014_{cpu}", f"linux_{cpu}"]


class ImageBuildError(RuntimeError):
    """A build step failed; the message names the step."""


#: The label holding an image's input key (:func:`image_inputs`).
INPUTS_LABEL = "io.edgefleet.inputs"


@dataclass(frozen=True)
class Built:
    image: str
    tag: str
    seconds: float
    size_bytes: int
    #: True when an image with the same input key was already there and nothing was built.
    cached: bool = False


def build_wheel(out: Path) -> Path:
    """This tree's wheel (:func:`edgefleet.wheel.build_wheel`), its failure an image error."""
    try:
        return wheel.build_wheel(out, leave_out=("tests", "bench"))
    except wheel.WheelBuildError as exc:
        raise ImageBuildError(str(exc)) from exc


def download_wheels(wheel: Path, extras: str, arch: str, out: Path) -> bool:
    """The dependency wheels of ``edgefleet[extras]`` for CPython 3.11 on ``arch`` into
    ``out`` (binary wheels only: nothing is compiled in the image). Kept while pyproject.toml,
    the extras and the platforms are unchanged (a stamp in ``out``): the cached build then
    makes no registry round trip and the image's dependency layer stays cached. Returns
    whether it downloaded."""
    stamp = out / ".inputs"
    inputs = hashlib.sha256(
        json.dumps([(ROOT / "pyproject.toml").read_text(), extras, platform_tags(arch)]).encode()
    ).hexdigest()
    if stamp.exists() and stamp.read_text() == inputs:
        return False
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    platforms = [arg for tag in platform_tags(arch) for arg in ("--platform", tag)]
    run_step(
        [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check"]
        + ["--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp"]
        + [
            "--abi",
            "cp311",
            *platforms,
            "-d",
            str(out),
            f"edgefleet[{extras}] @ {wheel.resolve().as_uri()}",
        ],
        step=f"pip download edgefleet[{extras}] ({arch})",
    )
    for own in out.glob("edgefleet-*.whl"):
        own.unlink()  # installed on its own, after the cached dependency stage
    stamp.write_text(inputs)
    return True


def context_for(name: str, wheel: Path, arch: str, work: Path) -> Path:
    context = work / arch / name
    download_wheels(wheel, IMAGES[name][1], arch, context / "wheels")
    dist = context / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    dist.mkdir()
    shutil.copy2(wheel, dist / wheel.name)
    shutil.copy2(HERE / "agent-entrypoint.sh", context / "agent-entrypoint.sh")
    return context


def resolve_base(base: str, arch: str) -> str:
    """``base`` when present or pullable, else the local debootstrap base (built if missing)."""
    if base == "local":
        return ensure_base(BaseSpec(arch=arch))[0]
    # Of the right architecture: a python:3.11-slim pulled for the host must not become the
    # base of an arm64 image (podman would run its x86 binaries under the arm64 tag).
    if image_exists(base) and image_arch(base) == arch:
        return base
    pulled = subprocess.run(  # noqa: S603
        ["podman", "pull", "--quiet", "--platform", ARCHES[arch][0], base],  # noqa: S607
        capture_output=True,
        text=True,
        check=False,
    )
    if pulled.returncode == 0:
        return base
    reason = (pulled.stderr.strip().splitlines() or ["unknown error"])[-1][:200]
    tag, how = ensure_base(BaseSpec(arch=arch))
    print(f"images: cannot pull {base} ({reason}); using the local base {tag} ({how})")
    return tag


def image_inputs(name: str, *, context: Path, base_id: str, arch: str) -> str:
    """The key of everything an image is made of: its Containerfile and entrypoint, the base
    image's id, the platform, the dependency wheels' names (name and version) and the content of
    the edgefleet wheel (its RECORD: a sha256 per file, so a rebuilt but unchanged wheel has the
    same key).

    Why: a cross-architecture image is built under qemu, where even the last layer (installing
    the edgefleet wheel) takes minutes; an image whose inputs have not changed is kept as it is.
    """
    wheels = sorted(path.name for path in (context / "wheels").glob("*.whl"))
    (own,) = sorted((context / "dist").glob("edgefleet-*.whl"))
    with zipfile.ZipFile(own) as archive:
        record = next(n for n in archive.namelist() if n.endswith(".dist-info/RECORD"))
        contents = archive.read(record).decode()
    material = {
        "containerfile": (HERE / IMAGES[name][0]).read_text(),
        "entrypoint": (HERE / "agent-entrypoint.sh").read_text(),
        "base": base_id,
        "platform": ARCHES[arch][0],
        "wheels": wheels,
        "edgefleet": sorted(contents.splitlines()),
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:16]


def _inspect(tag: str, template: str) -> str | None:
    done = subprocess.run(  # noqa: S603
        ["podman", "image", "inspect", "--format", template, tag],  # noqa: S607
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() if done.returncode == 0 else None


def podman_build(name: str, *, context: Path, base: str, arch: str, tag: str) -> Built:
    """Build ``tag`` unless an image under that tag already carries the same input key."""
    started = time.monotonic()
    base_id = _inspect(base, "{{.Id}}")
    if base_id is None:
        raise ImageBuildError(f"the base image {base} is not in podman's storage")
    key = image_inputs(name, context=context, base_id=base_id, arch=arch)
    cached = _inspect(tag, f'{{{{index .Labels "{INPUTS_LABEL}"}}}}') == key
    if not cached:
        run_step(
            ["podman", "build", "--network", "host", "--platform", ARCHES[arch][0]]
            + ["--build-arg", f"BASE={base}", "--label", f"{INPUTS_LABEL}={key}"]
            + ["-f", str(HERE / IMAGES[name][0]), "-t", tag, str(context)],
            step=f"podman build {tag}",
        )
    seconds = time.monotonic() - started
    size = _inspect(tag, "{{.Size}}")
    if size is None:
        raise ImageBuildError(f"podman build {tag} left no image")
    return Built(image=name, tag=tag, seconds=seconds, size_bytes=int(size), cached=cached)


def build_images(
    *, names: Sequence[str], arch: str, base: str, work: Path, suffix: str = ""
) -> list[Built]:
    if shutil.which("podman") is None:
        raise ImageBuildError("podman is not installed: apt-get install -y podman runc")
    problem = emulation_problem(arch)
    if problem is not None:
        raise ImageBuildError(problem)
    work.mkdir(parents=True, exist_ok=True)
    resolved = resolve_base(base, arch)
    wheel = build_wheel(work)
    out: list[Built] = []
    for name in names:
        context = context_for(name, wheel, arch, work)
        tag = f"localhost/edgefleet-{name}:{suffix or ('latest' if arch == host_arch() else arch)}"
        out.append(podman_build(name, context=context, base=resolved, arch=arch, tag=tag))
    return out


def run_step(argv: list[str], *, step: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)  # noqa: S603
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip()[-1500:]
        raise ImageBuildError(f"{step} failed (exit {done.returncode}):\n{tail}")


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m containers.build", description=__doc__)
    parser.add_argument("--arch", choices=sorted(ARCHES), default=host_arch())
    parser.add_argument(
        "--base",
        default=DEFAULT_BASE,
        help=f"base image (default {DEFAULT_BASE}; 'local': the debootstrap base)",
    )
    parser.add_argument("--only", choices=sorted(IMAGES), action="append", help="one image")
    parser.add_argument("--tag", default="", help="tag instead of latest (or the arch)")
    parser.add_argument("--work", type=Path, default=cache_dir() / "build")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    if args.arch not in ARCHES:
        print(f"images: no such architecture {args.arch!r}", file=sys.stderr)
        return 2
    try:
        built = build_images(
            names=args.only or sorted(IMAGES),
            arch=args.arch,
            base=args.base,
            work=args.work,
            suffix=args.tag,
        )
    except (ImageBuildError, BaseImageError) as err:
        print(f"images: {err}", file=sys.stderr)
        return 1
    for item in built:
        how = "unchanged (same inputs), checked" if item.cached else "built"
        print(f"images: {item.tag} {item.size_bytes / 1e6:.0f} MB {how} in {item.seconds:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
