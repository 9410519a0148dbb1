"""Fixtures for the fleet server tests (the shared mqtt_url and database_url live in
tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fleet_server.db import make_engine, migrate
from fleet_server.runtime import Runtime
from tests.fleet_server.helpers import make_settings, running_app
from tests.fleet_server.rollout_harness import Harness
from tests.utils.artifacts import build_digits_artifact
from tests.utils.s3 import S3Server, moto_s3_server


@pytest.fixture
def app(tmp_path: Path, database_url: str) -> Iterator[tuple[TestClient, Runtime]]:
    """A started server (migrated database, embedded broker, ingest) on each database."""
    with running_app(make_settings(tmp_path, database_url)) as started:
        yield started


@pytest.fixture
def h(database_url: str) -> Iterator[Harness]:
    """A rollout engine on a migrated database with a controllable clock (rollout_harness)."""
    engine = make_engine(database_url)
    migrate(engine)
    try:
        yield Harness(engine)
    finally:
        engine.dispose()


@pytest.fixture
def client(app: tuple[TestClient, Runtime]) -> TestClient:
    return app[0]


@pytest.fixture(scope="session")
def digits_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_digits_artifact(tmp_path_factory.mktemp("artifact") / "digits-1.0.0")


@pytest.fixture(scope="session")
def digits_bundle(digits_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.utils.artifacts import bundle_of

    return bundle_of(digits_artifact, tmp_path_factory.mktemp("bundle") / "digits-1.0.0.tar.gz")


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """A real S3-compatible server (moto) on a free loopback port; tests make their own buckets."""
    with moto_s3_server() as server:
        yield server
