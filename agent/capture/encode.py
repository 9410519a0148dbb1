"""A captured input as the bytes that are uploaded: JPEG for images, ``.npy`` for the rest.

Images (encoded bytes or a decoded 8-bit frame, as the source delivered them, before the
model's preprocessing) are resized so the longest side is at most ``max_side`` (INTER_AREA,
never up) and written with ``cv2.imencode`` at ``jpeg_quality``. Tensors (``.npy`` inputs,
batch rows) are stored as ``.npy`` of the array the source gave, so a label refers to exactly
what the model saw.
"""

from __future__ import annotations

import io

import numpy as np

from agent.errors import InputError
from agent.preprocess import NPY_MAGIC, decode, load_cv2
from edgefleet.contract.capture import SampleContentType


def encode_sample(
    data: bytes | np.ndarray, *, tensor: bool, max_side: int, jpeg_quality: int
) -> tuple[bytes, SampleContentType]:
    """(content, content type) of one input; InputError if an image cannot be re-encoded."""
    if isinstance(data, bytes) and data[:6] == NPY_MAGIC:
        return data, "application/x-npy"
    if isinstance(data, np.ndarray) and (tensor or data.dtype != np.uint8 or data.ndim > 3):
        return _npy(data), "application/x-npy"
    image = decode(data, gray=False) if isinstance(data, bytes) else data
    cv2 = load_cv2()
    h, w = image.shape[:2]
    if max(h, w) > max_side:
        scale = max_side / max(h, w)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", image, [int(cv2.IMWRITE_JPEG_QUALITY), int(jpeg_quality)])
    if not ok:
        raise InputError("cannot encode the captured image as JPEG", kind="capture_encode")
    return bytes(buf), "image/jpeg"


def _npy(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, np.ascontiguousarray(array), allow_pickle=False)
    return out.getvalue()
