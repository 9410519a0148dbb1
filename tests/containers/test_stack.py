"""containers/compose.yaml brought up by podman-compose (Debian's package) as a user would:
two server replicas on PostgreSQL, Mosquitto and an S3-compatible store. No registry is
reachable on CI machines, so the three third-party images are the local stand-ins of
containers/standins (Debian's PostgreSQL and Mosquitto, moto's S3 server).

Both replicas answer /readyz; telemetry published to the stack's broker is stored exactly once,
split between the replicas (one MQTT v5 shared subscription group); a bundle pushed through one
replica downloads through the other (one shared object store)."""

from __future__ import annotations

import re
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from containers.base import cache_dir
from containers.stack import build_standins, compose, standin_env
from fleet_server.client.api import FleetClient
from tests.containers.conftest import Images
from tests.fleet_server.helpers import connack, publish_telemetry, wait_until
from tests.utils.artifacts import signed_digits_bundles
from tests.utils.net import free_port
from tests.utils.required import missing

# The first build on a machine (debootstrap of the base, every wheel) takes minutes under
# load; the cached one about a minute (docs/containers.md).
pytestmark = [
    pytest.mark.integration,
    pytest.mark.containers,
    pytest.mark.slow,
    pytest.mark.timeout(900),
]

TOKEN = "operator-token-for-the-compose-stack"  # noqa: S105 - test-only token
MQTT_PASSWORD = "broker-admin-password-for-the-stack"  # noqa: S105 - test-only password
_SAMPLE = re.compile(r"^edgefleet_ingest_stored_total(?:\{[^}]*\})? ([0-9.eE+-]+)$", re.M)


def _stored(url: str) -> float:
    return sum(float(v) for v in _SAMPLE.findall(httpx.get(f"{url}/metrics", timeout=5).text))


@pytest.fixture
def stack(images: Images) -> Iterator[dict[str, str]]:
    if shutil.which("podman-compose") is None:
        missing("podman-compose is not installed (apt-get install -y podman-compose)")
    build_standins(work=cache_dir() / "build")
    project = f"eftest{secrets.token_hex(3)}"
    ports = {name: free_port() for name in ("mqtt", "a", "b")}
    env = {
        **standin_env(),
        "EDGEFLEET_SERVER_IMAGE": images.server,
        "EDGEFLEET_OPERATOR_TOKEN": TOKEN,
        "EDGEFLEET_MQTT_PASSWORD": MQTT_PASSWORD,
        "EDGEFLEET_MQTT_PORT": str(ports["mqtt"]),
        "EDGEFLEET_SERVER_A_PORT": str(ports["a"]),
        "EDGEFLEET_SERVER_B_PORT": str(ports["b"]),
    }
    urls = {
        "a": f"http://127.0.0.1:{ports['a']}",
        "b": f"http://127.0.0.1:{ports['b']}",
        "mqtt": f"mqtt://127.0.0.1:{ports['mqtt']}",
    }
    try:
        up = compose(project, "up", "-d", env=env)
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        yield urls
    finally:
        compose(project, "down", "-v", env=env)


def _login(url: str, login: tuple[str, str] | None) -> str:
    """The CONNACK's reason for ``login`` (user name = client id), e.g. "Success"."""
    from edgefleet.mqtt import BrokerAddress

    address = BrokerAddress.from_url(url)
    return connack(address.host, address.port, login, client_id=login[0] if login else None)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_two_replicas_share_ingest_and_the_store(stack: dict[str, str], tmp_path: Path) -> None:
    # Both replicas migrate a fresh database at once: the loser exits and compose's
    # restart policy (on-failure) starts it again (docs/containers.md).
    wait_until(lambda: _ready(stack["a"]) and _ready(stack["b"]), 120, "both replicas", every=0.5)
    a = FleetClient(stack["a"], TOKEN, timeout=30)
    b = FleetClient(stack["b"], TOKEN, timeout=30)
    try:
        devices = [f"stack-{i}-{secrets.token_hex(3)}" for i in range(4)]
        tokens = {device: str(a.add_device(device)["token"]) for device in devices}
        per_device = 100
        # Each device logs in as itself the moment it is registered: the servers added it to
        # the broker's dynamic-security plugin (no file, no reload).
        for device in devices:
            publish_telemetry(stack["mqtt"], [device], per_device, login=(device, tokens[device]))
        total = len(devices) * per_device

        def counts() -> tuple[float, float]:
            return _stored(stack["a"]), _stored(stack["b"])

        wait_until(lambda: sum(counts()) >= total, 60, f"{total} stored", every=0.5)
        on_a, on_b = counts()
        assert on_a + on_b == total, (on_a, on_b)  # each message stored exactly once
        assert on_a > 0 and on_b > 0, (on_a, on_b)  # and both replicas took a share
        for device in devices:  # what either replica stored, the other serves
            rows = b.device_telemetry(device, limit=per_device)
            assert sorted(int(row["seq"]) for row in rows) == list(range(1, per_device + 1))

        # The broker confines and refuses: no anonymous login, no login with another device's
        # token, a device's message on another's topic is dropped, a removed device is out.
        first, second = devices[0], devices[1]
        assert _login(stack["mqtt"], None) == "Not authorized"
        assert _login(stack["mqtt"], (first, tokens[second])) == "Not authorized"
        publish_telemetry(stack["mqtt"], [second], per_device + 1, login=(first, tokens[first]))
        assert _login(stack["mqtt"], (first, tokens[first])) == "Success"
        b.remove_device(first)
        wait_until(
            lambda: _login(stack["mqtt"], (first, tokens[first])) == "Not authorized",
            5,
            "the removed device refused",
            every=0.2,
        )
        assert sum(counts()) == total  # nothing of the foreign messages was stored

        bundles, _key = signed_digits_bundles(tmp_path / "bundles", ["1.0.0"])
        a.push_model(bundles[0])
        size = b.download_bundle("digits", "1.0.0", tmp_path / "from-b.tar.gz")
        assert (tmp_path / "from-b.tar.gz").read_bytes() == bundles[0].read_bytes()
        assert size == bundles[0].stat().st_size
    finally:
        a.close()
        b.close()
