"""Property-based requests generated from the server's own OpenAPI: every answer is what the
schema says, and no input gives a 5xx.

Schemathesis walks every operation with valid and invalid bodies, paths and queries, as the
bootstrap admin, as a viewer (refused with 403 on anything that changes the fleet) and without
credentials, against a real server (uvicorn, SQLite, embedded broker) that already holds a
device and a model so lookups can hit as well as miss. Each answer goes through schemathesis'
response-conformance checks: the status is documented, the content type is, the body matches
the documented schema and the documented required headers are there. Before the one error model
(``fleet_server.api.errors``), 10 examples per operation and mode found 168 distinct
(operation, caller, check, status) mismatches; now 0.
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
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.failures import Failure, FailureGroup

from tests.utils.artifacts import build_digits_artifact
from tests.utils.server import live_server

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
#: Examples per operation and generation mode (positive, negative); each is sent three times
#: (admin, viewer, no token): ~1,900 requests, ~20 s on a 2-core machine.
MAX_EXAMPLES = 10
#: Tokens made before the viewer's, so the admin's fuzzed ``DELETE /tokens/{id}`` (small ids
#: are likely) revokes decoys rather than the viewer token the run needs.
DECOY_TOKENS = 30


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, str]]:
    from fleet_server.client.api import FleetClient

    tmp = tmp_path_factory.mktemp("fuzz")
    with live_server(tmp) as server:
        client = FleetClient(server.url, server.token)
        client.push_model(build_digits_artifact(tmp / "art"))
        client.add_device("fuzz-device", tags=["fuzz"])
        for n in range(DECOY_TOKENS):
            client.create_token(f"decoy-{n}", "viewer")
        viewer = client.create_token("fuzz-viewer", "viewer")["token"]
        client.close()
        yield server.url, server.token, viewer


@pytest.mark.integration
@pytest.mark.slow
def test_every_answer_conforms_to_the_schema(api_server: tuple[str, str, str]) -> None:
    # schemathesis's pytest plugin does not run under pytest 9, so its strategies are driven by
    # hypothesis directly: every operation, valid and invalid inputs, three callers.
    url, token, viewer = api_server
    callers = {
        "admin": {"Authorization": f"Bearer {token}"},
        "viewer": {"Authorization": f"Bearer {viewer}"},
        "anonymous": {},
    }
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 30
    # (operation, caller, check title, status) → one example message.
    mismatches: dict[tuple[str, str, str, int], str] = {}
    statuses: dict[int, int] = {}
    for operation, mode in itertools.product(operations, list(GenerationMode)):

        @given(case=operation.as_strategy(mode))
        @settings(
            max_examples=MAX_EXAMPLES,
            database=None,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Any) -> None:
            for who, headers in callers.items():
                response = case.call(base_url=url, headers=headers)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                try:
                    case.validate_response(response, checks=CHECKS, headers=headers)
                except (FailureGroup, Failure) as err:
                    failures = err.exceptions if isinstance(err, FailureGroup) else (err,)
                    for failure in failures:
                        key = (case.operation.label, who, failure.title, response.status_code)
                        mismatches.setdefault(
                            key, f"{failure.message[:300]} | {response.text[:200]}"
                        )

        try:
            run()
        except Unsatisfiable:
            # An operation without parameters or body has no invalid form to generate.
            assert mode is GenerationMode.NEGATIVE, operation.label
    assert not mismatches, f"{len(mismatches)} mismatches: " + "\n".join(
        f"{key}: {message}" for key, message in list(mismatches.items())[:15]
    )
    # The run reached accepted and refused requests of every kind (not just 401s).
    assert sum(n for code, n in statuses.items() if code < 300) >= 50, statuses
    assert statuses.get(403, 0) >= 50, statuses  # the viewer was refused, not failed
    for code in (401, 404, 422):
        assert statuses.get(code, 0) >= 10, (code, statuses)
    assert sum(statuses.values()) >= 1000, statuses


def _spec(tmp_path: Path) -> dict[str, Any]:
    from fleet_server.app import create_app
    from fleet_server.settings import ServerSettings

    spec = create_app(ServerSettings(data_dir=tmp_path, operator_token="x" * 32)).openapi()
    assert isinstance(spec, dict)
    return spec


def test_schema_is_complete(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
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


def test_one_error_model_is_declared_for_every_refusal(tmp_path: Path) -> None:
    """What the conformance run checks by sampling, checked for every operation: each refusal
    is the one error body, 422 is not FastAPI's list-shaped default, every authenticated route
    documents 401 and 429 (with their headers), every route with input documents 400 and 422,
    every JSON body 413."""
    spec = _spec(tmp_path)
    schemas = spec["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas
    assert schemas["ErrorBody"]["required"] == ["detail"]
    assert schemas["ErrorBody"]["properties"]["detail"]["type"] == "string"
    error_ref = {"$ref": "#/components/schemas/ErrorBody"}
    checked = 0
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            label = f"{method.upper()} {path}"
            responses = operation["responses"]
            for code, response in responses.items():
                if int(code) < 400 or (path, code) == ("/readyz", "503"):
                    continue
                assert response["content"]["application/json"]["schema"] == error_ref, (
                    label,
                    code,
                )
            if operation.get("security"):
                assert {"401", "429", "503"} <= set(responses), label
                assert responses["401"]["headers"]["WWW-Authenticate"]["required"], label
                assert responses["429"]["headers"]["Retry-After"]["required"], label
            if operation.get("parameters") or operation.get("requestBody"):
                assert {"400", "422"} <= set(responses), label
            if "application/json" in operation.get("requestBody", {}).get("content", {}):
                assert "413" in responses, label
            checked += 1
    assert checked >= 30


def test_error_responses_refuses_an_undescribed_status() -> None:
    from fleet_server.api.errors import error_responses

    with pytest.raises(ValueError, match="418"):
        error_responses(401, 418)
    declared = error_responses((401, 403), 404, why={404: "No such device."})
    assert list(declared) == [401, 403, 404]
    assert declared[404]["description"] == "No such device."
