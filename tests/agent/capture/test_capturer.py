"""Samplers, budgets (fake clock), the device's tightening and the capturer on a real model."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest

from agent.capture import CaptureBudget, CaptureConfig, Capturer, SampleQueue
from agent.capture.counters import CaptureCounters
from agent.capture.samplers import SAMPLERS, Observation, reason_for
from agent.inputs import InputItem
from agent.pipeline import prepare
from agent.state import Serving
from edgefleet.contract import CapturePolicy, SampleMeta
from tests.agent.capture.helpers import digit_pixels, serving, with_reference

ALL = [str(d) for d in range(10)]


class FakeClock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.mark.parametrize(
    ("policy", "seen", "reason"),
    [
        ({"low_confidence": 0.5}, {"confidence": 0.4}, "low_confidence"),
        ({"low_confidence": 0.5}, {"confidence": 0.6}, None),
        ({"margin": 0.1}, {"confidence": 0.9, "margin": 0.05}, "margin"),
        ({"margin": 0.1}, {"margin": 0.2}, None),
        ({"outside_reference": 0.3}, {"input_score": 0.31}, "outside_reference"),
        ({"outside_reference": 0.3}, {"input_score": 0.3}, None),
        ({"classes": ["7"]}, {"predicted": "7"}, "class"),
        ({"classes": ["7"]}, {"predicted": "1"}, None),
        ({}, {"confidence": 0.0, "margin": 0.0, "input_score": 1.0, "predicted": "7"}, None),
        (
            {"low_confidence": 0.5, "classes": ["7"]},
            {"confidence": 0.1, "predicted": "7"},
            "low_confidence",
        ),
    ],
)
def test_each_sampler(
    policy: dict[str, object], seen: dict[str, object], reason: str | None
) -> None:
    assert reason_for(CapturePolicy.model_validate(policy), Observation(**seen)) == reason  # type: ignore[arg-type]


def test_registry_holds_one_sampler_per_reason_random_apart() -> None:
    assert list(SAMPLERS) == ["low_confidence", "margin", "outside_reference", "class"]
    assert all(s.reason == key for key, s in SAMPLERS.items())


def test_budget_per_hour_per_day_and_bytes_on_a_rolling_window() -> None:
    clock = FakeClock()
    budget = CaptureBudget(clock=clock)
    policy = CapturePolicy(max_per_hour=3, max_per_day=5, max_bytes_per_day=1000)
    assert [budget.admit(policy, 100) for _ in range(4)] == [None, None, None, "max_per_hour"]
    clock.t += 3599
    assert budget.admit(policy, 100) == "max_per_hour"
    clock.t += 2  # the first three are more than an hour old now
    assert [budget.admit(policy, 100) for _ in range(3)] == [None, None, "max_per_day"]
    clock.t += 86_400  # a day later everything is forgotten
    assert budget.admit(policy, 900) is None
    assert budget.admit(policy, 101) == "max_bytes_per_day"
    assert budget.admit(policy, 100) is None


def test_device_config_only_tightens() -> None:
    server = CapturePolicy(low_confidence=0.5, classes=["1", "7"], random=0.1, max_per_hour=100)
    local = CaptureConfig(low_confidence=0.9, margin=0.3, classes=["7", "9"], max_per_hour=10)
    effective = local.effective(server)
    assert effective is not None
    assert effective.low_confidence == 0.5  # the device asked for more: it gets the server's
    assert effective.margin is None  # the server did not turn margin on: the device cannot
    assert effective.classes == ["7"]
    assert effective.random == 0.1 and effective.max_per_hour == 10
    assert CaptureConfig(max_mb_per_day=1).effective(server).max_bytes_per_day == 1_000_000  # type: ignore[union-attr]
    assert CaptureConfig(enabled=False).effective(server) is None
    assert local.effective(None) is None


@pytest.fixture
def model(digits_v1: Path, tmp_path_factory: pytest.TempPathFactory) -> Serving:
    return serving(with_reference(digits_v1, tmp_path_factory.mktemp("ref") / "a"))


def _run(capturer: Capturer, model: Serving, frames: list[np.ndarray]) -> None:
    for i, frame in enumerate(frames):
        item = InputItem(source=f"f{i}", data=frame)
        job = prepare(item, model)
        scores = model.model.probabilities(model.model.infer({"input": job.tensor}))
        assert scores is not None
        capturer.observe(item, job.tensor, model, scores[0])


def _capturer(
    tmp_path: Path,
    clock: FakeClock,
    config: CaptureConfig | None = None,
    *,
    seed: int = 0,
    max_bytes: int = 10**8,
) -> tuple[Capturer, SampleQueue, CaptureCounters]:
    counters = CaptureCounters()
    queue = SampleQueue(tmp_path / "q", max_bytes=max_bytes, on_drop=counters.add)
    capturer = Capturer(
        device_id="dev-1",
        config=config or CaptureConfig(),
        queue=queue,
        count=counters.add,
        rng=random.Random(seed),
        clock=clock,
    )
    return capturer, queue, counters


def test_capture_never_exceeds_the_hourly_budget_and_resumes_an_hour_later(
    model: Serving, tmp_path: Path
) -> None:
    clock = FakeClock()
    capturer, queue, counters = _capturer(tmp_path, clock)
    capturer.set_policy(CapturePolicy(classes=ALL, max_per_hour=7, max_per_day=10))
    frames = [digit_pixels(1400 + i) for i in range(60)]
    _run(capturer, model, frames)
    assert len(queue) == 7 and counters.totals["over_budget"] == 53
    clock.t += 3601
    _run(capturer, model, frames)
    assert len(queue) == 10  # the day's budget
    for entry in queue.entries():
        assert entry.meta.reason == "class" and entry.meta.content_type == "image/jpeg"
        assert entry.meta.input_stats is not None and entry.meta.input_score is not None
        assert len(entry.meta.outputs) == 10 and entry.meta.predicted is not None
    # A restart rebuilds the budget from the queue: no new budget for the same day.
    again, _, counters2 = _capturer(tmp_path, clock)
    again.set_policy(CapturePolicy(classes=ALL, max_per_hour=7, max_per_day=10))
    _run(again, model, frames[:5])
    assert len(queue.entries()) == 10 and len(SampleQueue(tmp_path / "q", max_bytes=10**8)) == 10
    assert counters2.totals["over_budget"] == 5


def test_random_is_decided_first_and_independently(model: Serving, tmp_path: Path) -> None:
    """With every input also wanted by the class rule, the random share is still 30 %."""
    clock = FakeClock()
    capturer, queue, _ = _capturer(tmp_path, clock, seed=1)
    policy = CapturePolicy(
        random=0.3, classes=[str(d) for d in range(10)], max_per_hour=10**6, max_per_day=10**6
    )
    capturer.set_policy(policy)
    _run(capturer, model, [digit_pixels(1400 + i % 300) for i in range(400)])
    reasons = [e.meta.reason for e in queue.entries()]
    assert len(reasons) == 400
    share = reasons.count("random") / 400
    assert 0.25 <= share <= 0.35, share  # binomial(400, 0.3): sd 2.3 %
    assert set(reasons) == {"random", "class"}


def test_bytes_budget_max_side_and_jpeg_quality(model: Serving, tmp_path: Path) -> None:
    import cv2

    clock = FakeClock()
    capturer, queue, counters = _capturer(tmp_path, clock)
    big = cv2.resize(digit_pixels(1400), (800, 600), interpolation=cv2.INTER_NEAREST)
    capturer.set_policy(
        CapturePolicy(random=1.0, max_side=100, jpeg_quality=50, max_bytes_per_day=6000)
    )
    _run(capturer, model, [big] * 20)
    entries = queue.entries()
    assert entries and sum(e.size for e in entries) <= 6000
    assert counters.totals["over_budget"] == 20 - len(entries)
    image = cv2.imdecode(
        np.frombuffer(entries[0].content.read_bytes(), np.uint8), cv2.IMREAD_UNCHANGED
    )
    assert image is not None and max(image.shape[:2]) == 100


def test_tensor_inputs_are_stored_as_npy(model: Serving, tmp_path: Path) -> None:
    capturer, queue, _ = _capturer(tmp_path, FakeClock())
    capturer.set_policy(CapturePolicy(random=1.0))
    x = np.random.default_rng(0).random((1, 64), dtype=np.float32)
    item = InputItem(source="t", data=x, tensor=True)
    job = prepare(item, model)
    capturer.observe(item, job.tensor, model, None)
    (entry,) = queue.entries()
    assert entry.meta.content_type == "application/x-npy"
    import io

    assert np.array_equal(np.load(io.BytesIO(entry.content.read_bytes())), x)


def test_no_policy_no_capture_but_stats_and_class_keys(model: Serving, tmp_path: Path) -> None:
    capturer, queue, _ = _capturer(tmp_path, FakeClock())
    _run(capturer, model, [digit_pixels(1400 + i) for i in range(10)])
    assert len(queue) == 0
    stats = capturer.inputs.flush()
    assert stats is not None and stats.samples == 10 and len(stats.channel_histograms) == 64
    assert sum(map(sum, stats.channel_histograms)) == 640


def test_sample_meta_on_disk_is_the_contract(model: Serving, tmp_path: Path) -> None:
    capturer, queue, _ = _capturer(tmp_path, FakeClock())
    capturer.set_policy(CapturePolicy(classes=[str(d) for d in range(10)]))
    _run(capturer, model, [digit_pixels(1400)])
    (entry,) = queue.entries()
    raw = (entry.content.parent / f"{entry.name}.json").read_bytes()
    meta = SampleMeta.model_validate_json(raw)
    assert meta.reason == "class" and json.loads(raw)["schema_version"] == 3
    import hashlib

    assert hashlib.sha256(entry.content.read_bytes()).hexdigest() == meta.sha256


def test_pacing_considers_one_input_in_cost_over_share_of_inference(
    model: Serving, tmp_path: Path
) -> None:
    capturer, _, _ = _capturer(tmp_path, FakeClock())
    capturer.set_policy(CapturePolicy(low_confidence=0.01))
    capturer._model_for(model)
    for _ in range(5):  # the first measurement after a model change is left out
        capturer._pace(0.1, 0.5)
    # 0.1 ms / ((2 % - the per-input part's 0.03 %) of 0.5 ms) = 10.2
    assert capturer.every == 11
    capturer._pace(50.0, 0.5)  # one preempted call does not move the median
    assert capturer.every == 11
    for _ in range(20):
        capturer._pace(0.001, 1.0)
    assert capturer.every == 1


def test_pacing_leaves_the_per_input_part_its_share_on_a_tiny_model(
    model: Serving, tmp_path: Path
) -> None:
    """On an 8 µs model the countdown and class count on every input (PER_INPUT_MS) are
    ~1.9 % of inference: the paced part gets the floor, not the whole 2 %."""
    from agent.capture.pacing import MIN_SHARE, PER_INPUT_MS

    capturer, _, _ = _capturer(tmp_path, FakeClock())
    capturer._model_for(model)
    for _ in range(5):
        capturer._pace(0.2, 0.008)
    assert PER_INPUT_MS / 0.008 > 0.018  # the per-input part alone is nearly the budget
    assert capturer.every == math.ceil(0.2 / (MIN_SHARE * 0.008))  # 12,500
    assert 0.2 / capturer.every + PER_INPUT_MS <= 0.03 * 0.008  # within the 3 % target


def test_pipeline_counts_every_class_and_observes_a_subsample(
    model: Serving, tmp_path: Path
) -> None:
    from agent.pipeline import Pipeline
    from agent.state import ModelSlot
    from agent.telemetry import TelemetryCollector

    capturer, _, _ = _capturer(tmp_path, FakeClock())
    collector = TelemetryCollector(device_id="dev-1", data_dir=tmp_path)
    slot = ModelSlot()
    slot.swap(model)
    pipeline = Pipeline(
        slot=slot, collector=collector, on_error=lambda k, d: None, capturer=capturer
    )
    capturer.config = CaptureConfig(overhead_share=1e-6)  # an expensive budget: stride > 1
    for i in range(200):
        pipeline.process(prepare(InputItem(source="x", data=digit_pixels(1400 + i)), model))
    labels = model.model.manifest.labels
    telemetry = collector.flush(
        seq=1, model=model.model.ref, classifier=True, inputs=capturer.inputs.flush(), labels=labels
    )
    assert sum(telemetry.class_counts.values()) == 200
    assert set(telemetry.class_counts) <= set(labels)
    assert telemetry.inputs is not None and 1 <= telemetry.inputs.samples < 200


def test_detector_samples_carry_their_boxes_as_outputs_rows(model: Serving, tmp_path: Path) -> None:
    """The server's mAP reads predicted boxes from ``outputs`` as rows of x1, y1, x2, y2,
    score, class_index; a detector's sample had ``outputs=[]`` (no class scores)."""
    capturer, queue, _ = _capturer(tmp_path, FakeClock())
    capturer.set_policy(CapturePolicy(random=1.0))
    item = InputItem(source="d", data=digit_pixels(1400))
    job = prepare(item, model)
    found = [
        {"class": 2, "label": "2", "score": 0.91, "box": [1.0, 2.0, 5.5, 7.25]},
        {"class": 0, "label": "0", "score": 0.4, "box": [0.0, 0.0, 3.0, 3.0]},
    ]
    capturer.observe(item, job.tensor, model, None, detections=found)
    too_many = [{"class": 1, "score": 0.5, "box": [0, 0, 1, 1]}] * 400
    capturer.observe(item, job.tensor, model, None, detections=too_many)
    first, second = queue.entries()
    assert first.meta.outputs == [1.0, 2.0, 5.5, 7.25, 0.91, 2.0, 0.0, 0.0, 3.0, 3.0, 0.4, 0.0]
    assert len(second.meta.outputs) == 996  # 166 whole boxes under the contract's 1000


def test_pacing_still_considers_an_input_every_half_second_at_a_cameras_rate(
    model: Serving, tmp_path: Path
) -> None:
    """The 8 µs model at 40 inputs a second: the share alone would consider one input in
    12,500 (statistics every 5 minutes); the MAX_GAP_S floor keeps it at twice a second. Flat
    out (a million a second) the share decides, as in the bench."""
    from agent.capture.pacing import MAX_GAP_S, MIN_SHARE

    capturer, _, _ = _capturer(tmp_path, FakeClock())
    capturer._model_for(model)
    for _ in range(20):  # each call sees the stride that led to it, at 40 inputs a second
        capturer._pace(0.2, 0.008, capturer.every / 40)
    assert capturer.every == int(40 * MAX_GAP_S)  # 20
    for _ in range(20):
        capturer._pace(0.2, 0.008, capturer.every / 1_000_000)
    assert capturer.every == math.ceil(0.2 / (MIN_SHARE * 0.008))  # 12,500
