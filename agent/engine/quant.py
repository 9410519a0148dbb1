"""Affine (de)quantization from the manifest's ``QuantParams``.

``real = scale * (q - zero_point)``, per tensor or per channel along ``axis``.
"""

from __future__ import annotations

import numpy as np

from edgefleet.contract.manifest import QuantParams


def _broadcast(values: list[float] | list[int], params: QuantParams, ndim: int) -> np.ndarray:
    array = np.asarray(values, dtype=np.float32)
    if array.size == 1 or params.axis is None:
        return array.reshape(())
    shape = [1] * ndim
    shape[params.axis] = array.size
    return array.reshape(shape)


def quantize(real: np.ndarray, params: QuantParams, dtype: np.dtype) -> np.ndarray:
    """Real values → integers of ``dtype`` (rounded, clipped to the type's range)."""
    scale = _broadcast(params.scale, params, real.ndim)
    zero = _broadcast(params.zero_point, params, real.ndim)
    info = np.iinfo(dtype)
    q = np.rint(real / scale) + zero
    result: np.ndarray = np.clip(q, info.min, info.max).astype(dtype)
    return result


def dequantize(q: np.ndarray, params: QuantParams) -> np.ndarray:
    """Integers → float32 real values."""
    scale = _broadcast(params.scale, params, q.ndim)
    zero = _broadcast(params.zero_point, params, q.ndim)
    result: np.ndarray = (q.astype(np.float32) - zero) * scale
    return result
