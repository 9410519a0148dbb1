"""The telemetry summary the agent publishes once per interval: the collector's counters and
timings for the serving model, its input statistics and shadow report, and the device's own
gauges beside them (outbox backlog and drops, capture and download counters, the capture
stride and queue)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from agent.capture import Capturer, SampleQueue
from agent.capture.counters import CaptureCounters
from agent.download_counters import DownloadCounters
from agent.forwarder import Forwarder
from agent.publisher import Publisher
from agent.shadow import ShadowRunner
from agent.state import ModelSlot
from agent.telemetry import TelemetryCollector
from edgefleet.contract import MAX_PAYLOAD_BYTES, Telemetry, encode


class TelemetryReporter:
    def __init__(
        self,
        *,
        interval_s: float,
        slot: ModelSlot,
        collector: TelemetryCollector,
        capturer: Capturer,
        shadow: ShadowRunner,
        forwarder: Forwarder,
        publisher: Publisher,
        capture_counters: CaptureCounters,
        download_counters: DownloadCounters,
        sample_queue: SampleQueue,
        on_interval: Callable[[], object],
    ) -> None:
        self.interval_s = interval_s
        self.slot = slot
        self.collector = collector
        self.capturer = capturer
        self.shadow = shadow
        self.forwarder = forwarder
        self.publisher = publisher
        self.capture_counters = capture_counters
        self.download_counters = download_counters
        self.sample_queue = sample_queue
        #: Called as each summary is built (the agent logs each input error kind once per
        #: interval).
        self.on_interval = on_interval

    def run(self, stop: threading.Event) -> None:
        """One summary per interval until ``stop`` (the ``telemetry`` thread)."""
        interval = self.interval_s
        next_at = time.monotonic() + interval
        while not stop.wait(max(0.0, next_at - time.monotonic())):
            next_at += interval
            self.publish()

    def publish(self) -> None:
        serving = self.slot.current
        self.on_interval()

        def build(seq: int) -> Telemetry:
            payload = self.collector.flush(
                seq=seq,
                model=serving.model.ref if serving else None,
                classifier=serving is not None and serving.model.scores_output is not None,
                inputs=self.capturer.inputs.flush(),
                labels=serving.model.manifest.labels if serving is not None else (),
                shadow=self.shadow.flush(),
            )
            backlog = self.forwarder.stats()
            dropped = backlog.dropped_telemetry + backlog.dropped_events + backlog.dropped_state
            system = {
                **payload.system,
                "outbox_messages": float(backlog.messages),
                "outbox_dropped": float(dropped),
                **self.capture_counters.flush(),
                **self.download_counters.flush(),
                "capture.every": float(self.capturer.every),
                "capture.queued": float(len(self.sample_queue)),
                "capture.queued_bytes": float(self.sample_queue.total_bytes),
            }
            update: dict[str, Any] = {}
            if payload.inputs is not None and len(encode(payload)) > MAX_PAYLOAD_BYTES:
                # 64 channels x 256 bins can outgrow a payload: send the rest, say why.
                update["inputs"] = None
                system["capture.input_stats_too_big"] = 1.0
            return payload.model_copy(update={**update, "system": system})

        self.publisher.telemetry(build)
