"""``python -m containers.stack build-standins|up|down``: the compose stack of compose.yaml.

``up``/``down`` run podman-compose (Debian's package) on containers/compose.yaml. With
``--standins`` (hosts where no registry is reachable) the three third-party images are replaced
by local stand-ins built from containers/standins/Containerfile on the local base: Debian's
PostgreSQL and Mosquitto, and moto's S3 server in MinIO's place (a test stand-in: in memory).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from containers.base import BaseImageError, BaseSpec, cache_dir, ensure_base
from containers.build import ARCHES, ImageBuildError, platform_tags, run_step
from containers.emulation import host_arch

HERE = Path(__file__).resolve().parent
COMPOSE_FILE = HERE / "compose.yaml"
#: The S3 stand-in (MinIO is not packaged for Debian; moto's server speaks the same API).
MOTO = "moto[server]>=5.0"
#: compose service → (stand-in target, the variable of compose.yaml naming its image).
STANDINS: dict[str, str] = {
    "postgres": "EDGEFLEET_POSTGRES_IMAGE",
    "mosquitto": "EDGEFLEET_MOSQUITTO_IMAGE",
    "s3": "EDGEFLEET_S3_IMAGE",
}


def standin_tag(service: str) -> str:
    return f"localhost/edgefleet-standin-{service}:latest"


def standin_env() -> dict[str, str]:
    """The variables that point compose.yaml at the stand-ins."""
    return {variable: standin_tag(service) for service, variable in STANDINS.items()}


def build_standins(*, work: Path, arch: str | None = None) -> list[str]:
    """Build the three stand-in images (cached layers make a rebuild cheap)."""
    arch = arch or host_arch()
    base, _how = ensure_base(BaseSpec(arch=arch))
    context = work / arch / "standins"
    shutil.copytree(HERE / "standins", context, dirs_exist_ok=True)
    wheels = context / "wheels"
    stamp = wheels / ".inputs"
    inputs = " ".join([MOTO, *platform_tags(arch)])
    if not (stamp.exists() and stamp.read_text() == inputs):  # else: as downloaded before
        shutil.rmtree(wheels, ignore_errors=True)
        platforms = [arg for tag in platform_tags(arch) for arg in ("--platform", tag)]
        run_step(
            [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check"]
            + ["--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp"]
            + ["--abi", "cp311", *platforms, "-d", str(wheels), MOTO],
            step=f"pip download {MOTO}",
        )
        stamp.write_text(inputs)
    tags = []
    for service in STANDINS:
        tag = standin_tag(service)
        run_step(
            ["podman", "build", "--network", "host", "--platform", ARCHES[arch][0]]
            + ["--build-arg", f"BASE={base}", "--target", service, "-t", tag, str(context)],
            step=f"podman build {tag}",
        )
        tags.append(tag)
    return tags


def compose_argv(project: str, *args: str) -> list[str]:
    if shutil.which("podman-compose") is None:
        raise ImageBuildError("podman-compose is not installed: apt-get install -y podman-compose")
    return ["podman-compose", "-p", project, "-f", str(COMPOSE_FILE), *args]


def compose(
    project: str, *args: str, env: Mapping[str, str], timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """podman-compose with ``env`` on top of this process's environment (output captured)."""
    return subprocess.run(  # noqa: S603
        compose_argv(project, *args),
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        cwd=HERE,
    )


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m containers.stack", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build-standins", help="build the local stand-in images")
    for name in ("up", "down"):
        cmd = sub.add_parser(name, help=f"podman-compose {name} on containers/compose.yaml")
        cmd.add_argument("--project", default="edgefleet", help="compose project name")
        cmd.add_argument(
            "--standins", action="store_true", help="use (and build) the local stand-ins"
        )
    parser.add_argument("--work", type=Path, default=cache_dir() / "build")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    try:
        if args.command == "build-standins":
            for tag in build_standins(work=args.work):
                print(f"stack: built {tag}")
            return 0
        env = {}
        if args.standins:
            if args.command == "up":
                build_standins(work=args.work)
            env = standin_env()
        extra = ["-d"] if args.command == "up" else ["-v"]
        done = compose(args.project, args.command, *extra, env=env)
    except (ImageBuildError, BaseImageError) as err:
        print(f"stack: {err}", file=sys.stderr)
        return 1
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip()[-1500:]
        print(f"stack: podman-compose {args.command} failed:\n{tail}", file=sys.stderr)
        return 1
    print(f"stack: {args.project} {args.command}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
