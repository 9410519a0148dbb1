"""agent.faults: inert unless armed from the environment; an unknown point is refused."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agent import faults
from agent.errors import AgentConfigError


@pytest.fixture(autouse=True)
def disarmed() -> Iterator[None]:
    yield
    faults.arm({})


@pytest.mark.parametrize("environ", [{}, {faults.ENV_VAR: ""}, {"OTHER": "after_commit"}])
def test_unset_or_empty_is_inert(environ: dict[str, str]) -> None:
    assert faults.arm(environ) is None
    for point in faults.POINTS:
        faults.crash_point(point)  # still alive: nothing is armed


def test_armed_point_only_fires_at_its_name() -> None:
    assert faults.arm({faults.ENV_VAR: "after_commit"}) == "after_commit"
    for point in faults.POINTS:
        if point != "after_commit":
            faults.crash_point(point)  # still alive: another point is armed
    assert faults.arm({}) is None  # disarms


@pytest.mark.parametrize(
    "value", ["during_lunch", "AFTER_COMMIT", " after_commit", "after_commit\n", "x" * 10_000]
)
def test_unknown_point_is_a_config_error(value: str) -> None:
    with pytest.raises(AgentConfigError, match="is not a crash point; use one of after_download"):
        faults.arm({faults.ENV_VAR: value})
    faults.crash_point("after_commit")  # a refused value arms nothing
