"""Image or ``.npy`` bytes → the model's first input tensor, as the manifest describes.

Images: decode (``cv2.imdecode``) → color → resize (stretch or letterbox) → invert →
``x = (pixel * scale - mean) / std`` → layout → dtype, all vectorised. ``.npy`` files are ready
tensors, loaded with ``allow_pickle=False`` and checked against the input spec.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

from agent.engine.quant import quantize
from agent.errors import InputError
from edgefleet.contract import Preprocessing, TensorSpec

#: cv2 constant names by the manifest's interpolation names (resolved when OpenCV loads).
INTERPOLATION: dict[str, str] = {
    "linear": "INTER_LINEAR",
    "nearest": "INTER_NEAREST",
    "area": "INTER_AREA",
    "cubic": "INTER_CUBIC",
}


@cache
def load_cv2() -> Any:
    """OpenCV, imported on first use: only image decode/resize, video and some postprocessors
    need it, and it costs ~20 MB of RSS, so a device serving tensors never loads it."""
    # A small PNG can declare a gigapixel image: cap what the decoder allocates (read at import).
    os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(64 * 1024 * 1024))
    # Bad inputs are counted and logged by the agent as JSON (InputError); OpenCV's own messages
    # about the same inputs would print free-form lines into the JSON log stream.
    os.environ.setdefault("OPENCV_LOG_LEVEL", "SILENT")
    import cv2

    return cv2


NPY_MAGIC = b"\x93NUMPY"


@dataclass(frozen=True)
class Letterbox:
    """Where the resized image sits in the model input: ``model = image * scale + pad``."""

    scale: float
    pad_x: int
    pad_y: int
    width: int  # resized image size inside the padded canvas
    height: int


def letterbox_geometry(src_w: int, src_h: int, dst_w: int, dst_h: int) -> Letterbox:
    scale = min(dst_w / src_w, dst_h / src_h)
    width = max(1, min(dst_w, round(src_w * scale)))
    height = max(1, min(dst_h, round(src_h * scale)))
    return Letterbox(
        scale=scale,
        pad_x=(dst_w - width) // 2,
        pad_y=(dst_h - height) // 2,
        width=width,
        height=height,
    )


class Preprocessor:
    """Turns one input file's bytes into a batch of one for the model's first input."""

    def __init__(self, spec: Preprocessing | None, tensor: TensorSpec) -> None:
        self.spec = spec
        self.tensor = tensor
        self.dtype = np.dtype("bool" if tensor.dtype == "bool" else tensor.dtype)
        self._dims = tuple(d if isinstance(d, int) else None for d in tensor.shape)
        # A quantized integer input takes real values through the manifest's scale/zero-point.
        self.quant = tensor.quantization if self.dtype.kind in "iu" else None
        if spec is not None:
            channels = 1 if spec.color == "gray" else 3
            # Precomputed as float32 vectors so the hot path is two broadcasts.
            self._mean = np.asarray(spec.mean or [0.0], np.float32).reshape(1, 1, -1)
            self._inv_std = 1.0 / np.asarray(spec.std or [1.0], np.float32).reshape(1, 1, -1)
            self._channels = channels

    def image_shape(self) -> tuple[int, ...] | None:
        """The tensor shape images become, when the resize fixes it (None otherwise)."""
        spec = self.spec
        if spec is None or spec.resize is None:
            return None
        h, w, c = spec.resize.height, spec.resize.width, 1 if spec.color == "gray" else 3
        return {"nchw": (1, c, h, w), "nhwc": (1, h, w, c), "flat": (1, h * w * c)}[spec.layout]

    def mismatch(self) -> str | None:
        """Why images could never fit the model input (checked once, at load), or None."""
        if self.quant is not None and self.spec is not None and self.spec.dtype == "float32":
            pass  # real values, quantized with the manifest's scale/zero-point
        elif self.spec is not None and np.dtype(self.spec.dtype) != self.dtype:
            return f"preprocessing dtype {self.spec.dtype} != input dtype {self.dtype}"
        shape = self.image_shape()
        if shape is None:
            return None
        if len(shape) != len(self._dims) or any(
            d is not None and d != s for d, s in zip(self._dims, shape, strict=True)
        ):
            want = tuple("?" if d is None else d for d in self._dims)
            return f"preprocessing makes {shape}, input {self.tensor.name!r} is {want}"
        return None

    def __call__(self, data: bytes) -> np.ndarray:
        return self.prepare(data)[0]

    def prepare(
        self, data: bytes | np.ndarray, *, tensor: bool = False
    ) -> tuple[np.ndarray, tuple[int, int] | None]:
        """Bytes (image or .npy), a decoded BGR/gray frame, or a ready tensor (``tensor``) →
        (batch of one, source (w, h)).

        The source size is None for tensors; postprocessors use it to undo the resize.
        """
        if isinstance(data, np.ndarray):
            if tensor:
                return self.from_array(data), None
            return self.from_frame(data), (data.shape[1], data.shape[0])
        if data[:6] == NPY_MAGIC:
            return self.from_npy(data), None
        spec = self.spec
        if spec is None:
            raise InputError("the model has no preprocessing: send .npy tensors", kind="bad_input")
        image = decode(data, gray=spec.color == "gray")
        return self.from_frame(image), (image.shape[1], image.shape[0])

    def from_npy(self, data: bytes) -> np.ndarray:
        try:
            array = np.load(io.BytesIO(data), allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            raise InputError(f"unreadable .npy: {err}", kind="bad_tensor") from err
        if not isinstance(array, np.ndarray):
            raise InputError(".npy does not hold one array", kind="bad_tensor")
        return self.from_array(array)

    def from_array(self, array: np.ndarray) -> np.ndarray:
        """A ready tensor (with or without its batch axis), checked against the input spec."""
        if array.ndim == len(self._dims) - 1:
            array = array[np.newaxis]
        if array.ndim != len(self._dims) or any(
            d is not None and d != s for d, s in zip(self._dims, array.shape, strict=True)
        ):
            want = tuple("?" if d is None else d for d in self._dims)
            raise InputError(
                f"tensor shape {array.shape} does not fit input {self.tensor.name!r} {want}",
                kind="bad_tensor_shape",
            )
        if array.dtype != self.dtype:
            if self.quant is not None and array.dtype.kind == "f":
                return np.ascontiguousarray(quantize(array, self.quant, self.dtype))
            if not np.can_cast(array.dtype, self.dtype, casting="same_kind"):
                raise InputError(
                    f"tensor dtype {array.dtype} cannot become {self.dtype}",
                    kind="bad_tensor_dtype",
                )
            array = array.astype(self.dtype)
        return np.ascontiguousarray(array)

    def from_frame(self, image: np.ndarray) -> np.ndarray:
        """A decoded 8-bit BGR (or gray) image → a batch of one."""
        spec = self.spec
        if spec is None:
            raise InputError("the model has no preprocessing: send .npy tensors", kind="bad_input")
        cv2 = load_cv2()
        if spec.color == "gray" and image.ndim == 3:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        elif spec.color != "gray" and image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        # Resize first: a channel swap commutes with resizing and costs less on fewer pixels.
        image = self._resize(image)
        if spec.color == "rgb":
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        if image.ndim == 2:
            image = image[:, :, np.newaxis]
        if spec.invert:
            image = 255 - image
        x = image.astype(np.float32)
        x *= np.float32(spec.scale)
        if spec.mean:
            x -= self._mean
        if spec.std:
            x *= self._inv_std
        if spec.layout == "nchw":
            x = x.transpose(2, 0, 1)[np.newaxis]
        elif spec.layout == "nhwc":
            x = x[np.newaxis]
        else:
            x = x.reshape(1, -1)
        if self.quant is not None:
            return np.ascontiguousarray(quantize(x, self.quant, self.dtype))
        return np.ascontiguousarray(_cast(x, self.dtype))

    def _resize(self, image: np.ndarray) -> np.ndarray:
        spec = self.spec
        assert spec is not None
        if spec.resize is None:
            return image
        r = spec.resize
        cv2 = load_cv2()
        interp = getattr(cv2, INTERPOLATION[r.interpolation])
        if r.mode == "stretch":
            stretched: np.ndarray = cv2.resize(image, (r.width, r.height), interpolation=interp)
            return stretched
        h, w = image.shape[:2]
        box = letterbox_geometry(w, h, r.width, r.height)
        resized = cv2.resize(image, (box.width, box.height), interpolation=interp)
        canvas = np.full((r.height, r.width, *image.shape[2:]), r.pad_value, dtype=image.dtype)
        canvas[box.pad_y : box.pad_y + box.height, box.pad_x : box.pad_x + box.width] = resized
        return canvas


def decode(data: bytes, *, gray: bool) -> np.ndarray:
    """Decode 8-bit BGR (or gray) pixels; InputError if the bytes are not an image."""
    if not data:
        raise InputError("empty file", kind="corrupt_image")
    cv2 = load_cv2()
    flags = cv2.IMREAD_GRAYSCALE if gray else cv2.IMREAD_COLOR
    try:
        image: np.ndarray | None = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    except cv2.error as err:
        detail = str(err).strip()[:200]
        raise InputError(f"cannot decode image: {detail}", kind="corrupt_image") from err
    if image is None or image.size == 0:
        raise InputError("cannot decode image (corrupt or unsupported)", kind="corrupt_image")
    return image


def _cast(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        clipped: np.ndarray = np.clip(np.rint(x), info.min, info.max)
        return clipped.astype(dtype)
    return x.astype(dtype, copy=False)
