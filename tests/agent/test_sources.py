"""Input sources through the real pipeline: video (back-pressure, end), batch → JSONL, camera
that disappears (fake device), an HTTP video stream through OpenCV, and the queue policies."""

from __future__ import annotations

import functools
import http.server
import io
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_digits

from agent.engine import BackendOptions, load_model
from agent.inputs import InputItem, InputSource, SourceContext, capture, create_source
from agent.pipeline import Pipeline, prepare
from agent.plugin_config import (
    BatchInputConfig,
    CameraInputConfig,
    InputConfig,
    StreamInputConfig,
    VideoInputConfig,
)
from agent.sinks import open_file_sink
from agent.state import ModelSlot, Serving
from agent.telemetry import TelemetryCollector
from tests.agent.factory import conv_artifact
from tests.agent.media import write_video
from tests.agent.sources import ListSource
from tests.utils.artifacts import digits_images


@pytest.fixture(scope="module")
def conv(tmp_path_factory: pytest.TempPathFactory) -> Serving:
    art = conv_artifact(tmp_path_factory.mktemp("conv") / "conv")
    return Serving.of(load_model(art, options=BackendOptions()))


class Harness:
    def __init__(
        self, serving: Serving | None, tmp: Path, queue_size: int = 4, batch_size: int = 1
    ) -> None:
        self.slot = ModelSlot()
        if serving is not None:
            self.slot.swap(serving)
        self.errors: list[tuple[str, str]] = []
        self.collector = TelemetryCollector(device_id="dev-1", data_dir=tmp)
        self.results_path = tmp / "results.jsonl"
        self.sink = open_file_sink(self.results_path)

        def on_error(kind: str, detail: str) -> None:
            self.errors.append((kind, detail))
            self.collector.record_error(kind)

        self.pipeline = Pipeline(
            slot=self.slot,
            collector=self.collector,
            on_error=on_error,
            sink=self.sink,
            queue_size=queue_size,
            batch_size=batch_size,
        )
        self.context = SourceContext(on_error=on_error)

    def source(self, config: InputConfig) -> InputSource:
        return create_source(config, context=self.context)

    def run(
        self,
        source: InputSource,
        until: Callable[[], bool],
        timeout: float = 20,
        *,
        prefill: bool = False,
    ) -> None:
        """Feed and infer until ``until()``; ``prefill``: inference starts once the queue is
        full (so a batch forms whatever the machine's timing)."""
        stop = threading.Event()
        threads = [
            threading.Thread(target=self.pipeline.feed, args=(source, stop)),
            threading.Thread(target=self.pipeline.run, args=(stop,)),
        ]
        threads[0].start()
        if prefill:
            deadline = time.monotonic() + timeout
            while not self.pipeline.queue.full() and time.monotonic() < deadline:
                time.sleep(0.005)
        threads[1].start()
        deadline = time.monotonic() + timeout
        while not until() and time.monotonic() < deadline:
            time.sleep(0.01)
        stop.set()
        for t in threads:
            t.join(10)
            assert not t.is_alive()
        self.sink.close()

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.results_path.read_text().splitlines()]

    def kinds(self) -> list[str]:
        return [k for k, _ in self.errors]


def test_video_every_frame_in_order_then_ended(conv: Serving, tmp_path: Path) -> None:
    video = write_video(tmp_path / "v.avi", 30)
    h = Harness(conv, tmp_path, queue_size=2)
    source = h.source(VideoInputConfig(path=video))
    assert source.live is False
    h.run(source, lambda: h.pipeline.source_done.is_set() and h.pipeline.handled == 30)
    lines = h.lines()
    assert [r["source"] for r in lines] == [f"v.avi#{i}" for i in range(30)]
    assert all(len(r["top_k"]) == 5 and r["model"] == "conv@1.0.0" for r in lines)
    assert h.kinds() == ["input_ended"] and h.collector.totals().dropped == 0


def test_unreadable_video_is_reported_not_fatal(conv: Serving, tmp_path: Path) -> None:
    bad = tmp_path / "bad.avi"
    bad.write_bytes(b"RIFF" + b"\x00" * 500)
    h = Harness(conv, tmp_path)
    h.run(h.source(VideoInputConfig(path=bad)), h.pipeline.source_done.is_set)
    assert h.kinds() in (["input_unavailable"], ["input_unreadable"])


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def test_batch_folder_to_results_file(digits_v1: Path, tmp_path: Path) -> None:
    serving = Serving.of(load_model(digits_v1, options=BackendOptions()))
    folder = tmp_path / "in"
    images = digits_images(folder, 5)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    (folder / "zrow.npy").write_bytes(_npy(load_digits().data[1502].astype(np.float32)))
    h = Harness(serving, tmp_path, queue_size=1)
    h.run(
        h.source(BatchInputConfig(path=folder)),
        lambda: h.pipeline.source_done.is_set() and h.pipeline.handled == 7,
    )
    lines = {r["source"]: r for r in h.lines()}
    assert sorted(lines) == sorted([p.name for p in images] + ["broken.png", "zrow.npy"])
    for path in images:
        assert lines[path.name]["top_k"][0]["label"] == path.stem[-1]
    assert lines["broken.png"]["kind"] == "corrupt_image"
    assert lines["zrow.npy"]["top_k"][0]["label"] == str(load_digits().target[1502])


def test_batch_npy_rows_to_results_file(digits_v1: Path, tmp_path: Path) -> None:
    serving = Serving.of(load_model(digits_v1, options=BackendOptions()))
    digits = load_digits()
    samples = tmp_path / "samples.npy"
    np.save(samples, digits.data[1400:1450].astype(np.float32))
    h = Harness(serving, tmp_path, queue_size=2)
    h.run(
        h.source(BatchInputConfig(path=samples)),
        lambda: h.pipeline.source_done.is_set() and h.pipeline.handled == 50,
    )
    lines = h.lines()
    assert [r["source"] for r in lines] == [f"samples.npy[{i}]" for i in range(50)]
    labels = np.array([int(r["top_k"][0]["label"]) for r in lines])
    assert (labels == digits.target[1400:1450]).mean() > 0.9


def _run_batch(
    serving: Serving, tmp: Path, source_config: BatchInputConfig, batch: int, n: int
) -> tuple[dict[str, dict[str, Any]], Harness]:
    h = Harness(serving, tmp, queue_size=16, batch_size=batch)
    h.run(
        h.source(source_config),
        lambda: h.pipeline.source_done.is_set() and h.pipeline.handled == n,
        prefill=True,
    )
    return {r["source"]: r for r in h.lines()}, h


def test_batch_8_gives_every_input_what_batch_1_gives(digits_v1: Path, tmp_path: Path) -> None:
    """Images, .npy files and a broken file from one folder: batched runs, same results."""
    serving = Serving.of(load_model(digits_v1, options=BackendOptions()))
    folder = tmp_path / "in"
    digits_images(folder, 30)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    for i in range(5):
        row = load_digits().data[1500 + i].astype(np.float32)
        (folder / f"zrow{i}.npy").write_bytes(_npy(row))
    config = BatchInputConfig(path=folder)
    one, h1 = _run_batch(serving, tmp_path / "b1", config, 1, 36)
    eight, h8 = _run_batch(serving, tmp_path / "b8", config, 8, 36)
    assert sorted(one) == sorted(eight) and len(one) == 36
    assert eight["broken.png"]["kind"] == "corrupt_image" == one["broken.png"]["kind"]
    for source, expected in one.items():
        got = eight[source]
        assert set(got) == set(expected), source
        if "top_k" in expected:
            assert [c["label"] for c in got["top_k"]] == [c["label"] for c in expected["top_k"]]
            np.testing.assert_allclose(
                [c["score"] for c in got["top_k"]],
                [c["score"] for c in expected["top_k"]],
                rtol=1e-5,
                atol=1e-6,
            )
    assert h1.pipeline.runs == 35  # every input that could be read, one run each
    # Batches of up to 8 (how full each gets depends on how fast the reader fills the queue).
    assert h8.pipeline.runs < 35, h8.pipeline.runs
    totals = h8.collector.totals()
    assert totals.inferences == 35 and totals.errors == {"corrupt_image": 1}


def test_live_sources_and_waiting_callers_are_not_batched(digits_v1: Path, tmp_path: Path) -> None:
    serving = Serving.of(load_model(digits_v1, options=BackendOptions()))
    rows = load_digits().data[:10].astype(np.float32)
    replies: list[Any] = []
    items = [InputItem(f"live{i}", rows[i], tensor=True) for i in range(5)]
    h = Harness(serving, tmp_path, queue_size=16, batch_size=8)
    h.run(ListSource(items, live=True), lambda: h.pipeline.handled == 5, prefill=False)
    assert h.pipeline.runs == 5
    waiting = [
        InputItem(f"r{i}", rows[i], tensor=True, reply=lambda r, e: replies.append((r, e)))
        for i in range(5)
    ]
    h2 = Harness(serving, tmp_path / "2", queue_size=5, batch_size=4)
    h2.run(ListSource(waiting), lambda: h2.pipeline.handled == 5, prefill=True)
    assert h2.pipeline.runs == 5 and len(replies) == 5


class FakeCamera:
    """A device that delivers ``frames`` frames and then disappears (reads fail)."""

    def __init__(self, frames: int, *, opens: bool = True) -> None:
        self.left = frames
        self.opens = opens
        self.settings: dict[int, float] = {}

    def isOpened(self) -> bool:  # noqa: N802  (OpenCV's naming)
        return self.opens

    def set(self, prop: int, value: float) -> bool:
        self.settings[prop] = value
        return True

    def read(self) -> tuple[bool, np.ndarray | None]:
        if self.left <= 0:
            return False, None
        self.left -= 1
        return True, np.full((48, 64, 3), self.left * 10, np.uint8)

    def release(self) -> None:
        return None


def test_camera_that_disappears_is_reopened(
    conv: Serving, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    devices = iter([FakeCamera(5), FakeCamera(0, opens=False), FakeCamera(3)])
    opened: list[Any] = []

    def fake_open(target: int | str) -> FakeCamera:
        opened.append(target)
        return next(devices, FakeCamera(0, opens=False))

    monkeypatch.setattr(capture, "open_capture", fake_open)
    h = Harness(conv, tmp_path, queue_size=64)
    config = CameraInputConfig(index=2, width=64, height=48, reconnect_s=0.01)
    source = h.source(config)
    assert source.live is True
    h.run(source, lambda: h.pipeline.handled >= 8 and "input_unavailable" in h.kinds())
    assert h.pipeline.handled == 8 and opened[:3] == [2, 2, 2]
    assert h.kinds()[:3] == ["input_lost", "input_unavailable", "input_lost"]


def test_camera_index_on_real_hardware(conv: Serving, tmp_path: Path) -> None:
    if not Path("/dev/video0").exists():
        pytest.skip("no camera at /dev/video0 (hardware test)")
    h = Harness(conv, tmp_path)
    h.run(h.source(CameraInputConfig(index=0)), lambda: h.pipeline.handled >= 3)
    assert h.pipeline.handled >= 3


@pytest.fixture
def video_url(tmp_path: Path) -> Iterator[str]:
    folder = tmp_path / "www"
    folder.mkdir()
    write_video(folder / "cam.avi", 20)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            return

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder))
    )
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://user:secret@127.0.0.1:{server.server_address[1]}/cam.avi"
    server.shutdown()
    server.server_close()


def test_http_stream_through_opencv_reconnects_at_its_end(
    conv: Serving, tmp_path: Path, video_url: str
) -> None:
    h = Harness(conv, tmp_path, queue_size=64)
    source = h.source(StreamInputConfig(url=video_url, reconnect_s=0.01))
    h.run(source, lambda: h.pipeline.handled >= 30)
    assert h.pipeline.handled >= 30  # more than one pass of a 20-frame stream
    assert "input_lost" in h.kinds()
    assert all("secret" not in detail for _, detail in h.errors)  # credentials never logged


def test_live_source_drops_oldest_and_files_wait(conv: Serving, tmp_path: Path) -> None:
    frames = [InputItem(f"f{i}", np.full((8, 8, 3), i, np.uint8)) for i in range(10)]
    live = Harness(conv, tmp_path / "a", queue_size=3)
    live.pipeline.feed(ListSource(frames, live=True), threading.Event())  # nobody consuming
    assert live.collector.totals().dropped == 7
    assert [live.pipeline.queue.get_nowait().item.source for _ in range(3)] == ["f7", "f8", "f9"]

    files = Harness(conv, tmp_path / "b", queue_size=3)
    stop = threading.Event()
    feeder = threading.Thread(target=files.pipeline.feed, args=(ListSource(frames), stop))
    feeder.start()
    time.sleep(0.3)
    assert feeder.is_alive() and files.pipeline.queue.qsize() == 3  # waiting for room
    files.run(ListSource([]), lambda: files.pipeline.handled >= 1, timeout=5)
    stop.set()
    feeder.join(5)
    assert files.collector.totals().dropped == 0


def test_job_in_flight_is_preprocessed_again_after_a_swap(
    conv: Serving, digits_v1: Path, tmp_path: Path
) -> None:
    digits = Serving.of(load_model(digits_v1, options=BackendOptions()))
    h = Harness(digits, tmp_path)
    image = digits_images(tmp_path / "img", 1)[0]
    job = prepare(InputItem(image.name, image.read_bytes()), digits)
    assert job.tensor.shape == (1, 64)
    h.slot.swap(conv)  # a model with another input: 1×3×32×32 RGB
    h.pipeline.process(job)
    h.sink.close()
    [line] = h.lines()
    assert line["model"] == "conv@1.0.0" and line["source"] == image.name
    assert h.errors == []
