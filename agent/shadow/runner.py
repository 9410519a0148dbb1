"""The shadow worker: a second model run beside the serving one, on the same inputs, on its
own thread, never in the way of serving.

The inference thread asks :meth:`ShadowRunner.wants` before it runs the serving model (one
attribute read when no shadow is loaded; a coin at ``sample_rate`` and two checks when one is)
and, for an input it wants, measures the serving run's thread CPU time and hands the input, the
serving outputs and its result over with :meth:`ShadowRunner.offer`. Nothing on that path
waits:

* the hand-over queue holds :data:`QUEUE_SIZE` inputs; a sampled input that finds it full is
  skipped and counted (the shadow is behind); the worker polls it every :data:`POLL_S` rather
  than being woken per input (see :meth:`ShadowRunner.run`);
* the CPU budget is a token bucket of thread CPU time (``time.thread_time``, which counts only
  what the shadow thread burned, not the time it waited for a core on a busy device): it fills
  at ``cpu_budget`` seconds per second up to :data:`BURST_S` seconds' worth, each shadow run
  takes its CPU time out, and a sampled input that finds it empty is skipped and counted.

The worker runs the shadow model, compares the two answers with the task's measure
(:mod:`agent.shadow.measures`), tallies the interval for :meth:`ShadowRunner.flush` (a
``ShadowReport`` in the telemetry) and hands disagreements to the capturer (reason
``shadow_disagreement``, within the capture policy's budgets). The shadow's outputs go to no
sink. Any failure of the shadow is counted in the report's ``errors`` and the worker goes on.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from agent.capture import Capturer
from agent.errors import AgentError, InputError
from agent.inputs import InputItem
from agent.postprocess import Geometry
from agent.shadow.measures import MEASURES, Answer, Tally, Top1, top1
from agent.state import Serving
from agent.telemetry import LatencyHistogram
from edgefleet.contract import ContractError, ModelRef, ShadowReport

log = logging.getLogger(__name__)

#: Inputs waiting for the shadow worker; a sampled input finding it full is skipped.
QUEUE_SIZE = 2
#: The CPU budget's bucket holds at most this many seconds' worth of budget.
BURST_S = 1.0
#: The worker runs what waits this often while a shadow is loaded (see :meth:`ShadowRunner.run`)
#: and looks again this often while none is.
POLL_S = 0.01
IDLE_S = 0.2
#: The worker thread's nice value: where serving and shadow want the same core, the kernel
#: gives it to serving (a nice-19 thread weighs 15 against a nice-0 thread's 1,024). The price:
#: on a device whose cores serving keeps busy, the shadow's wall time includes waiting behind
#: serving, which is why the shadow's latency is taken as its CPU time (:meth:`run_one`).
NICE = 19
#: The report's error kinds are bounded by the contract; more are counted under this one.
MAX_ERROR_KINDS = 31


class Pair(NamedTuple):
    """One served input, handed to the shadow worker with what the serving model made of it.
    A named tuple: built on the inference thread for every paired input (a frozen dataclass's
    ``__init__`` costs several times as much)."""

    item: InputItem
    serving: Serving
    tensor: np.ndarray
    geometry: Geometry
    outputs: dict[str, np.ndarray]
    result: dict[str, Any]
    serving_ms: float
    serving_cpu_ms: float
    #: The serving model's top-1 (class index, confidence) as the inference thread computed it
    #: for its own telemetry (classifiers; None otherwise): the worker does not compute it again.
    top1: tuple[int, float] | None = None


@dataclass
class _Batch:
    """What the worker found in one poll's pairs, put into the interval under one lock."""

    figures: list[tuple[bool, dict[str, float], float, float, float, float]] = field(
        default_factory=list
    )
    errors: dict[str, int] = field(default_factory=dict)
    disagreed: list[Pair] = field(default_factory=list)

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


@dataclass(frozen=True, slots=True)
class _Loaded:
    serving: Serving
    sample_rate: float
    cpu_budget: float


class ShadowRunner:
    def __init__(
        self,
        *,
        capturer: Capturer | None = None,
        queue_size: int = QUEUE_SIZE,
        rng: random.Random | None = None,
        clock: Any = time.monotonic,
        nice: int = NICE,
    ) -> None:
        self.capturer = capturer
        self.nice = nice
        # A SimpleQueue (C, ~0.3 µs a put) bounded by two counters, each written by one thread
        # only (sent: the inference thread; taken: the worker), so no lock is shared with the
        # serving path; queue.Queue's put takes a lock and a condition (~2 µs on digits).
        self._queue: queue.SimpleQueue[Pair] = queue.SimpleQueue()
        self._size = queue_size
        self._sent = 0
        self._taken = 0
        self._rng = rng or random.Random()  # noqa: S311 (sampling, not security)
        self._clock = clock
        self._lock = threading.Lock()
        self._loaded: _Loaded | None = None
        #: The shadow the report is about: the desired one, loaded or not (a failed load is
        #: reported against it); kept until a flush after the shadow is removed.
        self._ref: ModelRef | None = None
        # The CPU budget as two single-writer sums: accrued (the inference thread) and spent
        # (the worker); the credit is their difference, so wants() takes no lock.
        self._accrued = 0.0
        self._spent = 0.0
        self._credit_at = clock()
        self._new_interval()

    def _new_interval(self) -> None:
        self._tally = Tally()
        self._skipped = 0
        self._errors: dict[str, int] = {}
        self._serving_ms = LatencyHistogram()
        self._shadow_ms = LatencyHistogram()
        self._serving_cpu = 0.0
        self._shadow_cpu = 0.0

    # -- the updater thread ------------------------------------------------------------------
    @property
    def current(self) -> Serving | None:
        loaded = self._loaded
        return loaded.serving if loaded is not None else None

    @property
    def ref(self) -> ModelRef | None:
        return self._ref

    def load(self, serving: Serving, *, sample_rate: float, cpu_budget: float) -> None:
        """Run ``serving`` as the shadow from now on (replacing any other)."""
        with self._lock:
            if self._ref != serving.model.ref:
                self._new_interval()  # figures of another shadow are not this one's
            self._ref = serving.model.ref
            self._accrued = self._spent + cpu_budget * BURST_S
            self._credit_at = self._clock()
            self._loaded = _Loaded(serving, sample_rate, cpu_budget)

    def set_limits(self, *, sample_rate: float, cpu_budget: float) -> None:
        loaded = self._loaded
        if loaded is not None:
            self._loaded = _Loaded(loaded.serving, sample_rate, cpu_budget)

    def failed(self, ref: ModelRef, kind: str) -> None:
        """The desired shadow ``ref`` could not be fetched or loaded: none runs, it is counted."""
        with self._lock:
            if self._ref != ref:
                self._new_interval()  # figures of another shadow are not this one's
            self._ref = ref
            self._loaded = None
            self._count_error(kind)

    def unload(self) -> ModelRef | None:
        """Stop running the shadow; its last figures go out with the next flush."""
        loaded, self._loaded = self._loaded, None
        return loaded.serving.model.ref if loaded is not None else None

    # -- the inference thread ----------------------------------------------------------------
    def wants(self) -> bool:
        """Should the next served input be paired? Decided before the serving run (so its CPU
        time is measured only when it is); a sampled input that cannot be taken is skipped."""
        loaded = self._loaded
        if loaded is None or self._rng.random() >= loaded.sample_rate:
            return False
        if self._sent - self._taken >= self._size:
            self._skip()
            return False
        now = self._clock()
        spent = self._spent
        cap = spent + loaded.cpu_budget * BURST_S
        self._accrued = min(cap, self._accrued + (now - self._credit_at) * loaded.cpu_budget)
        self._credit_at = now
        if self._accrued > spent:
            return True
        self._skip()
        return False

    def offer(self, pair: Pair) -> None:
        """Hand a served input to the worker; never blocks (full: skipped and counted)."""
        if self._loaded is None:
            return
        if self._sent - self._taken >= self._size:
            self._skip()
            return
        self._sent += 1
        self._queue.put(pair)

    def _skip(self) -> None:
        with self._lock:
            self._skipped += 1

    # -- the shadow thread -------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Every :data:`POLL_S`, run what waits. Polled, not woken per input: a wake-up per
        paired input made the serving thread wait for the GIL on that input, i.e. on the
        sampled 10 % — the whole p95 tail of a fast model (digits p95 ×1.7–1.9 with a
        worker that did nothing at all); polled, the contention falls on the inputs served
        while the worker runs, a few per poll. What waits is taken at once and run as one
        batch (:meth:`run_pairs`): its figures go into the interval under one lock."""
        lower_priority(self.nice)
        get = self._queue.get_nowait
        while not stop.wait(POLL_S if self._loaded is not None else IDLE_S):
            waiting = self._sent - self._taken  # no exception raised by an empty poll
            if waiting <= 0:
                continue
            pairs: list[Pair] = []
            for _ in range(waiting):
                try:
                    pairs.append(get())
                except queue.Empty:  # counted by the inference thread, not put yet
                    break
            if pairs:
                self._taken += len(pairs)
                self.run_pairs(pairs)

    def run_pairs(self, pairs: list[Pair]) -> None:
        """Run the current shadow on ``pairs``; all of their shadow work, failed or not, is
        charged to the CPU budget."""
        loaded = self._loaded
        if loaded is None:
            return
        spent = time.thread_time()
        try:
            self._run_batch(loaded.serving, pairs)
        finally:
            self._spent += time.thread_time() - spent

    def run_one(self, shadow: Serving, pair: Pair) -> None:
        """Run the shadow on one served input, compare, tally, and capture a disagreement."""
        self._run_batch(shadow, [pair])

    def _run_batch(self, shadow: Serving, pairs: list[Pair]) -> None:
        batch = _Batch()
        same: tuple[Serving, bool] | None = None  # the preprocessing check, per serving model
        for pair in pairs:
            if same is None or same[0] is not pair.serving:
                same = (pair.serving, _same_input(shadow, pair.serving))
            try:
                self._pair(shadow, pair, batch, same[1])
            except Exception:  # a shadow bug must not end the worker: count it, go on
                log.exception("shadow crashed", extra={"model": str(shadow.model.ref)})
                batch.error("internal")
        with self._lock:
            loaded = self._loaded
            if loaded is None or loaded.serving is not shadow:
                return  # swapped or removed while it ran: not the current shadow's figures
            for kind, n in batch.errors.items():
                self._count_error(kind, n)
            tally = self._tally
            for agrees, figures, serving_ms, shadow_ms, serving_cpu, shadow_cpu in batch.figures:
                tally.add_one(agrees, figures)
                self._serving_ms.record(serving_ms)
                self._shadow_ms.record(shadow_ms)
                self._serving_cpu += serving_cpu
                self._shadow_cpu += shadow_cpu
        capturer = self.capturer
        if capturer is None:
            return
        for pair in batch.disagreed:  # the serving scores, computed only for what is captured
            scores = pair.serving.model.probabilities(pair.outputs)
            capturer.shadow_disagreement(
                pair.item,
                pair.serving,
                scores[0] if scores is not None and scores.size else None,
                detections=pair.result.get("detections"),
            )

    def _pair(self, shadow: Serving, pair: Pair, batch: _Batch, same_input: bool) -> None:
        """Run the shadow on one served input and compare; the figures go to ``batch``."""
        tensor, geometry = pair.tensor, pair.geometry
        pre = shadow.preprocess
        if not same_input:
            try:  # a shadow that preprocesses differently gets the raw input, its own way
                tensor, size = pre.prepare(pair.item.data, tensor=pair.item.tensor)
            except InputError:
                batch.error("input")
                return
            geometry = Geometry(source=size, resize=pre.spec.resize if pre.spec else None)
        task = shadow.model.manifest.task
        measure = MEASURES[task]
        cpu0 = time.thread_time()
        start = time.perf_counter()
        try:
            outputs = shadow.model.infer({pre.tensor.name: tensor})
            # The model run alone, as the serving run is timed. Its latency is the CPU time
            # of this thread (the shadow engine runs one thread, on this one): the worker runs
            # at nice 19, so its wall time also counts the time it waited behind serving for a
            # core — on a busy device 14× the serving p95 (the drift demo's shadow stage
            # aborted on it) for a model no slower than the serving one.
            elapsed_ms = (time.perf_counter() - start) * 1000.0
            cpu_ms = (time.thread_time() - cpu0) * 1000.0
            result = shadow.results(outputs, [geometry])[0] if measure.uses_result else {}
        except AgentError:
            batch.error("inference")
            return
        try:
            if task != pair.serving.model.manifest.task:
                raise ValueError(f"tasks differ: {pair.serving.model.manifest.task} vs {task}")
            mine = pair.top1 if isinstance(measure, Top1) else None
            theirs = top1(shadow.model, outputs) if mine is not None else None
            if mine is not None and theirs is not None:
                agrees, figures = Top1.of_top1(mine, theirs)
            else:
                comparison = measure.compare(
                    Answer(pair.serving, pair.serving.model.real(pair.outputs), pair.result),
                    Answer(shadow, shadow.model.real(outputs), result),
                )
                agrees, figures = comparison.agrees, dict(comparison.figures)
        except ValueError as err:
            log.debug("shadow answer not comparable", extra={"error": str(err)[:200]})
            batch.error("incomparable")
            return
        batch.figures.append(
            (agrees, figures, pair.serving_ms, min(cpu_ms, elapsed_ms), pair.serving_cpu_ms, cpu_ms)
        )
        if not agrees:
            batch.disagreed.append(pair)

    def _count_error(self, kind: str, n: int = 1) -> None:
        """Count ``n`` shadow errors of ``kind`` (call with the lock held)."""
        if kind not in self._errors and len(self._errors) >= MAX_ERROR_KINDS:
            kind = "other"
        self._errors[kind] = self._errors.get(kind, 0) + n

    # -- the telemetry thread ----------------------------------------------------------------
    def flush(self) -> ShadowReport | None:
        """The interval's report (None: no shadow desired and nothing to say), then reset."""
        with self._lock:
            ref = self._ref
            tally, skipped, errors = self._tally, self._skipped, self._errors
            serving_ms, shadow_ms = self._serving_ms, self._shadow_ms
            serving_cpu, shadow_cpu = self._serving_cpu, self._shadow_cpu
            self._new_interval()
            loaded = self._loaded
            if loaded is None and not (errors or tally.paired or skipped):
                self._ref = None  # removed (or failed) and its last interval already went out
                return None
        if ref is None:
            return None
        current = loaded.serving if loaded is not None and loaded.serving.model.ref == ref else None
        try:
            return ShadowReport(
                model=ref,
                task=current.model.manifest.task if current is not None else None,
                paired=tally.paired,
                skipped=skipped,
                disagreements=tally.disagreements,
                agreement=tally.agreement,
                serving_p50_ms=_pct(serving_ms, 0.5),
                serving_p95_ms=_pct(serving_ms, 0.95),
                shadow_p50_ms=_pct(shadow_ms, 0.5),
                shadow_p95_ms=_pct(shadow_ms, 0.95),
                serving_cpu_ms=round(serving_cpu, 3),
                shadow_cpu_ms=round(shadow_cpu, 3),
                errors=errors,
                **{name: _bounded(name, v) for name, v in tally.figures().items()},
            )
        except ContractError as err:  # a figure out of its range: say so rather than lose all
            log.warning("shadow report refused", extra={"error": str(err)[:300]})
            return ShadowReport(model=ref, paired=0, errors={**errors, "report_invalid": 1})


def _same_input(shadow: Serving, serving: Serving) -> bool:
    """Whether the shadow takes the serving model's preprocessed tensor as it is."""
    pre, theirs = shadow.preprocess, serving.preprocess
    return pre.spec == theirs.spec and pre.tensor == theirs.tensor


def lower_priority(nice: int) -> int | None:
    """Give the calling thread ``nice`` (Linux: ``setpriority`` on its thread id applies to the
    thread alone; the runtime's work on this thread inherits it — the shadow engine runs its
    own thread, ``threads=1``). Returns the nice value now in force, None where the platform
    has no per-thread priority or refuses (logged once, the shadow runs at normal priority)."""
    import os

    if nice <= 0 or not hasattr(os, "setpriority"):
        return None
    tid = threading.get_native_id()
    try:
        current = os.getpriority(os.PRIO_PROCESS, tid)
        if current < nice:
            os.setpriority(os.PRIO_PROCESS, tid, nice)
        return os.getpriority(os.PRIO_PROCESS, tid)
    except OSError as err:
        log.warning("shadow priority not lowered", extra={"err": str(err)})
        return None


def _pct(histogram: LatencyHistogram, q: float) -> float | None:
    return round(histogram.percentile(q), 4) if histogram.count else None


def _bounded(name: str, value: float) -> float:
    """Shares stay in [0, 1] after float sums (0.1 + 0.2 ...)."""
    value = round(value, 6)
    return (
        min(max(value, 0.0), 1.0)
        if name in ("mean_abs_conf_delta", "box_f1", "mask_iou")
        else value
    )
