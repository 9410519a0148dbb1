"""The arm64 images under qemu-user-static on an x86 host: built as ``python -m containers.build
--arch arm64`` builds them (kept while their inputs are unchanged), run with the options
emulation needs (``containers.emulation.run_options``: ``--init`` and the host's CPU topology
masked, the module docstring says why). The server answers /readyz as aarch64 code; an agent
container enrols, serves a signed ONNX model through onnxruntime and reports telemetry that an
arm64 server container stores in PostgreSQL.

Without podman or the qemu-aarch64 binfmt entry the tests skip with the reason (fail under
``EDGEFLEET_REQUIRE_SERVICES=1``). Emulated timings are not device timings: deadlines are
stretched (``PATIENCE``) and nothing asserts speed."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest

from containers.emulation import emulated, run_options
from tests.containers.conftest import Container, Images
from tests.containers.scenarios import (
    TOKEN,
    agent_enrols_takes_a_model_and_reports_telemetry,
    start_server,
)

# A first build on a machine: the arm64 debootstrap base and both images under emulation take
# ~15 min on 2 busy cores (docs/containers.md); once built, the images are reused as they are.
pytestmark = [
    pytest.mark.integration,
    pytest.mark.containers,
    pytest.mark.slow,
    pytest.mark.timeout(2400),
]

#: Python under qemu-user runs several times slower than on the host: polled deadlines x4.
PATIENCE = 4.0
MACHINE = "import platform; print(platform.machine())"


def _arch(tag: str) -> str:
    return subprocess.run(
        ["podman", "image", "inspect", "--format", "{{.Architecture}}", tag],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def test_arm64_server_image_answers_readyz(arm64_images: Images, launched: list[Container]) -> None:
    assert emulated("arm64"), "run on an arm64 host, these are the ordinary image tests"
    assert _arch(arm64_images.server) == _arch(arm64_images.agent) == "arm64"
    server, url = start_server(
        launched, arm64_images, {}, patience=PATIENCE, extra=run_options("arm64")
    )
    answer = httpx.get(f"{url}/readyz", timeout=10).json()
    assert answer["database"] is True and answer["broker"] is True, answer
    assert server.exec("python3", "-c", MACHINE).strip() == "aarch64"
    assert server.exec("id", "-u").strip() == "10001"
    listed = httpx.get(
        f"{url}/api/v1/devices", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
    )
    assert listed.status_code == 200, listed.text


def test_arm64_agent_container_serves_onnx_and_reports_telemetry(
    arm64_images: Images, launched: list[Container], tmp_path: Path
) -> None:
    agent = agent_enrols_takes_a_model_and_reports_telemetry(
        arm64_images,
        launched,
        tmp_path,
        device_class="aarch64",
        patience=PATIENCE,
        agent_options=run_options("arm64"),
    )
    # The agent that served the model is aarch64 code with the aarch64 onnxruntime wheel.
    probe = "import onnxruntime, platform; print(platform.machine(), onnxruntime.__file__)"
    machine, where = agent.exec("python3", "-c", probe).split()
    assert machine == "aarch64" and where.startswith("/opt/edgefleet/"), (machine, where)
