"""A digits artifact with reference statistics, and digits inputs (plain and shifted)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from agent.engine import BackendOptions, load_model
from agent.state import Serving
from converters.stats import reference_stats
from edgefleet.contract import Manifest, parse_manifest
from tests.utils.artifacts import PIXEL_SCALE, _digits


def with_reference(artifact: Path, out: Path) -> Path:
    """A copy of ``artifact`` whose manifest has the converter's reference statistics of the
    first 1,400 digits (the training rows; inputs used in tests come after)."""
    copy = Path(shutil.copytree(artifact, out))
    manifest = parse_manifest((copy / "manifest.json").read_bytes())
    x, _ = _digits()
    ref = reference_stats(x[:1400], layout="flat", predicted=None, n_classes=None)
    updated: Manifest = manifest.model_copy(update={"reference_stats": ref})
    (copy / "manifest.json").write_text(updated.to_json())
    return copy


def serving(artifact: Path) -> Serving:
    return Serving.of(load_model(artifact, options=BackendOptions()))


def digit_pixels(i: int) -> np.ndarray:
    """Digit ``i`` as the 8×8 uint8 frame a camera source would deliver."""
    x, _ = _digits()
    pixels: np.ndarray = np.clip(np.rint(x[i].reshape(8, 8) / PIXEL_SCALE), 0, 255)
    return pixels.astype(np.uint8)
