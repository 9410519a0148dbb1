"""What the fleet sees: input statistics for telemetry and hard-example capture, per inference.

:meth:`Capturer.observe` runs in the inference thread after each input. Its fast path (no
statistics due, no capture policy) is a counter and two attribute reads; statistics cost one
subsampled ``searchsorted`` (:mod:`agent.capture.stats`); capture decisions are scalar
comparisons, and only a captured input pays for encoding and the fsynced write — at most the
policy's ``max_per_hour`` times an hour. Measured overhead: ``bench/capture_bench.py``.

Decision order: ``random`` first, on its own coin (so the random samples are an unbiased
sample of all inputs), then the samplers in :data:`agent.capture.samplers.SAMPLERS` order;
then the budgets (per hour, per day, bytes per day). Every input refused by a budget is
counted (``capture.over_budget``) and nothing past a budget is written.
"""

from __future__ import annotations

import hashlib
import logging
import random
import secrets
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

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
from edgefleet.contract import (
    DEFAULT_OUTSIDE_REFERENCE,
    CapturePolicy,
    CaptureReason,
    ContractError,
    InputStats,
    SampleMeta,
)

log = logging.getLogger(__name__)

CountHook = Callable[[str], object]
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
        self._seen = 0
        self._lock = threading.Lock()
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
        return model

    def observe(
        self,
        item: InputItem,
        tensor: np.ndarray,
        serving: Serving,
        scores: np.ndarray | None,
    ) -> str | None:
        """Count one inference (``scores``: this input's class scores, None for other tasks);
        capture it if the policy says so. Returns the predicted class key (for class counts)."""
        model = self._model_for(serving)
        predicted: str | None = None
        confidence = margin = None
        index = -1
        if scores is not None and scores.size:
            index = int(scores.argmax())
            predicted = model.key(index)
            confidence = float(scores[index])
        self._seen += 1
        policy = self._policy
        stats_due = self._seen % self.config.stats_every == 0
        if not stats_due and policy is None:
            return predicted
        bins = model.bins
        values = bin_index = None
        score: float | None = None
        if bins is not None and (stats_due or (policy and policy.outside_reference is not None)):
            values = bins.values(tensor)
            if values is None:
                self._count("input_stats_mismatch")
            elif not np.isfinite(values).all():
                values = None
                self._count("input_stats_non_finite")
            else:
                bin_index = bins.bin_index(values)
                score = bins.score(values, bin_index)
                if stats_due:
                    threshold = DEFAULT_OUTSIDE_REFERENCE
                    if policy is not None and policy.outside_reference is not None:
                        threshold = policy.outside_reference
                    self.inputs.add(bins, values, bin_index, score, threshold=threshold)
        elif stats_due and model.no_bins is not None:
            self._count(model.no_bins)
        if policy is None:
            return predicted
        reason: CaptureReason | None = None
        if policy.random > 0 and self._rng.random() < policy.random:
            reason = "random"
        else:
            if policy.margin is not None and scores is not None and scores.size > 1:
                top2 = np.partition(scores.ravel(), -2)[-2:]
                margin = float(top2[1] - top2[0])
            seen = Observation(
                confidence=confidence, margin=margin, predicted=predicted, input_score=score
            )
            reason = reason_for(policy, seen)
        if reason is None:
            return predicted
        if margin is None and scores is not None and scores.size > 1:
            top2 = np.partition(scores.ravel(), -2)[-2:]
            margin = float(top2[1] - top2[0])
        one = None
        if bins is not None and values is not None and bin_index is not None:
            one = single_stats(bins, values, bin_index)
        self._capture(
            item,
            serving,
            policy,
            reason,
            confidence=confidence,
            margin=margin,
            predicted=predicted,
            outputs=scores,
            score=score,
            stats=one,
        )
        return predicted

    def _capture(
        self,
        item: InputItem,
        serving: Serving,
        policy: CapturePolicy,
        reason: CaptureReason,
        *,
        confidence: float | None,
        margin: float | None,
        predicted: str | None,
        outputs: np.ndarray | None,
        score: float | None,
        stats: InputStats | None,
    ) -> None:
        assert self.queue is not None  # no policy without a queue (set_policy)
        if self.budget.has_room(policy) is not None:
            self._count("over_budget")
            return
        try:
            content, content_type = encode_sample(
                item.data,
                tensor=item.tensor,
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
                sample_id=secrets.token_urlsafe(12),
                device_id=self.device_id,
                model=serving.model.ref,
                captured_at=datetime.fromtimestamp(self._clock(), UTC),
                reason=reason,
                confidence=_share(confidence),
                margin=_share(margin),
                predicted=predicted,
                outputs=[] if outputs is None else outputs.ravel()[:MAX_OUTPUTS].tolist(),
                input_score=score,
                input_stats=stats,
                content_type=content_type,
                sha256=hashlib.sha256(content).hexdigest(),
                size=len(content),
            )
            self.queue.put(meta, content)
        except (ContractError, QueueError) as err:
            log.warning("capture failed", extra={"err": str(err)[:300]})
            self._count("failed")
            return
        self.captured[reason] = self.captured.get(reason, 0) + 1
        self._count(f"captured_{reason}")


def _share(value: float | None) -> float | None:
    return None if value is None else min(max(value, 0.0), 1.0)
