"""The shadow model on the device: agreement measures per task, the bounded hand-over, the CPU
budget, and the runner on real digits models (a faithful copy agrees, a shuffled one does not)."""

from __future__ import annotations

import hashlib
import random
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.capture import CaptureConfig, Capturer, SampleQueue
from agent.engine import BackendOptions, load_model
from agent.inputs import InputItem
from agent.pipeline import Pipeline, prepare
from agent.shadow import MEASURES, Answer, Comparison, Pair, ShadowRunner, Tally
from agent.shadow.measures import box_f1, mask_iou
from agent.state import ModelSlot, Serving
from agent.telemetry import TelemetryCollector
from edgefleet.contract import CapturePolicy, ContractError, ShadowReport
from tests.agent.capture.helpers import digit_pixels
from tests.utils.artifacts import build_digits_artifact


@pytest.fixture(scope="module")
def shuffled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_digits_artifact(
        tmp_path_factory.mktemp("shuf") / "digits-9.0.0", version="9.0.0", shuffled_labels=True
    )


@pytest.fixture(scope="module")
def copy_v3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same weights as digits 1.0.0 under another version: a faithful copy."""
    return build_digits_artifact(tmp_path_factory.mktemp("copy") / "digits-3.0.0", version="3.0.0")


def _serving(artifact: Path) -> Serving:
    return Serving.of(load_model(artifact, options=BackendOptions(threads=1)))


def _det(cls: int, box: list[float], score: float = 0.9) -> dict[str, Any]:
    return {"class": cls, "box": box, "score": score}


# -- measures ---------------------------------------------------------------------------------


def test_box_f1_matches_same_class_at_iou_half() -> None:
    a = [_det(0, [0, 0, 10, 10]), _det(1, [20, 20, 30, 30])]
    assert box_f1(a, a) == 1.0
    assert box_f1([], []) == 1.0
    assert box_f1(a, []) == 0.0
    # Shifted by 2 px: IoU 0.47 (no match); by 1 px: IoU 0.68 (match).
    assert box_f1([_det(0, [0, 0, 10, 10])], [_det(0, [2, 2, 12, 12])]) == 0.0
    assert box_f1([_det(0, [0, 0, 10, 10])], [_det(0, [1, 1, 11, 11])]) == 1.0
    # The same box under another class does not match; one of two found: F1 = 2*1/(2+1).
    assert box_f1(a, [_det(1, [0, 0, 10, 10])]) == 0.0
    assert box_f1(a, [_det(0, [0, 0, 10, 10])]) == pytest.approx(2 / 3)
    # One reference box is matched once, however many boxes sit on it.
    assert box_f1([_det(0, [0, 0, 10, 10])], [_det(0, [0, 0, 10, 10])] * 2) == pytest.approx(2 / 3)


def test_mask_iou_is_the_mean_over_classes_present() -> None:
    a = np.zeros((4, 4), np.int64)
    a[:2] = 1
    assert mask_iou(a, a) == 1.0
    b = a.copy()
    b[2] = 1  # class 1: 8 of 12 pixels shared; class 0: 4 of 8
    assert mask_iou(a, b) == pytest.approx((8 / 12 + 4 / 8) / 2)
    assert mask_iou(np.zeros((0, 0)), np.zeros((0, 0))) == 1.0


def test_raw_diff_refuses_what_cannot_be_compared(digits_v1: Path) -> None:
    s = _serving(digits_v1)
    out = {"probabilities": np.full((1, 10), 0.1, np.float32)}
    same = MEASURES["raw"].compare(Answer(s, out, {}), Answer(s, out, {}))
    assert same.agrees and same.figures == {"max_abs_diff": 0.0, "mean_abs_diff": 0.0}
    moved = {"probabilities": out["probabilities"] + np.float32(0.01)}
    diff = MEASURES["raw"].compare(Answer(s, out, {}), Answer(s, moved, {}))
    assert not diff.agrees and diff.figures["max_abs_diff"] == pytest.approx(0.01, abs=1e-6)
    for bad in (
        {"other": out["probabilities"]},
        {"probabilities": np.zeros((1, 9), np.float32)},
        {"probabilities": np.full((1, 10), np.nan, np.float32)},
    ):
        with pytest.raises(ValueError):
            MEASURES["raw"].compare(Answer(s, out, {}), Answer(s, bad, {}))


def test_tally_means_and_maxima() -> None:
    t = Tally()
    assert t.agreement is None and t.figures() == {}
    t.add(Comparison(True, {"max_abs_diff": 0.5, "mean_abs_diff": 0.1}))
    t.add(Comparison(False, {"max_abs_diff": 0.2, "mean_abs_diff": 0.3}))
    assert t.paired == 2 and t.disagreements == 1 and t.agreement == 0.5
    assert t.figures() == pytest.approx({"max_abs_diff": 0.5, "mean_abs_diff": 0.2})


# -- the runner -------------------------------------------------------------------------------


def _pair(serving: Serving, i: int) -> Pair:
    item = InputItem(source=f"digit-{i}", data=digit_pixels(i))
    job = prepare(item, serving)
    outputs = serving.model.infer({serving.preprocess.tensor.name: job.tensor})
    result = serving.results(outputs, [job.geometry])[0]
    return Pair(item, serving, job.tensor, job.geometry, outputs, result, 0.05, 0.04)


def _capturer(tmp_path: Path, *, shadow: bool = True) -> Capturer:
    capturer = Capturer(
        device_id="dev-1",
        config=CaptureConfig(),
        queue=SampleQueue(tmp_path / "capture", max_bytes=10_000_000),
        count=lambda _: None,
    )
    capturer.set_policy(CapturePolicy(shadow_disagreement=shadow, max_per_hour=3))
    return capturer


def test_a_faithful_copy_agrees_and_captures_nothing(
    digits_v1: Path, copy_v3: Path, tmp_path: Path
) -> None:
    serving, shadow = _serving(digits_v1), _serving(copy_v3)
    capturer = _capturer(tmp_path)
    runner = ShadowRunner(capturer=capturer)
    runner.load(shadow, sample_rate=1.0, cpu_budget=1.0)
    for i in range(1400, 1420):
        runner.run_one(shadow, _pair(serving, i))
    report = runner.flush()
    assert isinstance(report, ShadowReport) and str(report.model) == "digits@3.0.0"
    assert report.paired == 20 and report.agreement == 1.0 and report.disagreements == 0
    assert report.task == "classification" and report.mean_abs_conf_delta == 0.0
    assert report.serving_p50_ms is not None and report.shadow_p95_ms is not None
    assert report.serving_cpu_ms == pytest.approx(20 * 0.04) and report.shadow_cpu_ms > 0
    assert capturer.queue is not None and len(capturer.queue) == 0
    # The next interval starts empty; the shadow is still reported while loaded.
    nxt = runner.flush()
    assert nxt is not None and nxt.paired == 0 and nxt.agreement is None


def test_a_shuffled_model_disagrees_and_disagreements_are_captured_within_budget(
    digits_v1: Path, shuffled: Path, tmp_path: Path
) -> None:
    serving, shadow = _serving(digits_v1), _serving(shuffled)
    capturer = _capturer(tmp_path)
    runner = ShadowRunner(capturer=capturer)
    runner.load(shadow, sample_rate=1.0, cpu_budget=1.0)
    for i in range(1400, 1410):
        runner.run_one(shadow, _pair(serving, i))
    report = runner.flush()
    assert report is not None and report.paired == 10 and report.agreement == 0.0
    assert report.mean_abs_conf_delta is not None
    queue = capturer.queue
    assert queue is not None and len(queue) == 3  # the policy's max_per_hour
    metas = [entry.meta for entry in queue.entries()]
    assert {m.reason for m in metas} == {"shadow_disagreement"}
    assert {str(m.model) for m in metas} == {"digits@1.0.0"}  # the model that served it
    assert all(m.predicted is not None and len(m.outputs) == 10 for m in metas)


def test_no_disagreement_capture_unless_the_policy_asks(
    digits_v1: Path, shuffled: Path, tmp_path: Path
) -> None:
    serving, shadow = _serving(digits_v1), _serving(shuffled)
    capturer = _capturer(tmp_path, shadow=False)
    runner = ShadowRunner(capturer=capturer)
    runner.load(shadow, sample_rate=1.0, cpu_budget=1.0)
    runner.run_one(shadow, _pair(serving, 1400))
    assert capturer.queue is not None and len(capturer.queue) == 0


def test_the_hand_over_never_blocks_and_counts_what_it_drops(digits_v1: Path) -> None:
    serving = _serving(digits_v1)
    runner = ShadowRunner(queue_size=2)
    assert not runner.wants()  # no shadow: nothing sampled, nothing counted
    runner.offer(_pair(serving, 1400))
    assert runner.flush() is None
    runner.load(serving, sample_rate=1.0, cpu_budget=1.0)
    for i in range(5):  # no worker running: two wait, three are dropped at once
        runner.offer(_pair(serving, 1400 + i))
    assert not runner.wants()  # full: the next sampled input is skipped before it runs
    report = runner.flush()
    assert report is not None and report.skipped == 4 and report.paired == 0


def test_sample_rate_and_cpu_budget(digits_v1: Path) -> None:
    serving = _serving(digits_v1)
    now = [0.0]
    runner = ShadowRunner(rng=random.Random(7), clock=lambda: now[0])
    runner.load(serving, sample_rate=0.1, cpu_budget=1.0)
    wanted = sum(runner.wants() for _ in range(2000))
    assert 140 <= wanted <= 260  # ~10 %
    # Over budget: a shadow run that took 2 s of CPU empties the bucket (1 s at budget 0.5)
    # for 3 s of wall time.
    runner.load(serving, sample_rate=1.0, cpu_budget=0.5)
    pair = _pair(serving, 1400)
    runner.run_one(serving, pair)
    runner._spent += 2.0  # what a 2 s run charges to the budget
    assert not runner.wants()
    now[0] += 2.0
    assert not runner.wants()  # 0.5 - 2 + 1 < 0
    now[0] += 1.5
    assert runner.wants()
    report = runner.flush()
    assert report is not None and report.skipped == 2


def test_a_shadow_failure_is_counted_and_serving_goes_on(digits_v1: Path) -> None:
    serving = _serving(digits_v1)
    slot = ModelSlot()
    slot.swap(serving)
    broken = _serving(digits_v1)

    def explode(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise RuntimeError("shadow runtime crashed")

    broken.model.infer = explode
    runner = ShadowRunner()
    runner.load(broken, sample_rate=1.0, cpu_budget=1.0)
    served: list[dict[str, Any]] = []

    class Sink:
        def write(self, result: dict[str, Any]) -> None:
            served.append(result)

        def close(self) -> None:
            pass

    pipeline = Pipeline(
        slot=slot,
        collector=TelemetryCollector(device_id="dev-1", data_dir=Path("/tmp")),
        on_error=lambda kind, detail: None,
        sink=Sink(),
        shadow=runner,
    )
    stop = threading.Event()
    worker = threading.Thread(target=runner.run, args=(stop,), daemon=True)
    worker.start()
    try:
        for i in range(6):
            item = InputItem(source=f"d{i}", data=digit_pixels(1400 + i))
            pipeline.process(prepare(item, serving))
        errors: dict[str, int] = {}
        deadline = time.monotonic() + 20
        while not errors and time.monotonic() < deadline:  # the worker runs on its own
            report = runner.flush()
            assert report is not None  # loaded: reported every interval
            errors.update(report.errors)
            stop.wait(0.02)
    finally:
        stop.set()
        worker.join(5)
    assert len(served) == 6 and all("top_k" in r for r in served)  # every input served
    assert errors.get("internal", 0) >= 1
    assert not any("shadow" in str(r) for r in served)  # the shadow's answers go nowhere


def test_a_failed_load_is_reported_against_the_desired_shadow(digits_v1: Path) -> None:
    runner = ShadowRunner()
    ref = _serving(digits_v1).model.ref
    runner.failed(ref, "load_failed")
    report = runner.flush()
    assert report is not None and report.model == ref and report.errors == {"load_failed": 1}
    assert runner.flush() is None  # nothing loaded, nothing new: the report stops


def test_shadow_report_rejects_inconsistent_figures() -> None:
    model = {"name": "digits", "version": "1.0.0"}
    with pytest.raises(ContractError):
        ShadowReport.model_validate({"model": model, "paired": 1, "disagreements": 2})
    with pytest.raises(ContractError):
        ShadowReport(model=_serving_ref(), paired=0, agreement=1.0)
    with pytest.raises(ContractError):
        ShadowReport(model=_serving_ref(), paired=3, serving_p50_ms=2.0, serving_p95_ms=1.0)
    with pytest.raises(ContractError):
        ShadowReport(model=_serving_ref(), paired=3, box_f1=1.5)


def _serving_ref() -> Any:
    from edgefleet.contract import ModelRef

    return ModelRef(name="digits", version="1.0.0")


# -- the updater: fetched like a serving model, kept apart from it ----------------------------


def test_the_updater_fetches_keeps_and_unloads_a_shadow_apart_from_serving(
    tmp_path: Path, digits_v1: Path, digits_v2: Path
) -> None:
    from edgefleet.contract import DesiredState, ShadowSpec
    from tests.agent.helpers import serve_bundles
    from tests.agent.test_updater import TOKEN, V1, make_harness
    from tests.utils.artifacts import bundle_of

    with serve_bundles(TOKEN) as server:
        h = make_harness(tmp_path / "data", server)
        runner = ShadowRunner()
        h.updater.shadow = runner
        v1 = bundle_of(digits_v1, tmp_path / "v1.tar.gz").read_bytes()
        v2 = bundle_of(digits_v2, tmp_path / "v2.tar.gz").read_bytes()
        serving_state = h.desired("/v1", v1, ref=V1)
        server.files["/v2"] = v2

        def with_shadow(shadow: dict[str, Any] | None) -> DesiredState:
            h.seq += 1
            spec = ShadowSpec.model_validate(shadow) if shadow else None
            return serving_state.model_copy(update={"seq": h.seq, "shadow": spec})

        v2_spec = {
            "name": "digits",
            "version": "2.0.0",
            "url": f"{server.url}/v2",
            "sha256": hashlib.sha256(v2).hexdigest(),
            "size": len(v2),
            "sample_rate": 0.5,
        }
        h.updater.apply(with_shadow(v2_spec))
        assert h.running() == V1 and runner.current is not None
        assert str(runner.current.model.ref) == "digits@2.0.0"
        assert server.requests[-1][0] == "/v2"  # downloaded and verified like a serving one
        # Its steps are not the device's: no update event or phase names the shadow.
        assert all(e["model"] in (None, V1) for e in h.events), h.events
        assert {s.phase for s in h.states[-1:]} == {"serving"}
        assert (h.store.root / "artifacts" / "digits" / "2.0.0").is_dir()

        # A bundle that fails its hash: counted, the old shadow unloaded, serving untouched.
        bad = {**v2_spec, "version": "3.0.0", "sha256": "0" * 64}
        h.updater.apply(with_shadow(bad))
        assert h.running() == V1 and runner.current is None
        report = runner.flush()
        assert report is not None and report.errors == {"load_failed": 1}
        assert str(report.model) == "digits@3.0.0"
        assert not (h.store.root / "artifacts" / "digits" / "2.0.0").exists()

        # The serving version as its own shadow loads from its artifact, which a later
        # removal never deletes.
        same = {**v2_spec, "version": "1.0.0", "sha256": "0" * 64, "url": f"{server.url}/x"}
        h.updater.apply(with_shadow(same))
        assert runner.current is not None and runner.current.model.ref == V1
        h.updater.apply(with_shadow(None))
        assert runner.current is None and h.running() == V1
        assert (h.store.root / "artifacts" / "digits" / "1.0.0" / "manifest.json").exists()


def test_the_worker_thread_runs_at_a_lower_priority_than_serving() -> None:
    """The kernel gives a shared core to serving: the worker sets its own thread's nice value
    (per thread on Linux: the inference thread keeps its own)."""
    import os

    from agent.shadow.runner import NICE, lower_priority

    runner = ShadowRunner()
    stop = threading.Event()
    worker = threading.Thread(target=runner.run, args=(stop,))
    worker.start()
    try:
        deadline = time.monotonic() + 5
        tid = worker.native_id
        assert tid is not None
        while os.getpriority(os.PRIO_PROCESS, tid) != NICE and time.monotonic() < deadline:
            time.sleep(0.01)
        assert os.getpriority(os.PRIO_PROCESS, tid) == NICE
        assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) < NICE  # this thread
    finally:
        stop.set()
        worker.join(5)
    assert lower_priority(0) is None  # nice 0: left as it is
