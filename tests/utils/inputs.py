"""Simulated camera inputs and their statistics, computed the way the agent reports them
(per-channel histograms over the manifest's edges, out-of-range values in the end bins), for
tests and bench/input_drift.py.

An "image" is 28×28 values in [0, 1]: a dark background with a per-image share of bright
stroke pixels (10–30 %), so images differ from each other as real ones do. Shifts: "slight"
(× 0.95), "dim" (× 0.85), "darken" (× 0.5), "invert" (1 − x), "noise" (+ N(0, 0.2)), "none".
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

Shift = Literal["none", "slight", "dim", "darken", "invert", "noise"]
EDGES = [i / 16 for i in range(17)]
LABELS = ["zero", "one", "two", "three"]
CLASS_SHARES = [0.4, 0.3, 0.2, 0.1]


def images(rng: np.random.Generator, n: int, shift: Shift = "none") -> np.ndarray:
    stroke_share = rng.uniform(0.1, 0.3, size=(n, 1))
    stroke = rng.random((n, 28 * 28)) < stroke_share
    values = np.where(stroke, rng.beta(20, 2, (n, 28 * 28)), rng.beta(1, 20, (n, 28 * 28)))
    if shift == "slight":
        values = values * 0.95
    elif shift == "dim":
        values = values * 0.85
    elif shift == "darken":
        values = values * 0.5
    elif shift == "invert":
        values = 1.0 - values
    elif shift == "noise":
        values = values + rng.normal(0, 0.2, values.shape)
    return values


def histogram(values: np.ndarray) -> list[int]:
    counts, _ = np.histogram(np.clip(values, EDGES[0], EDGES[-1]), bins=EDGES)
    return [int(c) for c in counts]


def input_stats(rng: np.random.Generator, n: int, shift: Shift = "none") -> dict[str, Any]:
    """InputStats (as a dict) of ``n`` sampled inputs, one channel."""
    values = images(rng, n, shift)
    return {
        "samples": n,
        "channel_mean": [float(values.mean())],
        "channel_std": [float(values.std())],
        "channel_histograms": [histogram(values)],
        "outside_reference": 0,
    }


def class_counts(rng: np.random.Generator, n: int, shares: list[float] | None = None) -> dict:
    counts = rng.multinomial(n, shares or CLASS_SHARES)
    return {str(i): int(c) for i, c in enumerate(counts) if c}


def reference_stats(rng: np.random.Generator, n: int = 500) -> dict[str, Any]:
    """The converter's reference_stats for a calibration set of ``n`` unshifted images."""
    stats = input_stats(rng, n)
    return {
        "samples": n,
        "channel_mean": stats["channel_mean"],
        "channel_std": stats["channel_std"],
        "histogram_edges": EDGES,
        "channel_histograms": stats["channel_histograms"],
        "output_distribution": CLASS_SHARES,
    }
