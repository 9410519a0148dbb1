"""Staged rollouts gated on model behaviour: spec (what the operator asks), evidence + gates (what
the fleet's telemetry says), engine (the state machine), service (API-facing actions and views)."""

from fleet_server.services.rollouts.engine import RolloutEngine
from fleet_server.services.rollouts.spec import GatePolicy, RolloutCreate, Selector, Strategy

__all__ = ["GatePolicy", "RolloutCreate", "RolloutEngine", "Selector", "Strategy"]
