"""Postprocessors by task (hand-written registry: no plugin discovery)."""

from __future__ import annotations

from collections.abc import Callable

from agent.engine import LoadedModel
from agent.plugin_config import (
    ClassificationPostConfig,
    DetectionPostConfig,
    PostprocessConfig,
    RawPostConfig,
    SegmentationPostConfig,
)
from agent.postprocess.base import Geometry, Postprocessor
from agent.postprocess.classification import Classification
from agent.postprocess.detection import Detection
from agent.postprocess.raw import Raw
from agent.postprocess.segmentation import Segmentation

PostFactory = Callable[[PostprocessConfig, LoadedModel], Postprocessor]


def _classification(config: PostprocessConfig, model: LoadedModel) -> Postprocessor:
    assert isinstance(config, ClassificationPostConfig)
    return Classification(config, model.manifest, model.scores_output)


def _detection(config: PostprocessConfig, model: LoadedModel) -> Postprocessor:
    assert isinstance(config, DetectionPostConfig)
    return Detection(config, model.manifest, explicit=config is not DEFAULT_FOR_TASK["detection"])


def _segmentation(config: PostprocessConfig, model: LoadedModel) -> Postprocessor:
    assert isinstance(config, SegmentationPostConfig)
    return Segmentation(config, model.manifest)


def _raw(config: PostprocessConfig, model: LoadedModel) -> Postprocessor:
    assert isinstance(config, RawPostConfig)
    return Raw(config)


POSTPROCESSORS: dict[str, PostFactory] = {
    "classification": _classification,
    "detection": _detection,
    "segmentation": _segmentation,
    "raw": _raw,
}

#: The postprocessor a model's ``task`` gets when the agent config names none.
DEFAULT_FOR_TASK: dict[str, PostprocessConfig] = {
    "classification": ClassificationPostConfig(),
    "detection": DetectionPostConfig(),
    "segmentation": SegmentationPostConfig(),
    "regression": RawPostConfig(),
    "raw": RawPostConfig(),
}


def create_postprocessor(model: LoadedModel, config: PostprocessConfig | None) -> Postprocessor:
    """The configured postprocessor, or the task's default; ModelLoadError if it cannot fit."""
    chosen = config if config is not None else DEFAULT_FOR_TASK[model.manifest.task]
    return POSTPROCESSORS[chosen.type](chosen, model)


__all__ = ["POSTPROCESSORS", "Geometry", "Postprocessor", "create_postprocessor"]
