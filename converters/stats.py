"""Reference statistics of the eval set, stored in the manifest for drift detection."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from edgefleet.contract.manifest import ReferenceStats

HISTOGRAM_BINS = 16
#: Per-channel statistics stop here; wider inputs get one overall channel.
MAX_CHANNELS = 1024
#: Data with at most this many distinct values is treated as discrete (pixels, counts): its
#: bin edges are placed between values, never on one.
MAX_DISTINCT = 4096


def track_distinct(seen: Any | None, data: Any) -> Any | None:
    """The distinct values of ``data`` merged into ``seen`` (start with an empty array);
    None once there are too many for the data to be discrete."""
    import numpy as np

    if seen is None:
        return None
    merged = np.union1d(seen, np.unique(data))
    return merged if len(merged) <= MAX_DISTINCT else None


def bin_edges(low: float, high: float, distinct: Any | None) -> Any:
    """``HISTOGRAM_BINS`` equal bins over [low, high]; for discrete data each edge moved to the
    nearest midpoint between two of its values, the outer ones half a step outside them.

    Equal edges on pixel data fall exactly on values (0..16 in 16 bins: every edge is a value),
    so float rounding on the device — 2.9999999 against 3.0 — moves a value to the next bin and
    looks like drift (found in the capture e2e test). Fewer distinct values than bins give
    fewer bins."""
    import numpy as np

    if high <= low:
        high = low + 1.0
    edges = np.linspace(low, high, HISTOGRAM_BINS + 1)
    values = distinct
    if values is None or len(values) < 2:
        return edges
    mids = (values[1:] + values[:-1]) / 2
    nearest = np.abs(mids[:, None] - edges[None, 1:-1]).argmin(axis=0)
    inner = np.unique(mids[nearest])
    first, last = (
        values[0] - (values[1] - values[0]) / 2,
        values[-1] + (values[-1] - values[-2]) / 2,
    )
    return np.concatenate([[first], inner, [last]])


def _channels_last(x: Any, layout: str | None) -> Any:
    import numpy as np

    if x.ndim == 2:
        return x
    if x.ndim == 4:
        moved = x if layout == "nhwc" else np.moveaxis(x, 1, -1)
        return moved.reshape(-1, moved.shape[-1])
    return x.reshape(-1, 1)


def class_index(outputs: dict[str, Any]) -> Any | None:
    """Predicted class index per row, from the first 2-D float output (scores)."""
    import numpy as np

    for value in outputs.values():
        if value.dtype.kind == "f" and value.ndim == 2 and value.shape[1] > 1:
            return np.argmax(value, axis=1)
    return None


def reference_stats(
    x: Any, *, layout: str | None, predicted: Any | None, n_classes: int | None
) -> ReferenceStats:
    """Per-feature (or per-channel) mean, std and histograms; predicted class frequencies."""
    import numpy as np

    data = _channels_last(np.asarray(x, dtype=np.float64), layout)
    if data.shape[1] > MAX_CHANNELS:
        data = data.reshape(-1, 1)
    low, high = float(data.min()), float(data.max())
    edges = bin_edges(low, high, track_distinct(np.empty(0), data))
    histograms = [np.histogram(data[:, c], bins=edges)[0].tolist() for c in range(data.shape[1])]
    distribution: list[float] = []
    if predicted is not None and n_classes:
        counts = np.bincount(np.asarray(predicted, dtype=np.int64), minlength=n_classes)
        distribution = (counts[:n_classes] / max(len(predicted), 1)).tolist()
    return ReferenceStats(
        samples=len(x),
        channel_mean=data.mean(axis=0).tolist(),
        channel_std=data.std(axis=0).tolist(),
        histogram_edges=edges.tolist(),
        channel_histograms=histograms,
        output_distribution=distribution,
    )


def _merge_counts(seen: list[Any] | None, data: Any) -> list[Any] | None:
    """Per channel (value, count) arrays of ``data`` merged into ``seen`` (start with ``[]``);
    None once all channels hold more than :data:`MAX_DISTINCT` distinct values together (the
    data is not discrete)."""
    import numpy as np

    if seen is None:
        return None
    merged: list[Any] = []
    for c in range(data.shape[1]):
        values, counts = np.unique(data[:, c], return_counts=True)
        if c < len(seen):
            values, where = np.unique(np.concatenate([seen[c][0], values]), return_inverse=True)
            counts = np.bincount(
                where, weights=np.concatenate([seen[c][1], counts]), minlength=len(values)
            )
        merged.append((values, counts))
    union = np.unique(np.concatenate([v for v, _ in merged])) if merged else np.empty(0)
    return merged if len(union) <= MAX_DISTINCT else None


def streaming_reference_stats(
    batches: Callable[[], Iterator[Any]],
    *,
    layout: str | None,
    predict: Callable[[dict[str, Any]], Any | None] | None,
    n_classes: int | None,
) -> ReferenceStats:
    """:func:`reference_stats` over a stream of input batches, in constant memory.

    ``batches`` returns a fresh iterator of ``{input name: array}`` dicts; the first input is
    described. ``predict`` maps a batch to predicted class indices (or None). The first pass
    sums and counts each channel's values; discrete data (pixels: at most
    :data:`MAX_DISTINCT` values) gets its histograms from those counts, so a second pass runs
    only for continuous data or for ``predict`` (PicoDet's 64 calibration rows of 800x608 took
    15 s in two passes here, half of it reading and widening the rows again).
    """
    import numpy as np

    count = 0
    total: Any = None
    squares: Any = None
    low, high = np.inf, -np.inf
    seen: list[Any] | None = []
    wide = False
    samples = 0
    for feeds in batches():
        x = next(iter(feeds.values()))
        samples += len(x)
        data = _channels_last(np.asarray(x, np.float64), layout)
        wide = wide or data.shape[1] > MAX_CHANNELS
        if wide:
            data = data.reshape(-1, 1)
        if total is None or total.shape[0] != data.shape[1]:
            total, squares = np.zeros(data.shape[1]), np.zeros(data.shape[1])
            seen = [] if seen is not None else None
        total += data.sum(axis=0)
        squares += (data * data).sum(axis=0)
        count += data.shape[0]
        low, high = min(low, float(data.min())), max(high, float(data.max()))
        seen = _merge_counts(seen, data)
    distinct = np.unique(np.concatenate([v for v, _ in seen])) if seen else None
    edges = bin_edges(low, high, distinct)
    histograms = np.zeros((len(total), len(edges) - 1), dtype=np.int64)
    if seen is not None:
        for c, (values, counts) in enumerate(seen):
            histograms[c] = np.histogram(values, bins=edges, weights=counts)[0].round()
    classes = np.zeros(n_classes or 1, dtype=np.int64)
    classify = predict is not None and bool(n_classes)
    if seen is None or classify:
        for feeds in batches():
            if seen is None:
                x = next(iter(feeds.values()))
                data = _channels_last(np.asarray(x, np.float64), layout)
                if wide:
                    data = data.reshape(-1, 1)
                for c in range(data.shape[1]):
                    histograms[c] += np.histogram(data[:, c], bins=edges)[0]
            predicted = predict(feeds) if predict is not None and classify else None
            if predicted is not None:
                classes += np.bincount(np.asarray(predicted, np.int64), minlength=len(classes))[
                    : len(classes)
                ]
    mean = total / max(count, 1)
    std = np.sqrt(np.maximum(squares / max(count, 1) - mean * mean, 0.0))
    distribution = (classes / max(samples, 1)).tolist() if classify else []
    return ReferenceStats(
        samples=samples,
        channel_mean=mean.tolist(),
        channel_std=std.tolist(),
        histogram_edges=edges.tolist(),
        channel_histograms=histograms.tolist(),
        output_distribution=distribution,
    )
