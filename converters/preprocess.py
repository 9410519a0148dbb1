"""Image → tensor by the manifest's :class:`~edgefleet.contract.Preprocessing` recipe (OpenCV).

The converter's copy of the recipe the device applies: calibration images must look exactly like
what the deployed model will see.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from converters.errors import InputError
from edgefleet.contract import Preprocessing

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".pgm", ".ppm", ".webp"})
#: Images larger than this (bytes) are refused before decoding.
MAX_IMAGE_BYTES = 64 * 1024 * 1024


def _interpolation(name: str) -> int:
    import cv2

    return {
        "linear": cv2.INTER_LINEAR,
        "nearest": cv2.INTER_NEAREST,
        "area": cv2.INTER_AREA,
        "cubic": cv2.INTER_CUBIC,
    }[name]


def _resize(image: Any, pre: Preprocessing) -> Any:
    import cv2
    import numpy as np

    spec = pre.resize
    if spec is None:
        return image
    interp = _interpolation(spec.interpolation)
    if spec.mode == "stretch":
        return cv2.resize(image, (spec.width, spec.height), interpolation=interp)
    height, width = image.shape[:2]
    ratio = min(spec.width / width, spec.height / height)
    new_w, new_h = max(1, round(width * ratio)), max(1, round(height * ratio))
    resized = cv2.resize(image, (new_w, new_h), interpolation=interp)
    canvas = np.full((spec.height, spec.width, *image.shape[2:]), spec.pad_value, image.dtype)
    top, left = (spec.height - new_h) // 2, (spec.width - new_w) // 2
    canvas[top : top + new_h, left : left + new_w] = resized
    return canvas


def preprocess(image: Any, pre: Preprocessing) -> Any:
    """An 8-bit image (HxW gray, or HxWx3 BGR as OpenCV decodes) → one row of model input."""
    import cv2
    import numpy as np

    if pre.color == "gray":
        if image.ndim == 3:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    elif image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if pre.color == "rgb":
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    image = _resize(image, pre)
    if pre.invert:
        image = 255 - image
    x = image.astype(np.float32) * np.float32(pre.scale)
    if x.ndim == 2:
        x = x[:, :, None]
    if pre.mean:
        x = x - np.asarray(pre.mean, dtype=np.float32)
    if pre.std:
        x = x / np.asarray(pre.std, dtype=np.float32)
    if pre.layout == "nchw":
        x = np.transpose(x, (2, 0, 1))
    elif pre.layout == "flat":
        x = x.reshape(-1)
    return np.ascontiguousarray(x.astype(np.dtype(pre.dtype)))


def load_image(path: Path, pre: Preprocessing) -> Any:
    """Decode ``path`` with OpenCV and preprocess it; InputError naming the file if unreadable."""
    import cv2
    import numpy as np

    try:
        size = path.stat().st_size
        if size > MAX_IMAGE_BYTES:
            raise InputError(f"image {path.name} is {size} bytes; the limit is {MAX_IMAGE_BYTES}")
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as err:
        raise InputError(f"image {path.name}: cannot read: {err}") from err
    flag = cv2.IMREAD_GRAYSCALE if pre.color == "gray" else cv2.IMREAD_COLOR
    image = cv2.imdecode(data, flag)
    if image is None:
        raise InputError(f"image {path.name} is not a decodable image")
    return preprocess(image, pre)
