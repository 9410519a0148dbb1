"""Distances between two histograms, and the threshold a distance must pass at a sample size.

A distance between a window's histogram and a reference is never zero, even with nothing
drifted: ``n`` inputs are a sample. How far it strays by chance depends on ``n`` and on the
reference's shape, so a fixed threshold either cries wolf on a small window or sleeps through
a big one. :func:`null_threshold` draws the window (and, when the reference itself came from
``n_ref`` rows, the reference too) ``draws`` times from the reference distribution — the
multinomial *null* — and returns the ``1 − alpha`` quantile of the distance; a detector calls
drift only above ``max(effect floor, that quantile)``.

Why ``n`` is the number of *inputs* sampled, not the number of values counted: the values of
one image are not independent draws. One input's histogram is a point of the probability
simplex with mean ``p`` over inputs; since each bin share ``h_b`` lies in [0, 1],
``Var(h_b) = E[h_b²] − p_b² ≤ p_b − p_b² = p_b(1 − p_b)`` — no more than that of one
multinomial draw. The multinomial null with ``n`` = inputs therefore over-states the chance
spread: the false-alarm rate it gives is an upper bound (measured in
``bench/input_drift.py``; docs/drift.md has the numbers).

Both distances are computed on proportions smoothed by :data:`EPSILON` so that an empty bin
on one side is finite (PSI on raw proportions is infinite there).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from typing import Literal

import numpy as np
from numpy.typing import NDArray

Distance = Literal["psi", "js"]

#: Added to every bin share before renormalising (a share of 1e-4 ≈ one value in 10⁴).
EPSILON = 1e-4

Array = NDArray[np.float64]


def proportions(counts: Sequence[float] | Array) -> Array:
    """Counts → smoothed shares (rows of a 2-D array are separate histograms)."""
    values = np.asarray(counts, dtype=np.float64)
    totals = values.sum(axis=-1, keepdims=True)
    shares = np.divide(values, totals, out=np.zeros_like(values), where=totals > 0)
    shares = shares + EPSILON
    result: Array = shares / shares.sum(axis=-1, keepdims=True)
    return result


def psi(q: Array, p: Array) -> Array:
    """Population stability index ``Σ (q − p) ln(q / p)`` of smoothed shares (last axis)."""
    result: Array = np.sum((q - p) * np.log(q / p), axis=-1)
    return result


def js_distance(q: Array, p: Array) -> Array:
    """Jensen–Shannon distance (square root of the divergence, base 2: in [0, 1])."""
    m = 0.5 * (q + p)
    divergence = 0.5 * np.sum(q * np.log2(q / m), axis=-1) + 0.5 * np.sum(
        p * np.log2(p / m), axis=-1
    )
    result: Array = np.sqrt(np.clip(divergence, 0.0, None))
    return result


def distance(kind: Distance, window: Sequence[float], reference: Sequence[float]) -> float:
    q, p = proportions(window), proportions(reference)
    return float(psi(q, p) if kind == "psi" else js_distance(q, p))


def _rounded(n: int) -> int:
    """``n`` rounded down to two significant digits: thresholds are cached per rounded size
    (a smaller n gives a higher threshold, so rounding down only ever makes it stricter)."""
    if n < 100:
        return n
    scale = int(10 ** (int(math.log10(n)) - 1))
    return n // scale * scale


def null_threshold(
    kind: Distance,
    reference: Sequence[float],
    *,
    n: int,
    n_ref: int | None,
    alpha: float,
    draws: int = 4000,
) -> float:
    """The ``1 − alpha`` quantile of ``kind`` between ``n`` inputs drawn from ``reference``
    and ``reference`` itself (redrawn with ``n_ref`` inputs when it is a sample, else exact)."""
    shares = np.asarray(reference, dtype=np.float64)
    total = shares.sum()
    # The cache key holds the shares as one bytes object, not a tuple of float objects: a
    # forming reference makes a new key on every drift run, and a 4096-entry cache of float
    # tuples grew the server's heap by ~3 MB in its first half hour (the soak, issue #16).
    key = np.ascontiguousarray(shares / total if total > 0 else shares).tobytes()
    return _null_threshold(kind, key, _rounded(max(n, 1)), n_ref, alpha, draws)


#: Thresholds kept (~0.3 KB each): the few live (reference, rounded n) pairs of every model
#: version's detectors, with room for the ones a forming reference leaves behind.
CACHE_SIZE = 1024


@lru_cache(maxsize=CACHE_SIZE)
def _null_threshold(
    kind: Distance,
    reference: bytes,
    n: int,
    n_ref: int | None,
    alpha: float,
    draws: int,
) -> float:
    p = np.frombuffer(reference, dtype=np.float64)
    if p.sum() <= 0:
        return math.inf
    p = p / p.sum()
    rng = np.random.default_rng(20261206)  # the same verdict for the same data, every run
    window = proportions(rng.multinomial(n, p, size=draws).astype(np.float64))
    if n_ref is None:
        ref = np.broadcast_to(proportions(p), window.shape)
    else:
        ref = proportions(rng.multinomial(max(n_ref, 1), p, size=draws).astype(np.float64))
    values = psi(window, ref) if kind == "psi" else js_distance(window, ref)
    return float(np.quantile(values, 1.0 - alpha))
