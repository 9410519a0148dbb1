"""What the image tests do with a pair of images, for any architecture: a server container
that must answer /readyz, and an agent container that enrols against it, takes a signed model
and reports telemetry stored in PostgreSQL. ``test_images.py`` runs them on the host's
architecture, ``test_arm64.py`` on arm64 images under qemu-user-static; ``patience`` stretches
the deadlines for emulation (polled deadlines, nothing asserts speed)."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from pathlib import Path

import httpx
from sqlalchemy import text

from fleet_server.client.api import FleetClient
from fleet_server.db import make_engine
from tests.conftest import fresh_postgres_database
from tests.containers.conftest import Container, Images, waited
from tests.fleet_server.helpers import wait_until
from tests.utils.artifacts import digits_images, signed_digits_bundles
from tests.utils.net import free_port

TOKEN = "operator-token-for-container-tests-01"  # noqa: S105 - test-only token


def start_server(
    launched: list[Container],
    images: Images,
    env: dict[str, str],
    mounts: Sequence[str] = (),
    *,
    patience: float = 1.0,
    extra: Sequence[str] = (),
) -> tuple[Container, str]:
    """A server container on the host's network, waited for until /readyz answers 200."""
    port = free_port()
    settings = {
        "EDGEFLEET_PORT": str(port),
        "EDGEFLEET_EMBEDDED_BROKER_PORT": str(free_port()),
        "EDGEFLEET_OPERATOR_TOKEN": TOKEN,
        "EDGEFLEET_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "EDGEFLEET_LOG_LEVEL": "warning",
        **env,
    }
    argv = ["--network", "host", *extra]
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

    waited(server, ready, timeout=90 * patience, what="/readyz of the server container")
    return server, url


def agent_config(path: Path, *, broker_port: int) -> Path:
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
    path.chmod(0o644)
    return path


def agent_enrols_takes_a_model_and_reports_telemetry(
    images: Images,
    launched: list[Container],
    tmp_path: Path,
    *,
    device_class: str,
    patience: float = 1.0,
    agent_options: Sequence[str] = (),
) -> Container:
    """The whole agent story against a server container on a fresh PostgreSQL database:
    enrolment with a one-use token, signed digits 1.0.0 assigned and running (its self-test and
    probation passed, so the model served through the runtime), telemetry rows stored with
    that version. ``agent_options`` go to ``podman run`` before the image. Returns the agent's
    container (still running)."""
    bundles, key = signed_digits_bundles(tmp_path / "bundles", ["1.0.0"])
    key.chmod(0o644)
    pictures = tmp_path / "images"
    digits_images(pictures, 6)
    for picture in pictures.iterdir():
        picture.chmod(0o644)
    with fresh_postgres_database() as database:
        broker_port = free_port()
        _server, url = start_server(
            launched,
            images,
            {
                "EDGEFLEET_DATABASE_URL": database,
                "EDGEFLEET_EMBEDDED_BROKER_PORT": str(broker_port),
                "EDGEFLEET_TRUSTED_KEYS": "/etc/edgefleet/signing.pub.pem",
                "EDGEFLEET_REQUIRE_SIGNED": "1",
            },
            [f"{key}:/etc/edgefleet/signing.pub.pem:ro"],
            patience=patience,
        )
        client = FleetClient(url, TOKEN, timeout=30 * patience)
        try:
            client.push_model(bundles[0])
            enrollment = client.create_enrollment_token(expires_in_s=600, device_class=device_class)
            device = f"ct-{secrets.token_hex(4)}"
            config = agent_config(tmp_path / "agent.toml", broker_port=broker_port)
            env = {
                "EDGEFLEET_SERVER_URL": url,
                "EDGEFLEET_ENROLLMENT_TOKEN": str(enrollment["token"]),
                "EDGEFLEET_DEVICE_ID": device,
            }
            argv = ["--network", "host", *agent_options]
            for key_, value in env.items():
                argv += ["-e", f"{key_}={value}"]
            argv += ["-v", f"{config}:/etc/edgefleet/agent.toml:ro"]
            argv += ["-v", f"{key}:/etc/edgefleet/signing.pub.pem:ro"]
            argv += ["-v", f"{pictures}:/srv/images:ro", images.agent]
            agent = Container(f"ef-test-agent-{secrets.token_hex(4)}", argv)
            launched.append(agent)

            def enrolled() -> bool:
                return any(d["device_id"] == device for d in client.list_devices())

            waited(agent, enrolled, timeout=60 * patience, what="the agent to enrol")
            client.assign("digits", "1.0.0", device_ids=[device])

            def running() -> str:
                return str((client.get_device(device).get("running") or {}).get("version"))

            waited(agent, lambda: running() == "1.0.0", timeout=90 * patience, what="1.0.0 running")
            assert agent.exec("id", "-u").strip() == "10001"
        finally:
            client.close()
        engine = make_engine(database)
        try:

            def stored() -> int:
                with engine.connect() as conn:
                    sql = text("SELECT count(*) FROM telemetry WHERE device_id = :d")
                    return int(conn.execute(sql, {"d": device}).scalar_one())

            wait_until(lambda: stored() >= 2, timeout=60 * patience, what="telemetry rows")
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
    return agent
