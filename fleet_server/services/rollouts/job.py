"""The rollout engine as a periodic job of the driver (:class:`~fleet_server.services.leader.
LeaderLoop`): it runs on the one replica that holds the ``driver`` lease."""

from __future__ import annotations

from fleet_server.services.rollouts.engine import RolloutEngine


class RolloutJob:
    name = "rollouts"

    def __init__(self, engine: RolloutEngine, *, interval_s: float) -> None:
        self.engine = engine
        self.interval_s = interval_s

    def run(self, *, epoch: int) -> None:
        # Fencing: every step is a compare-and-set on the rollout's revision, so a replica that
        # lost the lease mid-step cannot apply a stage the new driver applied too.
        self.engine.tick()
