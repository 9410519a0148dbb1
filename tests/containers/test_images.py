"""The server and agent images, built with podman as ``make images`` builds them and run as a
user runs them: the server answers /readyz as a non-root user with its settings from
EDGEFLEET_* variables; an agent container enrols with an enrollment token, takes a signed
model and reports telemetry that the server stores in its PostgreSQL database."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest

from tests.containers.conftest import Container, Images
from tests.containers.scenarios import (
    TOKEN,
    agent_enrols_takes_a_model_and_reports_telemetry,
    start_server,
)

# The first build on a machine (debootstrap of the base, every wheel) takes minutes under
# load; the cached one about a minute (docs/containers.md).
pytestmark = [
    pytest.mark.integration,
    pytest.mark.containers,
    pytest.mark.slow,
    pytest.mark.timeout(900),
]

#: What the agent image must not hold (ARCHITECTURE: the agent ships alone to a device).
LIGHT = "('fastapi', 'sqlmodel', 'tensorflow', 'torch')"


def test_server_image_answers_readyz_as_non_root(images: Images, launched: list[Container]) -> None:
    server, url = start_server(launched, images, {})
    answer = httpx.get(f"{url}/readyz", timeout=5).json()
    assert answer["database"] is True and answer["broker"] is True, answer
    assert server.exec("id", "-u").strip() == "10001"
    # The settings came from the environment, as for the CLI: the operator token works.
    listed = httpx.get(f"{url}/api/v1/devices", headers={"Authorization": f"Bearer {TOKEN}"})
    assert listed.status_code == 200, listed.text
    # The server image holds no converter and the agent image no server (extras kept apart).
    check = "import importlib.util as u; print(u.find_spec('{}') is None)"
    assert server.exec("python3", "-c", check.format("tensorflow")).strip() == "True"
    agent_probe = subprocess.run(
        ["podman", "run", "--rm", "--entrypoint", "python3", images.agent, "-c"]
        + [f"import importlib.util as u; print(*(u.find_spec(m) is None for m in {LIGHT}))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert agent_probe == ["True"] * 4, agent_probe


def test_agent_container_enrols_takes_a_model_and_reports_telemetry(
    images: Images, launched: list[Container], tmp_path: Path
) -> None:
    agent_enrols_takes_a_model_and_reports_telemetry(
        images, launched, tmp_path, device_class="x86_64"
    )
