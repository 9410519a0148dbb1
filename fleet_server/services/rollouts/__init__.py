"""Staged rollouts gated on model behaviour: spec (what the operator asks), evidence + gates (what
the fleet's telemetry says), state (the states and the one table of allowed steps), engine (drives
them), service (API-facing actions and views).

Names are re-exported lazily: the operator client imports :mod:`.state` in an install without the
server's database stack, and importing the package must not pull the engine in.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fleet_server.services.rollouts.engine import RolloutEngine
    from fleet_server.services.rollouts.spec import GatePolicy, RolloutCreate, Selector, Strategy

__all__ = ["GatePolicy", "RolloutCreate", "RolloutEngine", "Selector", "Strategy"]

_HOMES = {
    "RolloutEngine": "engine",
    "GatePolicy": "spec",
    "RolloutCreate": "spec",
    "Selector": "spec",
    "Strategy": "spec",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)
