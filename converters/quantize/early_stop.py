"""Stopping a hopeless candidate early: three rules that keep ``--quantize auto`` short (#12).

1. **Validation stops once the budget is out of reach.** A candidate is scored on the eval rows
   chunk by chunk; after each chunk :func:`best_case` gives the highest metric it could still
   reach over *all* rows if every row not yet run agreed with fp32 perfectly. When even that is
   outside the budget, the rest cannot change the verdict and are not run. This is exact, not a
   statistical guess: top-1, argmax agreement and mask IoU are means over rows, and pooled box
   F1 is highest when the remaining rows' boxes are exactly fp32's (``2(h+R)/(g+w+2R)``). The
   candidate's metric is then that best case (an upper bound) and its drop a lower bound; the
   report says on how many rows it was decided. Cosine over all outputs has no such bound and
   is always measured on every row.
2. **The accuracy-budget loop stops when its pace cannot close the gap.** Each step leaves one
   more tensor's nodes in float; the ranking puts the worst tensor first (activation or weight
   error, :mod:`converters.quantize.ranking`), so a single culprit (a concat of boxes and
   scores, an outlier weight) is spared by the first step, which always runs. After that,
   :func:`loop_out_of_reach` extrapolates the best improvement per step so far over the steps
   left: when that cannot bring the drop within the budget, the loop ends, unless the next
   tensor's simulated int8 error is itself ruinous (:data:`RUINOUS_ERROR`): a model broken by
   several such tensors is mended only once each is spared, and the pace before the last of
   them says nothing. The loop's steps (and the candidate it starts from) are validated on
   every row: a lower bound from rule 1 says nothing about a pace. This is a heuristic, not a
   proof: a culprit ranked low (an error the ranking does not simulate) is not reached once
   the loop stops; the report says where it stopped and why. On the PicoDet layout detector
   the loop ran 6 steps at a box-F1 drop of 0.96 and another 6 from 0.42 to 0.30, each step a
   quantizer run and a validation (about 10 s here).
3. **A MinMax candidate far beyond the budget skips the other range estimators**
   (:func:`far_beyond`, at :data:`FAR_FACTOR` x the budget): entropy and percentile clip a few
   ranges; they do not recover a drop that size, and their histogram calibration was the
   costliest step left on PicoDet. The budget loop still runs on it.
4. **Latency timing stops for a candidate whose rejection is already settled**
   (:func:`timing_settled`). The gate rejects a candidate unless the low end of its paired
   speed-up interval is above 1x, and that low end is the k-th smallest paired round; the
   probe drops one whose median paired round is at most 1x. Once k rounds (the median's rank
   in the probe) were at most 1x, no later round can lift that order statistic above 1x: the
   candidate is rejected whatever its remaining rounds show, and its calls are not made. Exact,
   like rule 1; fp32 and the undecided candidates keep every round. PicoDet's fp16 (0.88x at
   400 ms a call) was timed for all 15 gate rounds to be rejected.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from converters.quantize.task_metrics import TaskDecode, box_counts, f1_of, mask_iou
from converters.validators import predicted_classes
from edgefleet.contract.postprocess import MaskPost
from edgefleet.decode import DecodeError, detect

#: Metrics that have an exact best case from a prefix of the rows.
BOUNDED = frozenset({"top1", "argmax_agreement", "box_f1", "mask_iou"})
#: Eval rows are scored in about this many chunks (each a multiple of the model's batch).
CHUNKS = 8
#: A tensor whose simulated int8 relative error is this large is ruined by int8 on its own (an
#: outlier channel's range rounds the others to zero: about 1.0; an ordinary tensor: ~0.01).
#: PicoDet's worst are many at 0.45-0.65: bad together, none the one whose sparing mends it.
RUINOUS_ERROR = 0.9
#: A MinMax drop this many times the budget is not worth the histogram range estimators.
FAR_FACTOR = 5.0


def chunk_rows(total: int, batch: int | None) -> int:
    """Rows a validation chunk runs: about ``total / CHUNKS``, a multiple of a fixed batch."""
    step = batch or 1
    want = max(1, -(-total // CHUNKS))
    return min(total, -(-want // step) * step)


def _prefix(outputs: Mapping[str, Any], rows: int) -> dict[str, Any]:
    return {k: v[:rows] for k, v in outputs.items()}


def best_case(
    name: str,
    got: Mapping[str, Any],
    fp32: Mapping[str, Any],
    *,
    labels: Any | None,
    class_values: Any | None,
    decode: TaskDecode | None,
) -> float | None:
    """The highest value metric ``name`` can reach over all of fp32's rows, given a candidate's
    outputs ``got`` on the first rows only (the rest assumed to agree with fp32 perfectly);
    None when the metric has no such bound (cosine)."""
    import numpy as np

    total = min((len(v) for v in fp32.values()), default=0)
    done = min((len(v) for v in got.values()), default=0)
    if name not in BOUNDED or total == 0:
        return None
    rest = total - done
    if name == "top1":
        predicted = predicted_classes(dict(got), class_values)
        if predicted is None or labels is None:
            return rest / total
        want = np.asarray(labels)[:done]
        correct = int(np.sum(np.asarray(predicted).astype(str) == want.astype(str)))
        return (correct + rest) / total
    if name == "argmax_agreement":
        key = next((k for k, v in fp32.items() if v.dtype.kind == "f" and v.ndim == 2), None)
        if key is None or key not in got:
            return rest / total
        a = np.asarray(got[key]).reshape(done, -1).argmax(1)
        b = np.asarray(fp32[key][:done]).reshape(done, -1).argmax(1)
        return (int(np.sum(a == b)) + rest) / total
    if decode is None:
        return None
    try:
        if isinstance(decode.post, MaskPost):
            return (mask_iou(got, _prefix(fp32, done), decode.post) * done + rest) / total
        hits, n_got, n_want = box_counts(got, fp32, decode.post, decode.size)
        remaining = sum(len(detect(decode.post, fp32, r, decode.size)) for r in range(done, total))
    except (DecodeError, KeyError, IndexError):
        return rest / total  # the rows run do not decode: they score 0, as in task_score
    return f1_of(hits + remaining, n_got + remaining, n_want + remaining)


def far_beyond(drop: float, budget: float) -> str | None:
    """Why the other range estimators are not tried for a MinMax candidate whose ``drop`` (a
    lower bound when validation stopped early) is :data:`FAR_FACTOR` times the budget or more:
    clipping a few ranges (entropy, percentile) does not recover that much, and their
    histogram calibration was the costliest step left (PicoDet: 67 s and 112 s for 2 rows at
    load 12); the budget loop, which can spare an outlier tensor, still runs."""
    if drop < FAR_FACTOR * budget or budget <= 0:
        return None
    return (
        f"other range estimators not tried: drop ≥ {drop:.4f} is over {FAR_FACTOR:g}x "
        f"the budget {budget}"
    )


def loop_out_of_reach(
    start_drop: float,
    drops: Sequence[float],
    *,
    steps_left: int,
    budget: float,
    next_error: float,
) -> str | None:
    """Why the budget loop should stop after the steps whose drops are ``drops`` (None: go on).

    The first step always runs, and so does one sparing a tensor int8 ruins on its own
    (``next_error`` >= :data:`RUINOUS_ERROR`). Otherwise the best improvement per step so far,
    extrapolated over ``steps_left`` further steps, must be able to reach ``budget``."""
    if not drops or next_error >= RUINOUS_ERROR:
        return None
    best = min(drops)
    if best <= budget:
        return None
    gained = max(0.0, start_drop - best)
    pace = gained / len(drops)
    reach = best - pace * steps_left
    if reach <= budget:
        return None
    return (
        f"budget loop stopped after {len(drops)} step{'s' if len(drops) > 1 else ''}: "
        f"drop {start_drop:.4f} → {best:.4f} ({pace:.4f} a step); {steps_left} more "
        f"step{'s' if steps_left != 1 else ''} at that pace reach {max(reach, 0.0):.4f}, "
        f"not the budget {budget}"
    )


def timing_settled(ratios: Sequence[float], *, rank: int | None) -> str | None:
    """Why a candidate whose paired speed-ups over fp32 so far are ``ratios`` needs no more
    rounds (None: it does). ``rank``: the verdict's order statistic (the k-th smallest paired
    round must be above 1x for the candidate to pass; None when there is no such rule)."""
    if rank is None or rank < 1:
        return None
    slower = sum(1 for r in ratios if r <= 1.0)
    if slower < rank:
        return None
    return (
        f"{slower} of its first {len(ratios)} paired rounds at or below 1.00x: the "
        f"{_ordinal(rank)} smallest cannot be above 1x (timing stopped)"
    )


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"
