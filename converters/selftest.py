"""The self-test file: a few inputs and the outputs the device must reproduce."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

from converters.runtime import run_batched

#: Rows whose top-2 scores are closer than this are avoided: a device's float rounding could
#: flip their argmax and fail a healthy model.
MIN_MARGIN = 0.05
RTOL = 1e-3
#: Relative to the largest output: a few int8 quantization steps of a [0, 1] score.
QUANTIZED_ATOL = 2e-2
QUANTIZED_RTOL = 2e-2


@dataclass(frozen=True)
class SelfTestData:
    npz: bytes
    atol: float
    rtol: float
    outputs: list[str]
    rows: int


def _clear_rows(outputs: dict[str, Any], count: int) -> list[int]:
    import numpy as np

    rows = len(next(iter(outputs.values())))
    margin = np.full(rows, np.inf)
    for value in outputs.values():
        if value.dtype.kind == "f" and value.ndim == 2 and value.shape[1] > 1:
            top2 = np.sort(value, axis=1)[:, -2:]
            margin = np.minimum(margin, top2[:, 1] - top2[:, 0])
    clear = [i for i in range(rows) if margin[i] >= MIN_MARGIN]
    rest = [i for i in range(rows) if margin[i] < MIN_MARGIN]
    return sorted((clear + rest)[:count])


def build_selftest(
    session: Any,
    feeds: dict[str, Any],
    outputs: dict[str, Any],
    *,
    count: int,
    batch: int | None,
    quantized: bool = False,
) -> SelfTestData:
    """Pick ``count`` rows (exactly one batch for a fixed-batch model), rerun, store both sides.

    ``atol`` scales with the largest float output so regression outputs far from 1 are fair.
    A quantized model gets :data:`QUANTIZED_ATOL` instead: a device's int8 kernels may round
    requantization differently from this host's.
    """
    import numpy as np

    total = len(next(iter(feeds.values())))
    if batch is not None:
        count = batch  # the device feeds the stored inputs in one run
    rows = _clear_rows(outputs, min(count, total))
    chosen = {name: np.ascontiguousarray(value[rows]) for name, value in feeds.items()}
    expected = run_batched(session, chosen, batch=batch)
    scale = max(
        [
            1.0,
            *(float(np.abs(v).max()) for v in expected.values() if v.dtype.kind == "f" and v.size),
        ]
    )
    buf = io.BytesIO()
    arrays: dict[str, Any] = {f"input/{k}": v for k, v in chosen.items()}
    arrays.update({f"output/{k}": v for k, v in expected.items()})
    np.savez(buf, **arrays)
    return SelfTestData(
        npz=buf.getvalue(),
        atol=(QUANTIZED_ATOL if quantized else 1e-4) * scale,
        rtol=QUANTIZED_RTOL if quantized else RTOL,
        outputs=list(expected),
        rows=len(rows),
    )
