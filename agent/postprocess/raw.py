"""``raw``: every output tensor, dequantized, as nested lists (big ones by shape only)."""

from __future__ import annotations

from typing import Any

import numpy as np

from agent.plugin_config import RawPostConfig
from agent.postprocess.base import Geometry


class Raw:
    def __init__(self, config: RawPostConfig) -> None:
        self.max_values = config.max_values

    def __call__(
        self, outputs: dict[str, np.ndarray], geometry: list[Geometry]
    ) -> list[dict[str, Any]]:
        rows = len(geometry)
        results: list[dict[str, Any]] = [{"outputs": {}} for _ in range(rows)]
        for name, value in outputs.items():
            per_row = value.shape[0] == rows if value.ndim else False
            for r in range(rows):
                part = value[r] if per_row else value
                if part.size > self.max_values:
                    results[r]["outputs"][name] = {
                        "shape": list(part.shape),
                        "dtype": part.dtype.name,
                    }
                else:
                    results[r]["outputs"][name] = np.asarray(part).tolist()
        return results
