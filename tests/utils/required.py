"""One rule for what a test needs from the machine (a service, a binary, a cache, a tool venv):
without it the test skips with the reason; under ``EDGEFLEET_REQUIRE_SERVICES=1`` (``.ci/run``)
it fails instead, so CI never passes by skipping."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def required() -> bool:
    return os.environ.get("EDGEFLEET_REQUIRE_SERVICES") == "1"


def missing(why: str) -> NoReturn:
    """Skip with ``why`` — or fail with it under EDGEFLEET_REQUIRE_SERVICES=1."""
    if required():
        pytest.fail(f"{why} (EDGEFLEET_REQUIRE_SERVICES=1 requires it)")
    pytest.skip(why)
