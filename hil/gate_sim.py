"""Staged rollouts on a simulated heterogeneous fleet, judged by the real gates.

No broker, no database: each device produces telemetry rows like ingest stores them, and every
evaluation goes through the engine's own :func:`~fleet_server.services.rollouts.evidence.assemble`
and :func:`~fleet_server.services.rollouts.gates.evaluate_all`, at the engine's alphas (early
before a stage's soak, the normal one after). Used by ``bench/gate_bench.py`` (false-abort and
detection rates) and, small, by ``tests/fleet_server/test_gate_stats.py``.

The fleet is heterogeneous on purpose (issue #14): two device classes with different speeds, a
per-device speed factor, per-device input mixes (very different confidence histograms, error
rates and accuracies), a noisy p95 with occasional load spikes, the first intervals after an
update slower (warm-up), and some devices freshly enrolled with no history (their stage falls
back to the control group).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from fleet_server.models.rollouts import RolloutDevice
from fleet_server.services.quality.service import LabelCounts
from fleet_server.services.rollouts.evaluation import passed_on_a_baseline
from fleet_server.services.rollouts.evidence import assemble
from fleet_server.services.rollouts.gates import GateResult, evaluate_all
from fleet_server.services.rollouts.spec import GatePolicy, Strategy

OLD, NEW = ("m", "1.0.0"), ("m", "2.0.0")
BINS = 10
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Candidate:
    """How the new version differs from the old one (identical by default)."""

    latency_factor: float = 1.0
    #: Absolute drop of top-1 accuracy, and the share of inferences whose confidence collapses
    #: to the low bins (a less accurate model is less sure of itself).
    accuracy_drop: float = 0.0
    low_confidence_share: float = 0.0


@dataclass
class Row:
    """A telemetry row with the columns the evidence reads."""

    device_id: str
    seq: int
    received_at: datetime
    model: dict[str, str]
    inference_count: int
    error_count: int
    latency_ms: dict[str, float]
    confidence_histogram: list[int]


@dataclass
class SimDevice:
    device_id: str
    device_class: str
    speed_ms: float
    confidence: list[float]  # the input mix: probability of each confidence bin
    error_rate: float
    accuracy: float
    history: bool
    seq: int = 0
    assigned_at: datetime | None = None
    swap_at: int | None = None  # the tick it starts serving the new version
    rows: list[Row] = field(default_factory=list)


@dataclass(frozen=True)
class Outcome:
    result: Literal["completed", "aborted", "paused"]
    #: Ticks (telemetry intervals) from the rollout's start to its end.
    ticks: int
    stage: int
    failed: tuple[str, ...] = ()
    reason: str = ""


def _poisson(rng: random.Random, mean: float) -> int:
    # Knuth for small means, a normal approximation above (fast enough for a bench).
    if mean > 30:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, k, p = math.exp(-mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def make_fleet(rng: random.Random, size: int, *, fresh_share: float = 0.2) -> list[SimDevice]:
    devices = []
    for i in range(size):
        device_class = "rpi4" if i % 2 == 0 else "rpi5"
        base = 20.0 if device_class == "rpi4" else 9.0
        # Each device sees its own scenes: easy ones pile up in the top bins, hard ones spread.
        ease = rng.uniform(-0.5, 2.0)
        weights = [math.exp(ease * 3.0 * k / (BINS - 1)) for k in range(BINS)]
        total = sum(weights)
        devices.append(
            SimDevice(
                device_id=f"sim-{i:03d}",
                device_class=device_class,
                speed_ms=base * math.exp(rng.gauss(0.0, 0.25)),
                confidence=[w / total for w in weights],
                error_rate=rng.uniform(0.0, 0.008),
                accuracy=min(0.98, 0.70 + 0.1 * ease + rng.uniform(-0.03, 0.03)),
                history=rng.random() >= fresh_share,
            )
        )
    return devices


def _histogram(rng: random.Random, probabilities: list[float], n: int) -> list[int]:
    counts = [0] * BINS
    cumulative, acc = [], 0.0
    for p in probabilities:
        acc += p
        cumulative.append(acc)
    for _ in range(n):
        u = rng.random() * acc
        for k, edge in enumerate(cumulative):
            if u <= edge:
                counts[k] += 1
                break
    return counts


class Simulation:
    """One rollout of ``candidate`` over ``fleet``; one tick is one telemetry interval."""

    def __init__(
        self,
        rng: random.Random,
        fleet: list[SimDevice],
        candidate: Candidate,
        *,
        policy: GatePolicy | None = None,
        strategy: Strategy | None = None,
        interval_s: float = 60.0,
        inferences_per_interval: float = 60.0,
        labels_per_interval: float = 1.0,
        history_ticks: int = 20,
    ) -> None:
        self.rng, self.fleet, self.candidate = rng, fleet, candidate
        self.policy = policy or GatePolicy()
        self.strategy = strategy or Strategy()
        self.interval_s = interval_s
        self.inferences = inferences_per_interval
        self.labels_rate = labels_per_interval
        self.history_ticks = history_ticks
        #: Labelled samples (labelled, correct) per version and capturing device.
        self.labels: dict[tuple[str, str], dict[str, list[int]]] = {OLD: {}, NEW: {}}
        self.tick = 0
        #: Gates an earlier stage passed on a baseline (as the engine reads them back).
        self.judged: set[str] = set()

    def _now(self) -> datetime:
        return T0 + timedelta(seconds=self.tick * self.interval_s)

    def _report(self, device: SimDevice) -> None:
        rng, c = self.rng, self.candidate
        on_new = device.swap_at is not None and self.tick >= device.swap_at
        n = _poisson(rng, self.inferences)
        factor = c.latency_factor if on_new else 1.0
        p95 = device.speed_ms * factor * math.exp(rng.gauss(0.0, 0.08))
        if rng.random() < 0.05:  # something else ran on the device
            p95 *= rng.uniform(1.3, 2.0)
        if on_new and device.swap_at is not None and self.tick == device.swap_at:
            p95 *= 1.5  # the swap's interval: warm-up, the download still settling
        probabilities = device.confidence
        if on_new and c.low_confidence_share:
            low = [1.0 / 5] * 5 + [0.0] * (BINS - 5)
            share = c.low_confidence_share
            probabilities = [
                (1 - share) * p + share * q for p, q in zip(probabilities, low, strict=True)
            ]
        error_rate = device.error_rate
        device.seq += 1
        version = NEW if on_new else OLD
        device.rows.append(
            Row(
                device_id=device.device_id,
                seq=device.seq,
                received_at=self._now(),
                model={"name": version[0], "version": version[1]},
                inference_count=n,
                error_count=sum(rng.random() < error_rate for _ in range(n)),
                latency_ms={"p50": p95 / 2, "p95": p95},
                confidence_histogram=_histogram(rng, probabilities, n),
            )
        )
        labels = self.labels[version].setdefault(device.device_id, [0, 0])
        accuracy = device.accuracy - (c.accuracy_drop if on_new else 0.0)
        for _ in range(_poisson(rng, self.labels_rate)):
            labels[0] += 1
            labels[1] += rng.random() < accuracy

    def _members(self) -> list[RolloutDevice]:
        members = []
        for position, device in enumerate(self.fleet):
            if device.assigned_at is None:
                status = "pending"
            elif device.swap_at is not None and self.tick >= device.swap_at:
                status = "committed"
            else:
                status = "assigned"
            members.append(
                RolloutDevice(
                    rollout_id=1,
                    device_id=device.device_id,
                    position=position,
                    status=status,
                    device_class=device.device_class,
                    assigned_at=device.assigned_at,
                    previous_name=OLD[0],
                    previous_version=OLD[1],
                )
            )
        return members

    def evaluate(self, stage: int, soaked: bool) -> list[GateResult]:
        members = self._members()
        covered = self.strategy.target_count(stage, len(self.fleet))
        stage_ids = {d.device_id for d in self.fleet[:covered]}
        window_start = self._now() - timedelta(seconds=self.policy.baseline_window_s)
        updated = [d for d in self.fleet if d.assigned_at is not None]
        pending = [d for d in self.fleet if d.assigned_at is None]
        evidence = assemble(
            members=members,
            target=NEW,
            stage_ids=stage_ids,
            offline=set(),
            window_s=self.policy.baseline_window_s,
            min_control_intervals=self.policy.latency_p95_ratio.min_samples,
            settle_intervals=self.policy.settle_intervals,
            updated_rows=[r for d in updated for r in d.rows],
            read_control=lambda: [
                r for d in pending for r in d.rows if r.received_at >= window_start
            ],
        )
        for cohort, version in ((evidence.new, NEW), (evidence.old, OLD)):
            cohort.labels_by_device = {
                d: LabelCounts(n, k) for d, (n, k) in self.labels[version].items() if n
            }
            cohort.labels = LabelCounts(
                sum(c.labelled for c in cohort.labels_by_device.values()),
                sum(c.correct for c in cohort.labels_by_device.values()),
            )
        evidence.judged = frozenset(self.judged)
        return evaluate_all(self.policy, evidence, soaked=soaked)

    def run(self) -> Outcome:
        """Warm history, then canary → batches with the engine's rules: a failing gate aborts;
        a stage passes once soaked with no gate waiting; a stage still waiting after
        the strategy's stage timeout pauses."""
        max_stage_ticks = self.strategy.stage_timeout_s / self.interval_s
        for _ in range(self.history_ticks):
            for device in self.fleet:
                if device.history:
                    self._report(device)
            self.tick += 1
        start = self.tick
        soak_ticks = math.ceil(self.strategy.soak_s / self.interval_s)
        stage = 0
        while True:
            covered = self.strategy.target_count(stage, len(self.fleet))
            for device in self.fleet[:covered]:
                if device.assigned_at is None:
                    device.assigned_at = self._now()
                    device.swap_at = self.tick + self.rng.choice((1, 1, 2))
            stage_start = self.tick
            finished_at: int | None = None
            while True:
                self.tick += 1
                for device in self.fleet:
                    self._report(device)
                if finished_at is None and all(
                    d.swap_at is not None and self.tick >= d.swap_at for d in self.fleet[:covered]
                ):
                    finished_at = self.tick
                soaked = finished_at is not None and self.tick - finished_at >= soak_ticks
                results = self.evaluate(stage, soaked)
                failed = tuple(r.name for r in results if r.status == "fail")
                if failed:
                    reason = "; ".join(
                        f"{r.name} {r.value} [{r.low}, {r.high}]"
                        for r in results
                        if r.status == "fail"
                    )
                    return Outcome("aborted", self.tick - start, stage, failed, reason)
                if soaked and not any(r.status == "wait" for r in results):
                    self.judged |= passed_on_a_baseline(r.as_dict() for r in results)
                    break
                if self.tick - stage_start > max_stage_ticks:
                    waiting = ", ".join(r.name for r in results if r.status == "wait")
                    return Outcome("paused", self.tick - start, stage, (), waiting)
            if covered >= len(self.fleet) or stage + 1 >= self.strategy.stage_count():
                return Outcome("completed", self.tick - start, stage)
            stage += 1


def rollout(seed: int, size: int, candidate: Candidate, **kwargs: Any) -> Outcome:
    """One rollout of ``candidate`` on a fresh random fleet of ``size`` devices."""
    rng = random.Random(seed)
    return Simulation(rng, make_fleet(rng, size), candidate, **kwargs).run()
