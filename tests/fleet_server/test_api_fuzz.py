"""Property-based requests generated from the server's own OpenAPI: no input gives a 5xx.

Schemathesis walks every operation with valid and invalid bodies, paths and queries, as the
bootstrap admin, as a viewer (refused with 403 on anything that changes the fleet) and without
credentials, against a real server (uvicorn, SQLite, embedded broker)
that already holds a device and a model so lookups can hit as well as miss.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.utils.artifacts import build_digits_artifact
from tests.utils.server import live_server


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, str]]:
    from fleet_server.client.api import FleetClient

    tmp = tmp_path_factory.mktemp("fuzz")
    with live_server(tmp) as server:
        client = FleetClient(server.url, server.token)
        client.push_model(build_digits_artifact(tmp / "art"))
        client.add_device("fuzz-device", tags=["fuzz"])
        viewer = client.create_token("fuzz-viewer", "viewer")["token"]
        client.close()
        yield server.url, server.token, viewer


@pytest.mark.integration
@pytest.mark.slow
def test_no_input_makes_a_server_error(api_server: tuple[str, str, str]) -> None:
    # schemathesis's pytest plugin does not run under pytest 9, so its strategies are driven by
    # hypothesis directly: every operation, valid and invalid inputs, with and without the token.
    url, token, viewer = api_server
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 18
    failures: list[str] = []
    statuses: dict[int, int] = {}
    for operation, mode in itertools.product(operations, list(GenerationMode)):

        @given(case=operation.as_strategy(mode))
        @settings(
            max_examples=25, database=None, deadline=None, suppress_health_check=list(HealthCheck)
        )
        def run(case: Any) -> None:
            for headers in (
                {"Authorization": f"Bearer {token}"},
                {"Authorization": f"Bearer {viewer}"},
                {},
            ):
                response = case.call(base_url=url, headers=headers)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                if response.status_code >= 500:
                    failures.append(f"{case.method} {case.formatted_path}: {response.status_code}")

        try:
            run()
        except Unsatisfiable:
            # An operation without parameters or body has no invalid form to generate.
            assert mode is GenerationMode.NEGATIVE, operation.label
    assert not failures, failures[:10]
    # The run reached both accepted and refused requests (not just 401s).
    assert sum(n for code, n in statuses.items() if code < 300) >= 10, statuses
    assert sum(n for code, n in statuses.items() if 400 <= code < 500 and code != 401) >= 10, (
        statuses
    )
    assert statuses.get(403, 0) >= 10, statuses  # the viewer was refused, not failed
    assert sum(statuses.values()) >= 200, statuses


def test_schema_is_complete(tmp_path: Path) -> None:
    from fleet_server.app import create_app
    from fleet_server.settings import ServerSettings

    spec = create_app(ServerSettings(data_dir=tmp_path, operator_token="x" * 32)).openapi()
    paths = set(spec["paths"])
    for expected in (
        "/api/v1/devices",
        "/api/v1/devices/{device_id}",
        "/api/v1/models",
        "/api/v1/models/{name}/{version}/bundle",
        "/api/v1/assignments",
        "/api/v1/devices/{device_id}/pin",
        "/api/v1/devices/{device_id}/tags",
        "/api/v1/models/{name}/{version}/lineage",
        "/api/v1/tokens",
        "/api/v1/tokens/{token_id}",
        "/api/v1/audit",
        "/api/v1/enrollment-tokens",
        "/api/v1/enroll",
        "/healthz",
    ):
        assert expected in paths

    # Request bodies carry examples (the issue asks for an OpenAPI complete with examples).
    schemas = spec["components"]["schemas"]
    for name in ("ApiTokenCreate", "EnrollmentTokenCreate", "EnrollRequest", "PinRequest"):
        assert schemas[name].get("examples"), name
