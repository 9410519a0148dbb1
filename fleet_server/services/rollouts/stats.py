"""The statistics rollout gates decide with: one-sided confidence bounds, written out with their
references so that a reader can check them (no scipy on the server).

Every gate asks "is the candidate worse than the baseline by more than the threshold?" and
answers from a confidence interval at a stated false-alarm rate ``alpha`` (one-sided):

- a difference of two proportions (error rate, labelled accuracy): Newcombe's hybrid score
  interval built from two Wilson intervals (Newcombe 1998, *Statistics in Medicine* 17:873,
  method 10), which keeps its coverage at small counts and at rates near 0 where the Wald
  interval collapses;
- a ratio of latencies: a t interval on the difference of mean log p95s (so the ratio of geometric
  means), Welch-Satterthwaite degrees of freedom (Welch 1947); the t quantile from the
  regularised incomplete beta function (Numerical Recipes 3rd ed., 6.4, Lentz's continued
  fraction), checked against scipy in the tests;
- a shift of a confidence histogram: the largest gap between binned CDFs (Kolmogorov-Smirnov on
  the bins), compared device by device (a normal bound from the multinomial variance) against the
  devices' own history, or with devices as units (pooled t) against other devices; Bonferroni
  over the bin edges.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

from fleet_server.services.quality.metrics import wilson

Verdict = Literal["pass", "fail", "wait"]


def z_quantile(alpha: float) -> float:
    """The standard normal quantile with ``alpha`` above it (one-sided)."""
    return NormalDist().inv_cdf(1.0 - alpha)


def _betacf(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 3e-16
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with ``df`` degrees of freedom."""
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return tail if t >= 0 else 1.0 - tail


def t_quantile(alpha: float, df: float) -> float:
    """The t value with ``alpha`` above it (one-sided); the normal one for unbounded ``df``."""
    if not 0 < alpha < 0.5:
        raise ValueError("alpha must be in (0, 0.5)")
    if math.isinf(df) or df > 1e7:
        return z_quantile(alpha)
    lo, hi = 0.0, 1.0
    while t_sf(hi, df) > alpha:  # bracket, then bisect: monotone, so this always converges
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_sf(mid, df) > alpha:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-10 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class Interval:
    """A point estimate and its two one-sided bounds, each at ``alpha``."""

    estimate: float
    low: float
    high: float


def proportion_difference(x1: int, n1: int, x2: int, n2: int, *, alpha: float) -> Interval:
    """p1 - p2 with Newcombe's hybrid score bounds (each one-sided at ``alpha``)."""
    z = z_quantile(alpha)
    p1, p2 = x1 / n1, x2 / n2
    l1, u1 = wilson(x1, n1, z)
    l2, u2 = wilson(x2, n2, z)
    d = p1 - p2
    low = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return Interval(d, low, high)


def stratified_difference(strata: Sequence[tuple[int, int, int, int]], *, alpha: float) -> Interval:
    """p_new - p_old within strata (devices), each stratum ``(x_new, n_new, x_old, n_old)``,
    weighted by its ``n_new`` (a direct standardisation: a different device mix on the two sides
    is no difference). Bounds by MOVER from Wilson limits (Zou & Donner 2008, *Statistics in
    Medicine* 27:1693, for linear combinations of proportions; with one stratum it is Newcombe's
    hybrid score interval): 13/13 right is not taken for certainty the way a Wald variance would."""
    z = z_quantile(alpha)
    total = sum(s[1] for s in strata)
    estimate = below = above = 0.0
    for x_new, n_new, x_old, n_old in strata:
        weight = n_new / total
        p_new, p_old = x_new / n_new, x_old / n_old
        l_new, u_new = wilson(x_new, n_new, z)
        l_old, u_old = wilson(x_old, n_old, z)
        estimate += weight * (p_new - p_old)
        below += weight**2 * ((p_new - l_new) ** 2 + (u_old - p_old) ** 2)
        above += weight**2 * ((u_new - p_new) ** 2 + (p_old - l_old) ** 2)
    return Interval(estimate, estimate - math.sqrt(below), estimate + math.sqrt(above))


@dataclass(frozen=True)
class MeanDifference:
    """A difference of means with its standard error and degrees of freedom."""

    estimate: float
    se: float
    df: float

    def interval(self, *, alpha: float) -> Interval:
        if self.se == 0.0:
            return Interval(self.estimate, self.estimate, self.estimate)
        if self.df <= 0 or math.isnan(self.df):
            return Interval(self.estimate, -math.inf, math.inf)
        half = t_quantile(alpha, self.df) * self.se
        return Interval(self.estimate, self.estimate - half, self.estimate + half)


def _mean_var(values: Sequence[float]) -> tuple[float, float]:
    n = len(values)
    mean = math.fsum(values) / n
    return mean, math.fsum((v - mean) ** 2 for v in values) / (n - 1)


def welch_sum(parts: Sequence[tuple[Sequence[float], Sequence[float]]]) -> MeanDifference | None:
    """The average over ``parts`` of mean(new) - mean(old), each part a (new, old) pair of samples
    with at least two values on each side (fixed effects: e.g. one part per device, its own
    pre-update intervals against its post-update ones). Welch-Satterthwaite df."""
    usable = [(a, b) for a, b in parts if len(a) >= 2 and len(b) >= 2]
    if not usable:
        return None
    k = len(usable)
    estimate, variance, df_den = 0.0, 0.0, 0.0
    for new, old in usable:
        mean_new, var_new = _mean_var(new)
        mean_old, var_old = _mean_var(old)
        estimate += (mean_new - mean_old) / k
        for var, n in ((var_new, len(new)), (var_old, len(old))):
            term = var / n / (k * k)
            variance += term
            df_den += term * term / (n - 1)
    df = variance * variance / df_den if df_den > 0 else math.inf
    return MeanDifference(estimate, math.sqrt(variance), df)


def fixed_mean(parts: Sequence[Sequence[float]]) -> MeanDifference | None:
    """The average over ``parts`` of each part's mean (fixed effects: one part per device, its
    intervals' paired differences, e.g. log shadow p95 - log serving p95 on the same inputs),
    from the parts with at least two values; its standard error from their within-part spread,
    Welch-Satterthwaite df. None when no part has two values (the spread is unknown)."""
    usable = [p for p in parts if len(p) >= 2]
    if not usable:
        return None
    k = len(usable)
    estimate, variance, df_den = 0.0, 0.0, 0.0
    for values in usable:
        mean, var = _mean_var(values)
        estimate += mean / k
        term = var / len(values) / (k * k)
        variance += term
        df_den += term * term / (len(values) - 1)
    df = variance * variance / df_den if df_den > 0 else math.inf
    return MeanDifference(estimate, math.sqrt(variance), df)


def pooled_difference(new: Sequence[float], old: Sequence[float]) -> MeanDifference | None:
    """mean(new) - mean(old) for unpaired units (e.g. one value per device) with a pooled
    variance, so that a single canary device can be judged against several control devices;
    None when the variance cannot be estimated (fewer than three units in all)."""
    k, m = len(new), len(old)
    if k == 0 or m == 0 or k + m < 3:
        return None
    ss = 0.0
    for values in (new, old):
        if len(values) >= 2:
            ss += _mean_var(values)[1] * (len(values) - 1)
    df = k + m - 2
    se = math.sqrt(ss / df * (1 / k + 1 / m))
    estimate = math.fsum(new) / k - math.fsum(old) / m
    return MeanDifference(estimate, se, float(df))


def cdf(histogram: Sequence[int]) -> list[float]:
    """The binned CDF at the inner bin edges (bins from low to high confidence)."""
    total = sum(histogram)
    out, acc = [], 0
    for count in histogram[:-1]:
        acc += count
        out.append(acc / total)
    return out


def paired_cdf_shift(
    pairs: Sequence[tuple[Sequence[int], Sequence[int]]], *, alpha: float, both: bool
) -> Interval:
    """How much more mass the new histograms put below some confidence edge than the same
    devices' old ones: at each edge the share below it is a proportion, compared device by
    device (:func:`stratified_difference`, weighted by the device's new inferences, so that a
    device mix that differs between the two periods is no shift). Bonferroni over the edges; the
    worst edge is returned. With ``both`` a shift either way counts."""
    edges = len(pairs[0][0]) - 1
    per_edge = alpha / edges / (2 if both else 1)
    worst: Interval | None = None
    for edge in range(edges):
        strata = [
            (sum(new[: edge + 1]), sum(new), sum(old[: edge + 1]), sum(old)) for new, old in pairs
        ]
        up = stratified_difference(strata, alpha=per_edge)
        candidates = [up]
        if both:  # the same shift toward higher confidence, as a positive number
            candidates.append(Interval(-up.estimate, -up.high, -up.low))
        for candidate in candidates:
            if worst is None or (candidate.low, candidate.estimate) > (worst.low, worst.estimate):
                worst = candidate
    assert worst is not None
    return worst


def unit_cdf_shift(
    new: Sequence[Sequence[int]], old: Sequence[Sequence[int]], *, alpha: float, both: bool
) -> Interval:
    """The same shift between *different* devices (new ones against control ones): the unit is
    a device (its own binned CDF), so that devices that see different inputs are the spread, not
    a shift; a pooled t bound at each edge, Bonferroni over the edges. Unbounded when there are
    fewer than three devices in all."""
    new_cdfs, old_cdfs = [cdf(h) for h in new], [cdf(h) for h in old]
    edges = len(new_cdfs[0])
    per_edge = alpha / edges / (2 if both else 1)
    worst: Interval | None = None
    for edge in range(edges):
        difference = pooled_difference([c[edge] for c in new_cdfs], [c[edge] for c in old_cdfs])
        if difference is None:
            point = math.fsum(c[edge] for c in new_cdfs) / len(new_cdfs) - math.fsum(
                c[edge] for c in old_cdfs
            ) / len(old_cdfs)
            candidate = Interval(abs(point) if both else point, -math.inf, math.inf)
        else:
            bounds = difference.interval(alpha=per_edge)
            if both:
                half = bounds.high - bounds.estimate
                point = abs(bounds.estimate)
                candidate = Interval(point, point - half, point + half)
            else:
                candidate = bounds
        if worst is None or (candidate.low, candidate.estimate) > (worst.low, worst.estimate):
            worst = candidate
    assert worst is not None
    return worst


#: An estimate beyond its threshold that is not significant waits until its gate has this many
#: times its ``min_samples``, then passes: more evidence settles most such estimates either way,
#: and waiting on for ever would stall harmless rollouts on noise (bench/gate_bench.py).
PATIENCE = 4


def judge(
    interval: Interval, threshold: float, *, alpha: float, patient: bool
) -> tuple[Verdict, str]:
    """Bigger is worse. Fail only when the whole interval is beyond the threshold (the regression
    is significant *and* beyond it); pass when the estimate is within it. An estimate beyond the
    threshold that is not significant waits while ``patient`` (the gate has fewer than
    ``PATIENCE`` x its ``min_samples``), then passes and says so; when the spread cannot be
    estimated at all it waits."""
    if interval.low > threshold:
        return "fail", f"beyond {threshold:g} at alpha={alpha:g}"
    if interval.estimate <= threshold:
        return "pass", ""
    if math.isinf(interval.low) or math.isinf(interval.high):
        return "wait", f"beyond {threshold:g} but its spread is unknown: needs more devices"
    if patient:
        return "wait", f"beyond {threshold:g}, not significant at alpha={alpha:g}: needs more"
    return "pass", f"beyond {threshold:g} but not significant at alpha={alpha:g}"
