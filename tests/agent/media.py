"""Media for agent tests, made or found locally: scikit-learn's sample photos, written videos."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def sample_photo(name: str = "china.jpg") -> Path:
    """One of the two 640×427 JPEGs that scikit-learn ships (china.jpg, flower.jpg)."""
    import sklearn

    return Path(sklearn.__file__).parent / "datasets" / "images" / name


def write_video(path: Path, frames: int, *, size: tuple[int, int] = (160, 120)) -> Path:
    """An MJPG .avi of moving gradients, ``frames`` long (cv2.VideoWriter)."""
    w, h = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (w, h))
    if not writer.isOpened():
        raise OSError(f"cannot write {path}")
    ramp = np.add.outer(np.arange(h), np.arange(w))
    for i in range(frames):
        frame = np.stack([ramp + i, ramp * 2 - i, np.full_like(ramp, i * 7)], axis=-1)
        writer.write((frame % 256).astype(np.uint8))
    writer.release()
    return path
