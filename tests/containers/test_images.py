"""The server and agent images, built with podman as ``make images`` builds them and run as a
user runs them: the server answers /readyz as a non-root user with its settings from
EDGEFLEET_* variables; an agent container enrols with an enrollment token, takes a signed
model and reports telemetry that the server stores in its PostgreSQL database."""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from fleet_server.client.api import FleetClient
from fleet_server.db import make_engine
from tests.conftest import fresh_postgres_database
from tests.containers.conftest import Container, Images, waited
from tests.fleet_server.helpers import wait_until
from tests.utils.artifacts import digits_images, signed_digits_bundles
from tests.utils.net import free_port

# The first build on a machine (debootstrap of the base, every wheel) takes minutes under
# load; the cached one about a minute (docs/containers.md).
pytestmark = [
    pytest.mark.integration,
    pytest.mark.containers,
    pytest.mark.slow,
    pytest.mark.timeout(900),
]

TOKEN = "operator-token-for-container-tests-01"  # noqa: S105 - test-only token
#: What the agent image must not hold (ARCHITECTURE: the agent ships alone to a device).
LIGHT = "('fastapi', 'sqlmodel', 'tensorflow', 'torch')"


def _server(
    launched: list[Container], images: Images, env: dict[str, str], mounts: Sequence[str] = ()
) -> tuple[Container, str]:
    port = free_port()
    settings = {
        "EDGEFLEET_PORT": str(port),
        "EDGEFLEET_EMBEDDED_BROKER_PORT": str(free_port()),
        "EDGEFLEET_OPERATOR_TOKEN": TOKEN,
        "EDGEFLEET_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "EDGEFLEET_LOG_LEVEL": "warning",
        **env,
    }
    argv = ["--network", "host"]
    for key, value in settings.items():
        argv += ["-e", f"{key}={value}"]
    for mount in mounts:
        argv += ["-v", mount]
    server = Container(f"ef-test-server-{secrets.token_hex(4)}", [*argv, images.server])
    launched.append(server)
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    waited(server, ready, timeout=90, what="/readyz of the server container")
    return server, url


def test_server_image_answers_readyz_as_non_root(images: Images, launched: list[Container]) -> None:
    server, url = _server(launched, images, {})
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


def _agent_config(path: Path, *, broker_port: int) -> Path:
    path.write_text(
        f"""
credentials_file = "/var/lib/edgefleet/credentials.json"
data_dir = "/var/lib/edgefleet"
trusted_keys = ["/etc/edgefleet/signing.pub.pem"]

[mqtt]
url = "mqtt://127.0.0.1:{broker_port}"
keepalive = 10

[telemetry]
interval_s = 0.5

[engine]
threads = 1

[input]
type = "folder"
path = "/srv/images"
pattern = "*.png"
loop = true
rate_hz = 20.0

[probation]
inferences = 20
max_s = 30
latency_floor_ms = 0.2
"""
    )
    return path


def test_agent_container_enrols_takes_a_model_and_reports_telemetry(
    images: Images, launched: list[Container], tmp_path: Path
) -> None:
    bundles, key = signed_digits_bundles(tmp_path / "bundles", ["1.0.0"])
    key.chmod(0o644)
    pictures = tmp_path / "images"
    digits_images(pictures, 6)
    for picture in pictures.iterdir():
        picture.chmod(0o644)
    with fresh_postgres_database() as database:
        broker_port = free_port()
        _server_container, url = _server(
            launched,
            images,
            {
                "EDGEFLEET_DATABASE_URL": database,
                "EDGEFLEET_EMBEDDED_BROKER_PORT": str(broker_port),
                "EDGEFLEET_TRUSTED_KEYS": "/etc/edgefleet/signing.pub.pem",
                "EDGEFLEET_REQUIRE_SIGNED": "1",
            },
            [f"{key}:/etc/edgefleet/signing.pub.pem:ro"],
        )
        client = FleetClient(url, TOKEN, timeout=30)
        try:
            client.push_model(bundles[0])
            enrollment = client.create_enrollment_token(expires_in_s=600, device_class="x86_64")
            device = f"ct-{secrets.token_hex(4)}"
            config = _agent_config(tmp_path / "agent.toml", broker_port=broker_port)
            config.chmod(0o644)
            env = {
                "EDGEFLEET_SERVER_URL": url,
                "EDGEFLEET_ENROLLMENT_TOKEN": str(enrollment["token"]),
                "EDGEFLEET_DEVICE_ID": device,
            }
            argv = ["--network", "host"]
            for key_, value in env.items():
                argv += ["-e", f"{key_}={value}"]
            argv += ["-v", f"{config}:/etc/edgefleet/agent.toml:ro"]
            argv += ["-v", f"{key}:/etc/edgefleet/signing.pub.pem:ro"]
            argv += ["-v", f"{pictures}:/srv/images:ro", images.agent]
            agent = Container(f"ef-test-agent-{secrets.token_hex(4)}", argv)
            launched.append(agent)

            def enrolled() -> bool:
                return any(d["device_id"] == device for d in client.list_devices())

            waited(agent, enrolled, timeout=60, what="the agent to enrol")
            client.assign("digits", "1.0.0", device_ids=[device])

            def running() -> str:
                return str((client.get_device(device).get("running") or {}).get("version"))

            waited(agent, lambda: running() == "1.0.0", timeout=90, what="1.0.0 running")
            assert agent.exec("id", "-u").strip() == "10001"
        finally:
            client.close()
        engine = make_engine(database)
        try:

            def stored() -> int:
                with engine.connect() as conn:
                    sql = text("SELECT count(*) FROM telemetry WHERE device_id = :d")
                    return int(conn.execute(sql, {"d": device}).scalar_one())

            wait_until(lambda: stored() >= 2, timeout=60, what="telemetry rows in PostgreSQL")
            with engine.connect() as conn:
                model = conn.execute(
                    text(
                        "SELECT model->>'version' FROM telemetry WHERE device_id = :d "
                        "ORDER BY seq DESC LIMIT 1"
                    ),
                    {"d": device},
                ).scalar_one()
            assert model == "1.0.0"
        finally:
            engine.dispose()
