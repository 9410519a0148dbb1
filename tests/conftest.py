"""Shared fixtures: real brokers and real databases.

* ``mqtt_url`` runs each test against the server's embedded amqtt broker (on a free port) and
  against the external broker named by ``EDGEFLEET_TEST_MQTT_URL`` (Mosquitto in CI).
* ``database_url`` runs each test against SQLite (a file in ``tmp_path``) and against a fresh
  PostgreSQL database created on ``EDGEFLEET_TEST_DATABASE_URL``'s server and dropped afterwards.

Without those variables the external variants skip, with the reason. With
``EDGEFLEET_REQUIRE_SERVICES=1`` (set by ``.ci/run``) a missing service is a failure instead.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.utils.brokers import AMQTT_URLS
from tests.utils.net import free_port, wait_for_port
from tests.utils.xdist import make_scheduler, once_per_run

REQUIRE_SERVICES = os.environ.get("EDGEFLEET_REQUIRE_SERVICES") == "1"


def _external(var: str, what: str) -> str:
    value = os.environ.get(var)
    if not value:
        if REQUIRE_SERVICES:
            pytest.fail(f"{var} is not set but EDGEFLEET_REQUIRE_SERVICES=1 requires {what}")
        pytest.skip(f"{what} not configured: set {var}")
    return value


@pytest.fixture(params=["embedded", "mosquitto"])
def mqtt_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A reachable MQTT broker URL: the embedded amqtt broker or the external one."""
    if request.param == "mosquitto":
        yield external_mqtt_url()
        return
    from fleet_server.broker import EmbeddedBroker

    broker = EmbeddedBroker(host="127.0.0.1", port=free_port())
    broker.start(timeout=10.0)
    AMQTT_URLS.add(broker.url)
    try:
        yield broker.url
    finally:
        AMQTT_URLS.discard(broker.url)
        broker.stop()


@contextmanager
def fresh_postgres_database(*, encoding: str | None = None) -> Iterator[str]:
    """A new, empty PostgreSQL database on the configured server, dropped afterwards
    (``encoding``: e.g. 'SQL_ASCII', from ``template0``; default: the server's)."""
    base = _external("EDGEFLEET_TEST_DATABASE_URL", "a PostgreSQL server")
    import psycopg

    parts = urlsplit(base)
    admin_dsn = urlunsplit(("postgresql", parts.netloc, parts.path, parts.query, ""))
    name = f"edgefleet_test_{secrets.token_hex(6)}"
    try:
        with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=5) as conn:
            options = f" ENCODING '{encoding}' TEMPLATE template0" if encoding else ""
            conn.execute(f'CREATE DATABASE "{name}"{options}')
    except psycopg.OperationalError as err:
        pytest.fail(f"PostgreSQL at {parts.hostname}:{parts.port} is not usable: {err}")
    try:
        yield urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))
    finally:
        with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def external_mqtt_url() -> str:
    """The external broker's URL, checked to be reachable (skip or fail if not configured)."""
    url = _external("EDGEFLEET_TEST_MQTT_URL", "an external MQTT broker")
    parts = urlsplit(url)
    try:
        wait_for_port(parts.hostname or "127.0.0.1", parts.port or 1883, timeout=5)
    except TimeoutError as err:
        pytest.fail(f"external broker {url} is not reachable: {err}")
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: a SQLite file, or a fresh PostgreSQL database dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'edgefleet.db'}"
        return
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture(scope="session", autouse=True)
def _no_litter_in_the_working_directory() -> Iterator[None]:
    """Code under test must write into its own directories, never into the caller's cwd."""
    before = set(os.listdir("."))
    yield
    caches = {".pytest_cache", ".mypy_cache", ".ruff_cache", ".hypothesis"}  # test tools own these
    litter = sorted(set(os.listdir(".")) - before - caches)
    assert not litter, f"tests left files in the working directory: {litter}"


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """``--dist loadgroup``: whole files and the pinned groups per worker (tests/utils/xdist.py)."""
    if config.getoption("dist") != "loadgroup":
        return None
    return make_scheduler(config, log)


@pytest.fixture(scope="session")
def tflite_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real .tflite models made by TensorFlow (in a subprocess); see tests/agent/tflite_factory.
    Run-wide: the agent's and the server's tests, on every xdist worker, share one build
    (~30 s of TensorFlow)."""
    from tests.agent.factory import make_tflite_models

    made = once_per_run(tmp_path_factory, "tflite", make_tflite_models)
    if made is None:
        if os.environ.get("EDGEFLEET_REQUIRE_TF"):
            pytest.fail("EDGEFLEET_REQUIRE_TF is set but tensorflow does not import")
        pytest.skip("tensorflow is not installed: cannot make .tflite test models")
    return made
