"""The capture writer: encodes a capture the capturer decided on, charges it to the budget and
queues it durably. In the agent it runs on its own thread (``background=True``), so encoding
and fsync never run on the inference thread; a capture that finds :data:`PENDING` others
waiting is dropped (counted as ``writer_busy``)."""

from __future__ import annotations

import base64
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from queue import Empty, Full, Queue

import numpy as np

from agent.capture.budget import CaptureBudget
from agent.capture.encode import encode_sample
from agent.capture.queue import QueueError, SampleQueue
from agent.errors import InputError
from edgefleet import digest
from edgefleet.contract import (
    CapturePolicy,
    CaptureReason,
    ContractError,
    InputStats,
    ModelRef,
    SampleMeta,
)

log = logging.getLogger(__name__)

CountHook = Callable[[str], object]
#: Captures waiting for the writer thread; more are dropped (counted as writer_busy).
PENDING = 8


@dataclass(frozen=True, slots=True)
class PendingCapture:
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


class CaptureWriter:
    def __init__(
        self,
        *,
        device_id: str,
        queue: SampleQueue | None,
        budget: CaptureBudget,
        count: CountHook,
        background: bool,
    ) -> None:
        self.device_id = device_id
        self.queue = queue
        self.budget = budget
        self._count = count
        #: Encoding or storing a capture now (the capturer leaves such inputs out of pacing).
        self.writing = False
        self._pending: Queue[PendingCapture] | None = Queue(maxsize=PENDING) if background else None
        self.captured: dict[CaptureReason, int] = {}

    def hand_off(self, job: PendingCapture) -> None:
        """To the writer thread (or written now without one)."""
        if self._pending is None:
            self.write(job)
            return
        try:
            self._pending.put_nowait(job)
        except Full:
            self._count("writer_busy")

    def run(self, stop: threading.Event) -> None:
        """The writer thread (``capture`` in the agent)."""
        assert self._pending is not None, "Capturer(background=True) has the writer thread"
        while not stop.is_set():
            try:
                job = self._pending.get(timeout=0.2)
            except Empty:
                continue
            self.write(job)

    def write(self, job: PendingCapture) -> None:
        """Encode one capture, charge it to the budget, and queue it durably."""
        self.writing = True
        try:
            self._write(job)
        finally:
            self.writing = False

    def _write(self, job: PendingCapture) -> None:
        assert self.queue is not None  # no policy without a queue (Capturer.set_policy)
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


def _share(value: float | None) -> float | None:
    return None if value is None else min(max(value, 0.0), 1.0)
