"""Capture → preprocess → bounded queue → inference → postprocess → sink / reply.

Two threads, so capture and preprocessing of the next input overlap inference of the current
one (OpenCV and the runtimes release the GIL). The queue is bounded: a live source (camera,
stream) drops the oldest queued input when it is full; files, batch and HTTP wait for room.

Batching: with ``batch_size`` > 1, the inference thread takes up to that many queued jobs from a
non-live source (video, batch; no caller waiting) that fit together (same model, one row each,
same shape) and runs them as one batch when the model's batch dimension is dynamic. It never
waits for a batch to fill: it takes what is queued, so a slow source still gets batch 1 and a
fast one fills batches while the previous run is going (the bounded queue is the back-pressure).
A batch that fails is run again item by item, so every input gets what batch 1 would give it.

Shadow: with a :class:`~agent.shadow.ShadowRunner`, a sampled input run alone (not in a batch)
is also handed to the shadow worker after it is served; see :mod:`agent.shadow.runner`.

Hot swap: each queued job carries the :class:`Serving` it was preprocessed for. The inference
thread takes :attr:`ModelSlot.current` once per job; if the model was swapped in between and
preprocesses differently, the job is preprocessed again for the new model from its raw input,
so no input in flight fails or is dropped because of a swap.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from agent.capture import Capturer
from agent.errors import AgentError, InferenceError, InputError, ModelUnavailableError
from agent.inputs import InputItem, InputSource
from agent.postprocess import Geometry
from agent.probation import HealthMonitor
from agent.shadow import Pair, ShadowRunner
from agent.sinks import ResultSink
from agent.state import ModelSlot, Serving
from agent.telemetry import TelemetryCollector

log = logging.getLogger(__name__)

ErrorSink = Callable[[str, str], None]


@dataclass(frozen=True)
class Job:
    item: InputItem
    serving: Serving
    tensor: np.ndarray
    geometry: Geometry
    #: May run in one batch with other jobs (a non-live source, no caller waiting).
    batchable: bool = False


def prepare(item: InputItem, serving: Serving, *, batchable: bool = False) -> Job:
    """Preprocess one item for one model; InputError if it cannot become its input."""
    pre = serving.preprocess
    tensor, size = pre.prepare(item.data, tensor=item.tensor)
    resize = pre.spec.resize if pre.spec is not None else None
    return Job(item, serving, tensor, Geometry(source=size, resize=resize), batchable)


def _same_input(a: Serving, b: Serving) -> bool:
    return a is b or (
        a.preprocess.spec == b.preprocess.spec and a.preprocess.tensor == b.preprocess.tensor
    )


class Pipeline:
    def __init__(
        self,
        *,
        slot: ModelSlot,
        collector: TelemetryCollector,
        on_error: ErrorSink,
        sink: ResultSink | None = None,
        queue_size: int = 8,
        monitor: HealthMonitor | None = None,
        batch_size: int = 1,
        capturer: Capturer | None = None,
        shadow: ShadowRunner | None = None,
    ) -> None:
        self.slot = slot
        self.capturer = capturer
        self.shadow = shadow
        self.monitor = monitor
        self.collector = collector
        self.sink = sink
        self._on_error = on_error
        self.queue: queue.Queue[Job] = queue.Queue(maxsize=queue_size)
        self.batch_size = batch_size
        #: Model runs so far (a batch of N is one run).
        self.runs = 0
        #: Set when the source has no more items (a video ended, a batch is done).
        self.source_done = threading.Event()
        self._handled = 0
        self._handled_lock = threading.Lock()

    @property
    def handled(self) -> int:
        """Items fully handled (answered, written or counted as failed)."""
        return self._handled

    def _done(self) -> None:
        with self._handled_lock:  # both threads finish items
            self._handled += 1

    # -- capture thread ------------------------------------------------------------------------
    def feed(self, source: InputSource, stop: threading.Event) -> None:
        """Read ``source`` until it ends or ``stop`` is set; preprocess; queue."""
        try:
            for item in source.items(stop):
                serving = self._wait_for_model(item, stop)
                if serving is None:
                    if stop.is_set():
                        return
                    continue
                try:
                    job = prepare(item, serving, batchable=not source.live and item.reply is None)
                except InputError as err:
                    self._failed(item, err, err.kind)
                    continue
                if source.live:
                    self._put_dropping_oldest(job)
                elif not self._put_waiting(job, stop):
                    return
        finally:
            self.source_done.set()

    def _wait_for_model(self, item: InputItem, stop: threading.Event) -> Serving | None:
        serving = self.slot.current
        if serving is not None:
            return serving
        if item.reply is not None:  # a caller waits: answer now rather than hang
            self._failed(item, ModelUnavailableError("no model is serving"), "no_model")
            return None
        while not stop.is_set():
            if self.slot.ready.wait(0.2) and (serving := self.slot.current) is not None:
                return serving
        return None

    def _put_dropping_oldest(self, job: Job) -> None:
        while True:
            try:
                self.queue.put_nowait(job)
                return
            except queue.Full:
                try:
                    old = self.queue.get_nowait()  # fresh frames matter more than old ones
                except queue.Empty:
                    continue
                self.collector.record_dropped()
                if old.item.reply is not None:
                    old.item.reply(None, ModelUnavailableError("dropped: overtaken by newer input"))

    def _put_waiting(self, job: Job, stop: threading.Event) -> bool:
        while not stop.is_set():
            try:
                self.queue.put(job, timeout=0.2)
                return True
            except queue.Full:
                continue
        if job.item.reply is not None:
            job.item.reply(None, ModelUnavailableError("the agent is stopping"))
        return False

    # -- inference thread ----------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Run queued jobs until ``stop``; jobs left then are answered as not served."""
        carry: Job | None = None
        while not stop.is_set():
            if carry is not None:
                job, carry = carry, None
            else:
                try:
                    job = self.queue.get(timeout=0.2)
                except queue.Empty:
                    continue
            rows = self._batch_rows(job)
            if rows <= 1:
                self.process(job)
                continue
            jobs = [job]
            while len(jobs) < rows:
                try:
                    more = self.queue.get_nowait()
                except queue.Empty:
                    break
                if not _fits(job, more):
                    carry = more  # next round starts with it
                    break
                jobs.append(more)
            if len(jobs) == 1:
                self.process(job)
            else:
                self.process_batch(jobs)
        leftover = [carry] if carry is not None else []
        while True:
            try:
                leftover.append(self.queue.get_nowait())
            except queue.Empty:
                break
        for job in leftover:
            self._failed(job.item, ModelUnavailableError("the agent is stopping"), None)

    def _batch_rows(self, job: Job) -> int:
        """How many jobs may run together with ``job`` (1: alone)."""
        if self.batch_size <= 1 or not job.batchable or job.tensor.shape[:1] != (1,):
            return 1
        first = job.serving.preprocess.tensor.shape[0]
        return self.batch_size if isinstance(first, str) else 1  # a dynamic batch dimension

    def process_batch(self, jobs: list[Job]) -> None:
        """Run jobs of one row each as one batch; per item the same as :meth:`process`."""
        serving = self.slot.current
        if serving is None or any(j.serving is not serving for j in jobs):
            for job in jobs:  # no model, or swapped: each job on its own path
                self.process(job)
            return
        n = len(jobs)
        try:
            tensor = np.concatenate([j.tensor for j in jobs])
            start = time.perf_counter()
            outputs = serving.model.infer({serving.preprocess.tensor.name: tensor})
            elapsed_ms = (time.perf_counter() - start) * 1000.0
            self.runs += 1
            finite = _finite_rows(outputs, n)
            results = serving.results(outputs, [j.geometry for j in jobs])
        except Exception:  # run each alone: a failure is then reported for its input only
            log.debug("batch failed; running its inputs one by one", extra={"size": n})
            for job in jobs:
                self.process(job)
            return
        scores = serving.model.probabilities(outputs) if serving.model.scores_output else None
        per_item_ms = elapsed_ms / n  # telemetry latency is per input (amortised)
        capturer = self.capturer
        for i, (job, result) in enumerate(zip(jobs, results, strict=True)):
            index = int(scores[i].argmax()) if scores is not None else None
            confidence = (
                float(scores[i, index]) if scores is not None and index is not None else None
            )
            self.collector.record_inference(per_item_ms, confidence, index)
            if capturer is not None:
                capturer.countdown -= 1
                if capturer.countdown <= 0:
                    self._observe(job.item, job.tensor, serving, scores, i, per_item_ms)
            if self.monitor is not None:
                self.monitor.record(
                    serving.model.ref,
                    latency_ms=per_item_ms,
                    finite=finite[i],
                    confidence=confidence,
                )
            result["source"] = job.item.source
            if self.sink is not None:
                self.sink.write(result)
            self._done()

    def process(self, job: Job) -> None:
        item = job.item
        serving = self.slot.current  # one reference per job: a swap never splits a job
        if serving is None:
            self._failed(item, ModelUnavailableError("no model is serving"), "no_model")
            return
        try:
            if not _same_input(serving, job.serving):
                job = prepare(item, serving)  # swapped to a model with other preprocessing
            name = serving.preprocess.tensor.name
            # Decided before the run, so the serving CPU time is measured only when paired.
            paired = self.shadow is not None and self.shadow.wants()
            cpu = time.thread_time() if paired else 0.0
            start = time.perf_counter()
            outputs = serving.model.infer({name: job.tensor})
            elapsed_ms = (time.perf_counter() - start) * 1000.0
            if paired:
                cpu = (time.thread_time() - cpu) * 1000.0
            self.runs += 1
            finite = _finite(outputs)
            rows = job.tensor.shape[0] if job.tensor.ndim else 1
            results = serving.results(outputs, [job.geometry] * rows)
        except InputError as err:
            self._failed(item, err, err.kind)
            return
        except InferenceError as err:
            self._model_failed(serving)
            self._failed(item, err, "inference")
            return
        except Exception as err:  # a bug must not end the worker: count it, log it, go on
            log.exception("inference crashed", extra={"source": item.source})
            self._model_failed(serving)
            self._failed(item, AgentError(f"internal error: {type(err).__name__}"), "internal")
            return
        scores = serving.model.probabilities(outputs) if serving.model.scores_output else None
        index = int(scores[0].argmax()) if scores is not None and scores.size else None
        confidence = float(scores[0, index]) if scores is not None and index is not None else None
        self.collector.record_inference(elapsed_ms, confidence, index)
        if paired and rows == 1 and results:
            assert self.shadow is not None
            top1 = (index, confidence) if index is not None and confidence is not None else None
            self.shadow.offer(
                Pair(
                    item,
                    serving,
                    job.tensor,
                    job.geometry,
                    outputs,
                    results[0],
                    elapsed_ms,
                    cpu,
                    top1,
                )
            )
        capturer = self.capturer
        if capturer is not None:
            capturer.countdown -= 1
            if capturer.countdown <= 0:  # a subsample: see Capturer.countdown
                for row in range(max(rows, 1)):
                    tensor = job.tensor[row : row + 1] if rows > 1 else job.tensor
                    found = results[row].get("detections") if row < len(results) else None
                    self._observe(item, tensor, serving, scores, row, elapsed_ms, found)
        if self.monitor is not None:
            self.monitor.record(
                serving.model.ref, latency_ms=elapsed_ms, finite=finite, confidence=confidence
            )
        for result in results:
            result["source"] = item.source
            if self.sink is not None:
                self.sink.write(result)
        if item.reply is not None:
            item.reply(results, None)
        self._done()

    def _observe(
        self,
        item: InputItem,
        tensor: np.ndarray,
        serving: Serving,
        scores: np.ndarray | None,
        row: int,
        infer_ms: float,
        detections: list[dict[str, Any]] | None = None,
    ) -> None:
        """Input statistics and capture of one input (see agent.capture)."""
        assert self.capturer is not None
        row_scores = scores[row] if scores is not None and row < scores.shape[0] else None
        try:
            self.capturer.observe(
                item, tensor, serving, row_scores, infer_ms=infer_ms, detections=detections
            )
        except Exception:  # capture must never cost an inference: count it, log it, go on
            log.exception("capture crashed", extra={"source": item.source})
            self.collector.record_error("capture_internal")

    def _model_failed(self, serving: Serving) -> None:
        if self.monitor is not None:
            self.monitor.record_error(serving.model.ref)

    def _failed(self, item: InputItem, err: Exception, kind: str | None) -> None:
        if kind is not None:
            self._on_error(kind, f"{item.source}: {err}")
        if self.sink is not None:
            self.sink.write({"source": item.source, "error": str(err), "kind": kind or "stopped"})
        if item.reply is not None:
            item.reply(None, err)
        self._done()


def _fits(first: Job, other: Job) -> bool:
    """Can ``other`` run in one batch with ``first``?"""
    return (
        other.batchable
        and other.serving is first.serving
        and other.tensor.shape == first.tensor.shape
        and other.tensor.dtype == first.tensor.dtype
    )


def _finite_rows(outputs: dict[str, np.ndarray], n: int) -> list[bool]:
    """Per batch row: no NaN or Inf in its part of any floating-point output."""
    ok = np.ones(n, dtype=bool)
    for value in outputs.values():
        if not np.issubdtype(value.dtype, np.floating):
            continue
        if value.ndim and value.shape[0] == n:
            ok &= np.isfinite(value.reshape(n, -1)).all(axis=1)
        elif not np.isfinite(value).all():
            ok[:] = False
    return [bool(v) for v in ok]


def _finite(outputs: dict[str, np.ndarray]) -> bool:
    """No NaN or Inf in any floating-point output (checked before postprocessing)."""
    return all(
        bool(np.isfinite(v).all()) for v in outputs.values() if np.issubdtype(v.dtype, np.floating)
    )
