"""``classification``: top-k classes with labels and scores."""

from __future__ import annotations

from typing import Any

import numpy as np

from agent.errors import ModelLoadError
from agent.plugin_config import ClassificationPostConfig
from agent.postprocess.base import Geometry, label_of
from edgefleet.contract import Manifest


def probabilities(scores: np.ndarray) -> np.ndarray:
    """Rows of scores as probabilities: softmax unless they already are in [0, 1]."""
    scores = scores.reshape(scores.shape[0], -1).astype(np.float32, copy=False)
    if scores.size and (scores.min() < 0 or scores.max() > 1):
        shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
        result: np.ndarray = shifted / shifted.sum(axis=1, keepdims=True)
        return result
    return scores


class Classification:
    def __init__(
        self, config: ClassificationPostConfig, manifest: Manifest, scores_output: str | None
    ) -> None:
        if scores_output is None:
            raise ModelLoadError(
                f"{manifest.ref}: classification needs a [batch, classes] score output"
            )
        self.output = scores_output
        self.top_k = config.top_k
        self.manifest = manifest

    def __call__(
        self, outputs: dict[str, np.ndarray], geometry: list[Geometry]
    ) -> list[dict[str, Any]]:
        probs = probabilities(outputs[self.output])
        k = min(self.top_k, probs.shape[1])
        order = np.argsort(-probs, axis=1)[:, :k]
        return [
            {
                "top_k": [
                    {
                        "index": int(i),
                        "label": label_of(self.manifest, int(i)),
                        "score": round(float(row[i]), 6),
                    }
                    for i in idx
                ]
            }
            for row, idx in zip(probs, order, strict=True)
        ]
