"""OpenCV capture sources: ``video`` (a file), ``camera`` (an index) and ``stream`` (RTSP/HTTP).

A video yields every frame (back-pressure) and ends, or loops; its end is reported once as
``input_ended``. A camera or stream is live: a failed read is reported as ``input_lost``, the
capture is reopened after ``reconnect_s`` until the agent stops, and a device whose camera
never comes back keeps serving its other inputs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from agent.inputs.base import ErrorReporter, InputItem
from agent.plugin_config import CameraInputConfig, StreamInputConfig, VideoInputConfig
from agent.preprocess import load_cv2

# Every capture source reads through OpenCV: loaded when this module is (on first use).
cv2 = load_cv2()

CaptureOpener = Callable[[int | str], Any]


def open_capture(target: int | str) -> Any:
    """A ``cv2.VideoCapture`` (module-level so tests can put a fake device in its place)."""
    if isinstance(target, int):
        return cv2.VideoCapture(target)
    return cv2.VideoCapture(target, cv2.CAP_FFMPEG)


class VideoSource:
    live = False

    def __init__(self, config: VideoInputConfig, *, on_error: ErrorReporter) -> None:
        self.config = config
        self._on_error = on_error

    def items(self, stop: threading.Event) -> Iterator[InputItem]:
        name = self.config.path.name
        while not stop.is_set():
            cap = open_capture(str(self.config.path))
            if not cap.isOpened():
                self._on_error("input_unavailable", f"{name}: cannot open video")
                return
            period = 1.0 / fps if self.config.realtime and (fps := cap.get(cv2.CAP_PROP_FPS)) else 0
            next_at = time.monotonic()
            index = 0
            try:
                while not stop.is_set():
                    ok, frame = cap.read()
                    if not ok or frame is None:
                        break
                    if period:
                        next_at += period
                        if stop.wait(max(0.0, next_at - time.monotonic())):
                            return
                    yield InputItem(source=f"{name}#{index}", data=frame)
                    index += 1
            finally:
                cap.release()
            if index == 0:
                self._on_error("input_unreadable", f"{name}: no frame could be decoded")
                return
            if not self.config.loop:
                self._on_error("input_ended", f"{name}: ended after {index} frames")
                return


class LiveCaptureSource:
    """A camera index or stream URL, reopened whenever it stops delivering frames."""

    live = True

    def __init__(
        self,
        target: int | str,
        *,
        label: str,
        reconnect_s: float,
        on_error: ErrorReporter,
        settings: dict[int, float] | None = None,
    ) -> None:
        self.target = target
        self.label = label
        self.reconnect_s = reconnect_s
        self.settings = settings or {}
        self._on_error = on_error

    def items(self, stop: threading.Event) -> Iterator[InputItem]:
        index = 0
        while not stop.is_set():
            cap = open_capture(self.target)
            if not cap.isOpened():
                self._on_error("input_unavailable", f"{self.label}: cannot open")
                cap.release()
                stop.wait(self.reconnect_s)
                continue
            for prop, value in self.settings.items():
                cap.set(prop, value)
            try:
                while not stop.is_set():
                    ok, frame = cap.read()
                    if not ok or frame is None:
                        self._on_error("input_lost", f"{self.label}: no frame; reopening")
                        break
                    yield InputItem(source=f"{self.label}#{index}", data=frame)
                    index += 1
            finally:
                cap.release()
            stop.wait(self.reconnect_s)


def camera_source(config: CameraInputConfig, *, on_error: ErrorReporter) -> LiveCaptureSource:
    settings: dict[int, float] = {}
    if config.width:
        settings[cv2.CAP_PROP_FRAME_WIDTH] = config.width
    if config.height:
        settings[cv2.CAP_PROP_FRAME_HEIGHT] = config.height
    if config.fps:
        settings[cv2.CAP_PROP_FPS] = config.fps
    return LiveCaptureSource(
        config.index,
        label=f"camera{config.index}",
        reconnect_s=config.reconnect_s,
        on_error=on_error,
        settings=settings,
    )


def stream_source(config: StreamInputConfig, *, on_error: ErrorReporter) -> LiveCaptureSource:
    # The label never includes the URL's credentials (rtsp://user:pass@host/...).
    host = config.url.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]
    return LiveCaptureSource(
        config.url, label=f"stream:{host}", reconnect_s=config.reconnect_s, on_error=on_error
    )
