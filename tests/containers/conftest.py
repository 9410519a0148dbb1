"""Fixtures of the container tests: podman present (or skip/fail by tests/utils/required), the
images built once per session by the same code as ``make images``."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from containers.base import cache_dir
from tests.fleet_server.helpers import wait_until
from tests.utils.required import missing

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Images:
    server: str
    agent: str
    seconds: float


def podman_ready() -> None:
    if shutil.which("podman") is None:
        missing("podman is not installed (apt-get install -y podman runc; docs/containers.md)")
    info = subprocess.run(
        ["podman", "info", "--format", "{{.Host.OCIRuntime.Name}}"],
        capture_output=True,
        text=True,
        check=False,
    )
    if info.returncode != 0:
        missing(f"podman does not work here: {info.stderr.strip()[-300:]}")


@pytest.fixture(scope="session")
def images() -> Images:
    """Both images, built (from the layer cache after the first time) for this machine."""
    podman_ready()
    from containers.build import build_images

    started = time.monotonic()
    built = build_images(
        names=["server", "agent"],
        arch=_host_arch(),
        base="docker.io/library/python:3.11-slim",  # the default: falls back to the local base
        work=cache_dir() / "build",  # a cache: the dependency wheels are kept there
    )
    tags = {item.image: item.tag for item in built}
    return Images(tags["server"], tags["agent"], time.monotonic() - started)


@pytest.fixture(scope="session")
def arm64_images() -> Images:
    """Both images for arm64 (tag ``:arm64``), built under qemu-user-static the first time and
    kept while their inputs are unchanged (``containers.build.image_inputs``)."""
    podman_ready()
    from containers.build import build_images
    from containers.emulation import emulation_problem

    problem = emulation_problem("arm64")
    if problem is not None:
        missing(problem)
    started = time.monotonic()
    built = build_images(
        names=["server", "agent"],
        arch="arm64",
        base="docker.io/library/python:3.11-slim",
        work=cache_dir() / "build",
    )
    tags = {item.image: item.tag for item in built}
    return Images(tags["server"], tags["agent"], time.monotonic() - started)


def _host_arch() -> str:
    from containers.emulation import host_arch

    return host_arch()


class Container:
    """One ``podman run -d`` container, removed at the end."""

    def __init__(self, name: str, argv: list[str]) -> None:
        self.name = name
        done = subprocess.run(
            ["podman", "run", "-d", "--name", name, *argv],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr

    def logs(self) -> str:
        done = subprocess.run(
            ["podman", "logs", self.name], capture_output=True, text=True, check=False
        )
        return (done.stdout + done.stderr)[-4000:]

    def exec(self, *argv: str) -> str:
        done = subprocess.run(
            ["podman", "exec", self.name, *argv], capture_output=True, text=True, check=True
        )
        return done.stdout

    def remove(self) -> None:
        subprocess.run(["podman", "rm", "-f", "-t", "5", self.name], capture_output=True)


def waited(container: Container, check: Callable[[], bool], *, timeout: float, what: str) -> None:
    """``wait_until``, with the container's log in the failure."""
    try:
        wait_until(check, timeout=timeout, what=what, every=0.25)
    except AssertionError as err:
        raise AssertionError(f"{err}; {container.name} log:\n{container.logs()}") from None


@pytest.fixture
def launched() -> Iterator[list[Container]]:
    made: list[Container] = []
    yield made
    for container in made:
        container.remove()
