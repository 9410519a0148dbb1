"""What the fleet sees: input statistics for telemetry and hard-example capture.

The pipeline counts :attr:`Capturer.countdown` down on every inference (one integer
operation) and calls :meth:`Capturer.observe` when it reaches zero: statistics and capture
decisions run on a subsample of the inputs, one in :attr:`Capturer.every`. ``every`` is set from
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
measured while the writer holds the GIL are left out of the pacing.

Decision order: ``random`` first, on its own coin (scaled by ``every`` so that ``random`` stays
the share of *all* inputs — up to ``1 / every``: a larger fraction is capped there, e.g. 1 in
~470 on the 20 µs digits model), then the samplers in :data:`agent.capture.samplers.SAMPLERS` order;
then the budgets (per hour, per day, bytes per day). An input refused by a budget is counted
(``capture.over_budget``) and nothing past a budget is written. Encoding and the fsynced write
of a capture run on a writer thread (``background=True``), never on the inference thread.
"""

from __future__ import annotations

import base64
import logging
import math
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from queue import Empty, Full, Queue
from typing import Any

import numpy as np

from agent.capture.budget import CaptureBudget
from agent.capture.config import CaptureConfig
from agent.capture.encode import encode_sample
from agent.capture.queue import QueueError, SampleQueue
from agent.capture.samplers import Observation, reason_for
from agent.capture.stats import InputStatsAccumulator, ReferenceBins, single_stats
from agent.errors import InputError
from agent.inputs import InputItem
from agent.state import Serving
from edgefleet import digest
from edgefleet.contract import (
    DEFAULT_OUTSIDE_REFERENCE,
    CapturePolicy,
    CaptureReason,
    ContractError,
    InputStats,
    ModelRef,
    SampleMeta,
)

log = logging.getLogger(__name__)

CountHook = Callable[[str], object]
MAX_OUTPUTS = 1000
#: At most one input in this many is skipped between two considered ones.
MAX_EVERY = 20_000
#: What the inference thread does on every input for capture (the countdown) and input
#: statistics (the class count), in ms: 100–150 ns on the bench's x86 host
#: (``bench/capture_bench.py``: ``per_input_ns`` + ``classes_ns``). It scales with the host as
#: the Python around inference does, so as a share of a model's inference time it holds.
PER_INPUT_MS = 0.00015
#: At most this long between two considered inputs while inputs flow (statistics and capture
#: decisions at least twice a second): see :meth:`Capturer._pace`.
MAX_GAP_S = 0.5
#: The paced part always gets at least this share (or all of ``overhead_share`` if smaller),
#: also on a model so fast that the per-input part alone would take the whole budget.
MIN_SHARE = 0.002
#: Measurements of cost and inference time the stride is set from (their medians).
PACE_WINDOW = 15
#: Captures waiting for the writer thread; more are dropped (counted as writer_busy).
PENDING = 8


class _Model:
    """What the capturer derives once per serving model (not per input)."""

    def __init__(self, serving: Serving) -> None:
        manifest = serving.model.manifest
        spec = serving.preprocess.spec
        found = ReferenceBins.of(manifest.reference_stats, layout=spec.layout if spec else None)
        self.bins = found if isinstance(found, ReferenceBins) else None
        self.no_bins = None if isinstance(found, ReferenceBins) else found
        self.labels = list(manifest.labels)
        self.ref = serving.model.ref
        self.serving = serving

    def key(self, index: int) -> str:
        return self.labels[index] if index < len(self.labels) else str(index)


class Capturer:
    def __init__(
        self,
        *,
        device_id: str,
        config: CaptureConfig,
        queue: SampleQueue | None,
        count: CountHook,
        budget: CaptureBudget | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
        background: bool = False,
    ) -> None:
        self.device_id = device_id
        self.config = config
        self.queue = queue
        self.budget = budget or CaptureBudget(clock=clock)
        self.inputs = InputStatsAccumulator()
        self._count = count
        self._rng = rng or random.Random()  # noqa: S311 (sampling, not security)
        self._clock = clock
        self._policy: CapturePolicy | None = None
        self._model: _Model | None = None
        self._lock = threading.Lock()
        #: Inputs left before the next one is considered (the pipeline counts it down), and
        #: the stride it is reset to; see :meth:`_pace`.
        self.countdown = 1
        self.every = 1
        #: When the last input was considered (perf_counter), for the MAX_GAP_S floor.
        self._last_at: float | None = None
        self._costs: deque[float] = deque(maxlen=PACE_WINDOW)
        self._infers: deque[float] = deque(maxlen=PACE_WINDOW)
        self._measured = 0
        #: The writer is encoding or storing a capture (set by :meth:`write`).
        self._writing = False
        self._pending: Queue[_Pending] | None = Queue(maxsize=PENDING) if background else None
        self.captured: dict[CaptureReason, int] = {}
        if queue is not None:
            self.budget.restore([(e.meta.captured_at.timestamp(), e.size) for e in queue.entries()])

    @property
    def policy(self) -> CapturePolicy | None:
        return self._policy

    def set_policy(self, server: CapturePolicy | None) -> None:
        """Apply the policy of a desired state, tightened by this device's ``[capture]``."""
        self._policy = self.config.effective(server) if self.queue is not None else None

    def _model_for(self, serving: Serving) -> _Model:
        model = self._model
        if model is None or model.serving is not serving:
            with self._lock:
                model = _Model(serving)
                self._model = model
                self._measured = 0
                self._costs.clear()
                self._infers.clear()
        return model

    def observe(
        self,
        item: InputItem,
        tensor: np.ndarray,
        serving: Serving,
        scores: np.ndarray | None,
        *,
        infer_ms: float | None = None,
        detections: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        """Statistics and the capture decision for one input (``scores``: its class scores,
        None for other tasks). ``infer_ms``: its inference time, which sets how many inputs
        the next decision skips (:attr:`countdown`). ``detections``: a detector's boxes for
        this input (the postprocessor's ``detections``), kept as the sample's ``outputs`` so
        the server's mAP has the predicted boxes."""
        model = self._model_for(serving)  # once per model: not part of the paced cost
        writing = self._writing  # the writer thread shares the GIL: not a fair measurement
        start = time.perf_counter()
        last, self._last_at = self._last_at, start
        policy = self._policy
        bins = model.bins
        values = bin_index = None
        score: float | None = None
        if bins is not None:
            values = bins.values(tensor)
            if values is None:
                self._count("input_stats_mismatch")
            elif not np.isfinite(values).all():
                values = None
                self._count("input_stats_non_finite")
            else:
                bin_index = bins.bin_index(values)
                score = bins.score(values, bin_index)
                threshold = DEFAULT_OUTSIDE_REFERENCE
                if policy is not None and policy.outside_reference is not None:
                    threshold = policy.outside_reference
                self.inputs.add(bins, values, bin_index, score, threshold=threshold)
        elif model.no_bins is not None:
            self._count(model.no_bins)
        job = None
        if policy is not None:
            job = self._decide(item, serving, model, policy, scores, score, values, bin_index)
            if job is not None and scores is None and detections:
                job = replace(job, outputs=detection_rows(detections))
        if infer_ms is not None and job is None and not (writing or self._writing):
            # Paced on the per-input cost: an input that is captured (its statistics, the
            # hand-off, and the write; bounded by the hourly budget, not the input rate) or
            # one measured while the writer holds the GIL is left out.
            gap = start - last if last is not None else None
            self._pace((time.perf_counter() - start) * 1000.0, infer_ms, gap)
        self.countdown = self.every
        if job is not None:
            self._hand_off(job)

    def _pace(self, cost_ms: float, infer_ms: float, gap_s: float | None = None) -> None:
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
        budget = self.config.overhead_share
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

    def _decide(
        self,
        item: InputItem,
        serving: Serving,
        model: _Model,
        policy: CapturePolicy,
        scores: np.ndarray | None,
        score: float | None,
        values: np.ndarray | None,
        bin_index: np.ndarray | None,
    ) -> _Pending | None:
        """The capture this input earns under ``policy`` (None: none or over budget)."""
        predicted: str | None = None
        confidence = margin = None
        if scores is not None and scores.size:
            index = int(scores.argmax())
            predicted = model.key(index)
            confidence = float(scores[index])
            if scores.size > 1:
                top2 = np.partition(scores.ravel(), -2)[-2:]
                margin = float(top2[1] - top2[0])
        reason: CaptureReason | None = None
        # One input in `every` is considered: the coin is scaled so that `random` stays the
        # share of *all* inputs captured at random.
        if policy.random > 0 and self._rng.random() < min(1.0, policy.random * self.every):
            reason = "random"
        else:
            seen = Observation(
                confidence=confidence, margin=margin, predicted=predicted, input_score=score
            )
            reason = reason_for(policy, seen)
        if reason is None:
            return None
        if self.budget.has_room(policy) is not None:
            self._count("over_budget")
            return None
        stats = None
        if model.bins is not None and values is not None and bin_index is not None:
            stats = single_stats(model.bins, values, bin_index)
        data = item.data.copy() if isinstance(item.data, np.ndarray) else item.data
        return _Pending(
            data=data,
            tensor=item.tensor,
            ref=serving.model.ref,
            policy=policy,
            reason=reason,
            at=self._clock(),
            confidence=confidence,
            margin=margin,
            predicted=predicted,
            outputs=[] if scores is None else scores.ravel()[:MAX_OUTPUTS].tolist(),
            score=score,
            stats=stats,
        )

    def shadow_disagreement(
        self,
        item: InputItem,
        serving: Serving,
        scores: np.ndarray | None,
        *,
        detections: Sequence[Mapping[str, Any]] | None = None,
    ) -> bool:
        """Capture an input the shadow model disagreed on (reason ``shadow_disagreement``),
        if the policy asks for it and its budgets have room; called from the shadow worker.
        The sample names the serving model and carries its outputs. True if handed over."""
        policy = self._policy
        if policy is None or not policy.shadow_disagreement:
            return False
        if self.budget.has_room(policy) is not None:
            self._count("over_budget")
            return False
        model = self._model_for(serving)
        predicted: str | None = None
        confidence = margin = None
        if scores is not None and scores.size:
            index = int(scores.argmax())
            predicted, confidence = model.key(index), float(scores[index])
            if scores.size > 1:
                top2 = np.partition(scores.ravel(), -2)[-2:]
                margin = float(top2[1] - top2[0])
        outputs = [] if scores is None else scores.ravel()[:MAX_OUTPUTS].tolist()
        if scores is None and detections:
            outputs = detection_rows(detections)
        data = item.data.copy() if isinstance(item.data, np.ndarray) else item.data
        self._hand_off(
            _Pending(
                data=data,
                tensor=item.tensor,
                ref=serving.model.ref,
                policy=policy,
                reason="shadow_disagreement",
                at=self._clock(),
                confidence=confidence,
                margin=margin,
                predicted=predicted,
                outputs=outputs,
                score=None,
                stats=None,
            )
        )
        return True

    def _hand_off(self, job: _Pending) -> None:
        if self._pending is None:
            self.write(job)
            return
        try:
            self._pending.put_nowait(job)
        except Full:
            self._count("writer_busy")

    # -- the writer (its own thread in the agent: encoding and fsync stay off inference) ------
    def run_writer(self, stop: threading.Event) -> None:
        assert self._pending is not None, "Capturer(background=True) has the writer thread"
        while not stop.is_set():
            try:
                job = self._pending.get(timeout=0.2)
            except Empty:
                continue
            self.write(job)

    def write(self, job: _Pending) -> None:
        """Encode one capture, charge it to the budget, and queue it durably."""
        self._writing = True
        try:
            self._write(job)
        finally:
            self._writing = False

    def _write(self, job: _Pending) -> None:
        assert self.queue is not None  # no policy without a queue (set_policy)
        policy = job.policy
        try:
            content, content_type = encode_sample(
                job.data,
                tensor=job.tensor,
                max_side=policy.max_side,
                jpeg_quality=policy.jpeg_quality,
            )
        except InputError:
            self._count("encode_failed")
            return
        if self.budget.admit(policy, len(content)) is not None:
            self._count("over_budget")
            return
        try:
            meta = SampleMeta(
                sample_id=base64.urlsafe_b64encode(os.urandom(12)).decode("ascii"),
                device_id=self.device_id,
                model=job.ref,
                captured_at=datetime.fromtimestamp(job.at, UTC),
                reason=job.reason,
                confidence=_share(job.confidence),
                margin=_share(job.margin),
                predicted=job.predicted,
                outputs=job.outputs,
                input_score=job.score,
                input_stats=job.stats,
                content_type=content_type,
                sha256=digest.sha256(content).hexdigest(),
                size=len(content),
            )
            self.queue.put(meta, content)
        except (ContractError, QueueError) as err:
            log.warning("capture failed", extra={"err": str(err)[:300]})
            self._count("failed")
            return
        self.captured[job.reason] = self.captured.get(job.reason, 0) + 1
        self._count(f"captured_{job.reason}")


def detection_rows(detections: Sequence[Mapping[str, Any]]) -> list[float]:
    """Boxes as the flat rows the server reads from ``SampleMeta.outputs``: six numbers each,
    ``x1, y1, x2, y2, score, class_index`` (source-image pixels, as the agent reports them),
    at most ``MAX_OUTPUTS // 6`` boxes (the contract's bound on ``outputs``)."""
    rows: list[float] = []
    for d in detections[: MAX_OUTPUTS // 6]:
        x1, y1, x2, y2 = (float(v) for v in d["box"])
        rows.extend((x1, y1, x2, y2, float(d["score"]), float(d["class"])))
    return rows


@dataclass(frozen=True, slots=True)
class _Pending:
    """A capture decided on the inference thread, waiting for the writer."""

    data: bytes | np.ndarray
    tensor: bool
    ref: ModelRef
    policy: CapturePolicy
    reason: CaptureReason
    at: float
    confidence: float | None
    margin: float | None
    predicted: str | None
    outputs: list[float]
    score: float | None
    stats: InputStats | None


def _share(value: float | None) -> float | None:
    return None if value is None else min(max(value, 0.0), 1.0)


def _median(values: Sequence[float]) -> float:
    """statistics.median without the module: it and the fractions it imports are 0.2 MB of RSS
    for this one use (numpy's median, per inference, grew RSS by 1.6 MB over 200 requests:
    bench/memory_bench.py)."""
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
