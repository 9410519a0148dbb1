"""Reference statistics of the eval set, stored in the manifest for drift detection."""

from __future__ import annotations

from typing import Any

from edgefleet.contract.manifest import ReferenceStats

HISTOGRAM_BINS = 16
#: Per-channel statistics stop here; wider inputs get one overall channel.
MAX_CHANNELS = 1024


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
    if high <= low:
        high = low + 1.0
    edges = np.linspace(low, high, HISTOGRAM_BINS + 1)
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
