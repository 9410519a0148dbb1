"""The pipeline's steps, in order, in a hand-written registry (name → step)."""

from fleet_server.services.pipelines.steps.base import (
    RunView,
    Step,
    StepContext,
    StepError,
    StepResult,
)
from fleet_server.services.pipelines.steps.compare import CompareStep
from fleet_server.services.pipelines.steps.convert import ConvertStep
from fleet_server.services.pipelines.steps.push import PushStep
from fleet_server.services.pipelines.steps.rollout import RolloutStep
from fleet_server.services.pipelines.steps.snapshot import SnapshotStep
from fleet_server.services.pipelines.steps.train import TrainStep
from fleet_server.services.pipelines.steps.watch import WatchStep

#: The steps a server-driven run goes through, in order.
STEPS: dict[str, Step] = {
    "snapshot": SnapshotStep(),
    "train": TrainStep(),
    "convert": ConvertStep(),
    "compare": CompareStep(),
    "push": PushStep(),
    "rollout": RolloutStep(),
    "watch": WatchStep(),
}
ORDER: tuple[str, ...] = tuple(STEPS)

__all__ = ["ORDER", "STEPS", "RunView", "Step", "StepContext", "StepError", "StepResult"]
