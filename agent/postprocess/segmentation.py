"""``segmentation``: a class per pixel in source-image geometry; class areas, optional PNG."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

from agent.errors import ModelLoadError
from agent.plugin_config import SegmentationPostConfig
from agent.postprocess.base import Geometry, label_of
from agent.preprocess import letterbox_geometry, load_cv2
from edgefleet.contract import Manifest
from edgefleet.contract.postprocess import MaskPost
from edgefleet.decode import class_map


class Segmentation:
    """Output ``[B, C, H, W]`` (nchw), ``[B, H, W, C]`` (nhwc) or ``[B, H, W]`` class ids; the
    layout and a single channel's threshold come from ``manifest.postprocess`` when recorded
    (decoded by :func:`edgefleet.decode.class_map`, as the converter's mask IoU is)."""

    def __init__(self, config: SegmentationPostConfig, manifest: Manifest) -> None:
        self.config = config
        self.manifest = manifest
        if isinstance(manifest.postprocess, MaskPost):
            self.post = manifest.postprocess
            return
        spec = next((s for s in manifest.outputs if len(s.shape) in (3, 4)), None)
        if spec is None:
            raise ModelLoadError(
                f"{manifest.ref}: segmentation needs a [B,C,H,W] or [B,H,W] output"
            )
        layout = manifest.preprocessing.layout if manifest.preprocessing else "nchw"
        self.post = MaskPost(
            output=spec.name, channels_last=len(spec.shape) == 4 and layout == "nhwc"
        )

    def __call__(
        self, outputs: dict[str, np.ndarray], geometry: list[Geometry]
    ) -> list[dict[str, Any]]:
        return [self._row(class_map(self.post, outputs, r), g) for r, g in enumerate(geometry)]

    def _row(self, classes: np.ndarray, geometry: Geometry) -> dict[str, Any]:
        classes = self._to_source(classes, geometry)
        counts = np.bincount(classes.reshape(-1), minlength=1)
        total = classes.size
        result: dict[str, Any] = {
            "mask_shape": list(classes.shape),
            "classes": {
                label_of(self.manifest, i): round(int(n) / total, 6)
                for i, n in enumerate(counts)
                if n
            },
        }
        if self.config.include_mask:
            ok, png = load_cv2().imencode(".png", classes)
            if ok:
                result["mask_png"] = base64.b64encode(png.tobytes()).decode("ascii")
        return result

    @staticmethod
    def _to_source(classes: np.ndarray, geometry: Geometry) -> np.ndarray:
        """Crop the letterbox padding and resize (nearest) to the source image."""
        if geometry.source is None or geometry.resize is None:
            return classes
        w, h = geometry.source
        r = geometry.resize
        mh, mw = classes.shape
        if r.mode == "letterbox":
            box = letterbox_geometry(w, h, r.width, r.height)
            fy, fx = mh / r.height, mw / r.width  # the mask may be smaller than the input
            y0, x0 = round(box.pad_y * fy), round(box.pad_x * fx)
            classes = classes[
                y0 : y0 + max(1, round(box.height * fy)), x0 : x0 + max(1, round(box.width * fx))
            ]
        cv2 = load_cv2()
        resized: np.ndarray = cv2.resize(classes, (w, h), interpolation=cv2.INTER_NEAREST)
        return resized
