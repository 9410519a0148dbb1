"""How many inputs the capturer skips between two it considers, set from measurement.

The pipeline counts :attr:`agent.capture.capturer.Capturer.countdown` down on every inference
(one integer operation) and calls ``observe`` when it reaches zero: statistics and capture
decisions run on a subsample of the inputs, one in :attr:`Pacer.every`. ``every`` is set from
measurement, continuously: the median of ``observe``'s own recent cost over the median recent
inference time, divided by the share of inference it may take. That share is
``overhead_share`` (2 %) less what runs on *every* input — the countdown and the class count,
:data:`PER_INPUT_MS` — so the two together stay within the budget on any model: on a 400 µs
conv model the paced part gets nearly all of it (statistics on one input in ~40), on the 8 µs
digits model the per-input part alone is ~1.6 % and the paced part gets what is left (one input
in several thousand). A call of ``observe`` after a thousand inferences costs ~10× a call in a
tight loop (caches: 190–260 µs against 25 µs on digits), which is why the pacing measures the
calls where they happen. A floor keeps inputs considered at least every :data:`MAX_GAP_S`
(0.5 s) while inputs flow — at a camera's rate the share alone would sample a fast model once
in minutes; the floor costs at most two calls a second and does not bind at full throughput,
where the budget is measured. ``bench/capture_bench.py`` measures it all. Captured inputs and ones
measured while the writer holds the GIL are left out of the pacing (by the capturer).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

#: At most one input in this many is skipped between two considered ones.
MAX_EVERY = 20_000
#: What the inference thread does on every input for capture (the countdown) and input
#: statistics (the class count), in ms: 100–150 ns on the bench's x86 host
#: (``bench/capture_bench.py``: ``per_input_ns`` + ``classes_ns``). It scales with the host as
#: the Python around inference does, so as a share of a model's inference time it holds.
PER_INPUT_MS = 0.00015
#: At most this long between two considered inputs while inputs flow (statistics and capture
#: decisions at least twice a second): see :meth:`Pacer.measure`.
MAX_GAP_S = 0.5
#: The paced part always gets at least this share (or all of ``overhead_share`` if smaller),
#: also on a model so fast that the per-input part alone would take the whole budget.
MIN_SHARE = 0.002
#: Measurements of cost and inference time the stride is set from (their medians).
PACE_WINDOW = 15


class Pacer:
    def __init__(self) -> None:
        #: The stride: one input in this many is considered.
        self.every = 1
        self._costs: deque[float] = deque(maxlen=PACE_WINDOW)
        self._infers: deque[float] = deque(maxlen=PACE_WINDOW)
        self._measured = 0

    def reset(self) -> None:
        """A new model: its first measurement is cold again, the old ones do not apply."""
        self._measured = 0
        self._costs.clear()
        self._infers.clear()

    def measure(
        self, cost_ms: float, infer_ms: float, gap_s: float | None, *, overhead_share: float
    ) -> None:
        """Consider one input in N, N such that this and the per-input part together cost
        ``overhead_share`` of inference.

        Medians of the last :data:`PACE_WINDOW` measurements, not means: on a busy host one
        call now and then is preempted or waits for the GIL (5 ms against 70 µs), and a mean
        would park the stride at its maximum. The first measurement after a model change is
        left out (cold caches: 4.7 ms on the digits model)."""
        self._measured += 1
        if self._measured == 1:
            return
        self._costs.append(cost_ms)
        self._infers.append(infer_ms)
        cost, infer = _median(self._costs), _median(self._infers)
        budget = overhead_share
        share = max(min(MIN_SHARE, budget), budget - PER_INPUT_MS / max(infer, 1e-9))
        wanted = max(1, math.ceil(cost / max(share * infer, 1e-9)))
        if gap_s is not None and gap_s > 0:
            # At most MAX_GAP_S between two considered inputs: a fast model at a camera's rate
            # (8 µs at 20 fps) would otherwise get statistics once in minutes — the drift
            # demo's detection went from 2–9 s to 31 s. The inputs per second are the stride
            # that led here over the time it took; the floor costs at most 1 / MAX_GAP_S
            # calls a second (~0.5 ms/s on digits), and binds only where inputs are slow.
            rate = self.every / gap_s
            wanted = min(wanted, max(1, int(rate * MAX_GAP_S)))
        self.every = min(wanted, MAX_EVERY)


def _median(values: Sequence[float]) -> float:
    """statistics.median without the module: it and the fractions it imports are 0.2 MB of RSS
    for this one use (numpy's median, per inference, grew RSS by 1.6 MB over 200 requests:
    bench/memory_bench.py)."""
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
