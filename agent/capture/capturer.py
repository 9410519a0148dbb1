"""What the fleet sees: input statistics for telemetry and hard-example capture.

The pipeline counts :attr:`Capturer.countdown` down on every inference (one integer
operation) and calls :meth:`Capturer.observe` when it reaches zero: statistics and capture
decisions run on a subsample of the inputs, one in :attr:`Capturer.every`, a stride set from
measurement so that both stay within ``overhead_share`` of inference (:mod:`.pacing`).

Decision order: ``random`` first, on its own coin (scaled by ``every`` so that ``random`` stays
the share of *all* inputs — up to ``1 / every``: a larger fraction is capped there, e.g. 1 in
~470 on the 20 µs digits model), then the samplers in :data:`agent.capture.samplers.SAMPLERS` order;
then the budgets (per hour, per day, bytes per day). An input refused by a budget is counted
(``capture.over_budget``) and nothing past a budget is written. Encoding and the fsynced write
of a capture run on a writer thread (``background=True``), never on the inference thread
(:mod:`.writer`).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from agent.capture.budget import CaptureBudget
from agent.capture.config import CaptureConfig
from agent.capture.pacing import Pacer
from agent.capture.queue import SampleQueue
from agent.capture.samplers import Observation, reason_for
from agent.capture.stats import InputStatsAccumulator, ReferenceBins, single_stats
from agent.capture.writer import CaptureWriter, CountHook, PendingCapture
from agent.inputs import InputItem
from agent.state import Serving
from edgefleet.contract import DEFAULT_OUTSIDE_REFERENCE, CapturePolicy, CaptureReason

MAX_OUTPUTS = 1000


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
        #: Inputs left before the next one is considered (the pipeline counts it down); it is
        #: reset to :attr:`every`.
        self.countdown = 1
        self.pacer = Pacer()
        #: When the last input was considered (perf_counter), for the MAX_GAP_S floor.
        self._last_at: float | None = None
        self.writer = CaptureWriter(
            device_id=device_id,
            queue=queue,
            budget=self.budget,
            count=count,
            background=background,
        )
        if queue is not None:
            self.budget.restore([(e.meta.captured_at.timestamp(), e.size) for e in queue.entries()])

    @property
    def every(self) -> int:
        """One input in this many is considered (:mod:`.pacing`)."""
        return self.pacer.every

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
                self.pacer.reset()
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
        writing = self.writer.writing  # the writer thread shares the GIL: not a fair measurement
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
        if infer_ms is not None and job is None and not (writing or self.writer.writing):
            # Paced on the per-input cost: an input that is captured (its statistics, the
            # hand-off, and the write; bounded by the hourly budget, not the input rate) or
            # one measured while the writer holds the GIL is left out.
            gap = start - last if last is not None else None
            self._pace((time.perf_counter() - start) * 1000.0, infer_ms, gap)
        self.countdown = self.every
        if job is not None:
            self.writer.hand_off(job)

    def _pace(self, cost_ms: float, infer_ms: float, gap_s: float | None = None) -> None:
        """One measurement of ``observe``: the stride follows it (:meth:`Pacer.measure`)."""
        self.pacer.measure(cost_ms, infer_ms, gap_s, overhead_share=self.config.overhead_share)

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
    ) -> PendingCapture | None:
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
        return PendingCapture(
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
        self.writer.hand_off(
            PendingCapture(
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


def detection_rows(detections: Sequence[Mapping[str, Any]]) -> list[float]:
    """Boxes as the flat rows the server reads from ``SampleMeta.outputs``: six numbers each,
    ``x1, y1, x2, y2, score, class_index`` (source-image pixels, as the agent reports them),
    at most ``MAX_OUTPUTS // 6`` boxes (the contract's bound on ``outputs``)."""
    rows: list[float] = []
    for d in detections[: MAX_OUTPUTS // 6]:
        x1, y1, x2, y2 = (float(v) for v in d["box"])
        rows.extend((x1, y1, x2, y2, float(d["score"]), float(d["class"])))
    return rows
