"""The running agent: the input pipeline, plus telemetry and updates.

Threads: ``input`` (reads the source and preprocesses), ``inference`` (infer + postprocess +
sink), ``telemetry`` (one summary per interval, :mod:`agent.telemetry_report`), ``updater``
(applies desired states), ``outbox`` (drains queued telemetry/events/state to the broker). MQTT
callbacks only decode and hand work over (the connection: :mod:`agent.link`).
:meth:`AgentService.run` returns when ``stop`` is set, after queueing ``agent.stopping``,
draining the outbox (bounded, only while connected), publishing ``status=offline`` and waiting
(bounded) for its acknowledgement.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.capture import Capturer, SampleQueue, Uploader
from agent.capture.counters import CaptureCounters
from agent.config import AgentConfig
from agent.datalock import DataDirLock
from agent.download_counters import DownloadCounters
from agent.engine import BackendOptions, LoadedModel, load_model
from agent.errors import AgentConfigError, AgentError
from agent.forwarder import Forwarder
from agent.inputs import InputSource, SourceContext, create_source
from agent.link import make_transport
from agent.memory import rss_mb
from agent.metrics import MetricsView, render
from agent.outbox import Outbox, OutboxError, OutboxStats
from agent.pipeline import Pipeline
from agent.probation import HealthMonitor
from agent.publisher import Publisher
from agent.sdnotify import SystemdNotifier
from agent.seq import SequenceCounter
from agent.shadow import ShadowRunner
from agent.signature import read_trusted_keys
from agent.sinks import ResultSink, SinkContext, create_sink
from agent.state import AgentState, ModelSlot, Snapshot
from agent.store import DataDir
from agent.telemetry import TelemetryCollector
from agent.telemetry_report import TelemetryReporter
from agent.updater import Updater
from edgefleet.contract import (
    Channel,
    ContractError,
    DesiredState,
    ModelRef,
    decode,
    topic,
)
from edgefleet.contract.payloads import EventKind
from edgefleet.mqtt import MqttError

log = logging.getLogger(__name__)

SHUTDOWN_ACK_TIMEOUT_S = 5.0
OUTBOX_FILE = "outbox.db"
CAPTURE_DIR = "capture"


class AgentService:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.device_id = config.device_id
        self.trusted_keys = read_trusted_keys(config.trusted_keys)
        # First: nothing in the data directory is touched while another agent owns it.
        self.lock = DataDirLock.acquire(config.data_dir)
        try:
            self._build(config)
        except BaseException:
            self.lock.release()
            raise

    def _build(self, config: AgentConfig) -> None:
        self.store = DataDir(config.data_dir)
        self.store.clear_downloads()
        self.seq = SequenceCounter(config.data_dir)
        self.collector = TelemetryCollector(device_id=self.device_id, data_dir=config.data_dir)
        self.slot = ModelSlot()
        self.monitor = HealthMonitor(config.probation)
        self.transport = make_transport(config, on_connect=self._on_connect)
        sink_context = SinkContext(
            device_id=self.device_id,
            transport=self.transport,
            next_seq=self.seq.next,
            on_drop=self._results_dropped,
        )
        self.sink: ResultSink | None = (
            create_sink(config.sink, context=sink_context) if config.sink else None
        )
        capture = config.capture
        self.capture_counters = CaptureCounters()
        self.sample_queue = SampleQueue(
            config.data_dir / CAPTURE_DIR,
            max_bytes=capture.max_bytes,
            on_drop=self.capture_counters.add,
        )
        self.capturer = Capturer(
            device_id=self.device_id,
            config=capture,
            queue=self.sample_queue,
            count=self.capture_counters.add,
            background=True,
        )
        self._policy_seq = -1
        self.uploader = Uploader(
            self.sample_queue,
            url=config.server_url.rstrip("/") + capture.upload_path,
            token=self._token,
            link_up=lambda: self.transport.connected,
            rate_per_s=capture.upload_rate_per_s,
            count=self.capture_counters.add,
            timeout_s=capture.upload_timeout_s,
        )
        self.shadow = ShadowRunner(capturer=self.capturer)
        self.pipeline = Pipeline(
            slot=self.slot,
            collector=self.collector,
            on_error=self._input_error,
            sink=self.sink,
            queue_size=config.engine.queue_size,
            monitor=self.monitor,
            batch_size=config.engine.batch_size,
            capturer=self.capturer,
            shadow=self.shadow,
        )
        self.source: InputSource | None = None
        if config.input is not None:
            context = SourceContext(
                on_error=self._input_error, health=self.health, metrics=self.metrics_text
            )
            self.source = create_source(config.input, context=context)
        try:
            outbox = Outbox(config.data_dir / OUTBOX_FILE, max_bytes=config.outbox.max_bytes)
        except OutboxError as err:
            raise AgentError(str(err)) from err
        self.forwarder = Forwarder(
            self.transport,
            outbox,
            rate_per_s=config.outbox.rate_per_s,
            batch=config.outbox.batch,
        )
        self.publisher = Publisher(
            self.transport,
            forwarder=self.forwarder,
            device_id=self.device_id,
            seq=self.seq,
            device_class=config.device_class,
        )
        self.state = AgentState(on_change=self.publisher.state)
        self.download_counters = DownloadCounters()
        self.updater = Updater(
            store=self.store,
            slot=self.slot,
            state=self.state,
            emit=self._emit,
            load=self._load,
            token=config.bearer_token,
            server_url=config.server_url,
            max_bundle_bytes=config.max_bundle_bytes,
            download_retry_s=config.download_retry_s,
            download_timeout=config.download_timeout_s,
            keep_artifacts=config.artifacts.keep,
            disk_bytes=(
                int(config.artifacts.disk_mb * 1024 * 1024)
                if config.artifacts.disk_mb is not None
                else None
            ),
            count_download=self.download_counters.add,
            postprocess=config.postprocess,
            monitor=self.monitor,
            shadow=self.shadow,
            load_shadow=self._load_shadow,
        )
        self._logged_kinds: set[str] = set()
        self.telemetry = TelemetryReporter(
            interval_s=config.telemetry.interval_s,
            slot=self.slot,
            collector=self.collector,
            capturer=self.capturer,
            shadow=self.shadow,
            forwarder=self.forwarder,
            publisher=self.publisher,
            capture_counters=self.capture_counters,
            download_counters=self.download_counters,
            sample_queue=self.sample_queue,
            on_interval=self._logged_kinds.clear,
        )
        self.notifier = SystemdNotifier()

    def _load(self, path: Path, *, threads: int | None = None) -> LoadedModel:
        engine = self.config.engine
        options = BackendOptions(
            threads=engine.threads if threads is None else threads,
            graph_optimization=engine.graph_optimization,
            execution_providers=tuple(engine.execution_providers),
            cpu_mem_arena=engine.cpu_mem_arena,
            mem_pattern=engine.mem_pattern,
            formats=tuple(engine.backends),
            memory_budget_mb=engine.memory_mb,
        )
        return load_model(path, options=options, trusted_keys=self.trusted_keys)

    def _load_shadow(self, path: Path) -> LoadedModel:
        """The shadow model: verified exactly as a serving one, run on one engine thread (it
        runs on its own thread beside serving, and its thread CPU time is then all of it)."""
        return self._load(path, threads=1)

    def _emit(
        self,
        kind: EventKind,
        *,
        model: ModelRef | None = None,
        detail: str = "",
        progress: float | None = None,
    ) -> None:
        """Publish an update event; a model that failed to load or update is also counted."""
        if kind in ("update.failed", "model.load_failed"):
            self.collector.record_error(kind.replace(".", "_"))
        self.publisher.event(kind, model=model, detail=detail, progress=progress)

    # -- device endpoints (HTTP source threads) ----------------------------------------------
    def health(self) -> tuple[bool, dict[str, Any]]:
        serving = self.slot.current
        snapshot = self.state.snapshot
        body = {
            "status": "ok" if serving is not None else "no_model",
            "model": str(serving.model.ref) if serving is not None else None,
            "phase": snapshot.phase,
        }
        return serving is not None, body

    def metrics_text(self) -> str:
        serving = self.slot.current
        try:
            outbox: OutboxStats | None = self.forwarder.stats()
        except OutboxError as err:
            log.warning("outbox stats unavailable", extra={"error": str(err)})
            outbox = None
        return render(
            MetricsView(
                totals=self.collector.totals(),
                model=str(serving.model.ref) if serving is not None else None,
                rss_mb=rss_mb(),
                outbox=outbox,
                drained=self.forwarder.drained,
                downloads=self.download_counters.totals(),
            )
        )

    # -- MQTT callbacks (network thread) -----------------------------------------------------
    def _on_connect(self) -> None:
        self.publisher.status("online")
        self.publisher.state(self.state.snapshot)

    def _on_desired(self, topic_name: str, payload: bytes, retained: bool) -> None:
        if not payload:
            return  # a cleared retained message
        try:
            desired = decode(Channel.DESIRED, payload, device_id=self.device_id)
        except (ContractError, RecursionError) as err:
            # RecursionError: json.loads on deeply nested input (the contract does not catch it).
            reason = str(err) if isinstance(err, ContractError) else "nested too deeply"
            self.collector.record_error("payload_rejected")
            self.publisher.event("payload.rejected", detail=f"desired: {reason}")
            return
        assert isinstance(desired, DesiredState)
        if desired.seq >= self._policy_seq:  # a stale retained message must not undo a newer one
            self._policy_seq = desired.seq
            self.capturer.set_policy(desired.capture)
        self.updater.offer(desired)

    # -- lifecycle ---------------------------------------------------------------------------
    def run(self, stop: threading.Event, *, on_running: Callable[[str], None]) -> int:
        """Serve until ``stop``; the data directory's lock is released when this returns."""
        try:
            return self._run(stop, on_running=on_running)
        finally:
            self.lock.release()

    def _run(self, stop: threading.Event, *, on_running: Callable[[str], None]) -> int:
        self.transport.subscribe(topic(self.device_id, Channel.DESIRED), self._on_desired)
        try:
            self.transport.start(wait=None)
        except MqttError as err:
            raise AgentError(str(err)) from err
        # Give the broker a moment before the first publishes, so they go out connected rather
        # than queued; a device without a broker serves anyway once this passes.
        deadline = time.monotonic() + self.config.mqtt.connect_wait_s
        while not stop.is_set() and time.monotonic() < deadline:
            if self.transport.wait_connected(0.1):
                break
        backlog = self.forwarder.stats()
        self.publisher.event(
            "agent.started",
            detail=f"data_dir={self.config.data_dir} outbox_backlog={backlog.messages}",
        )
        self.updater.load_committed()
        self._drain_stop = threading.Event()
        drain = threading.Thread(
            target=self.forwarder.run, args=(self._drain_stop,), name="outbox", daemon=True
        )
        drain.start()
        threads = [
            threading.Thread(target=self.updater.run, args=(stop,), name="updater"),
            threading.Thread(target=self.telemetry.run, args=(stop,), name="telemetry"),
            threading.Thread(target=self.pipeline.run, args=(stop,), name="inference"),
            threading.Thread(target=self.uploader.run, args=(stop,), name="uploader"),
            threading.Thread(target=self.capturer.writer.run, args=(stop,), name="capture"),
            threading.Thread(target=self.shadow.run, args=(stop,), name="shadow"),
        ]
        if self.source is not None:
            threads.append(
                threading.Thread(target=self._input_loop, args=(self.source, stop), name="input")
            )
        for thread in threads:
            thread.daemon = True
            thread.start()
        # Ready for systemd once serving, broker or not: a device must serve while offline.
        self.notifier.ready(f"serving model={self.state.snapshot.running or 'none'}")
        announced = False
        while not stop.is_set():
            if not announced and self.transport.wait_connected(0.2):
                announced = True
                running = self.state.snapshot.running
                on_running(f"edgefleet agent {self.device_id} running model={running or 'none'}")
            else:
                stop.wait(0.2)
            # A dead worker stops the watchdog pings (systemd restarts the agent); the input
            # may end, and the shadow must never cost serving a restart.
            if all(t.is_alive() for t in threads if t.name not in ("input", "shadow")):
                self.notifier.watchdog()  # the pings: systemd restarts the agent
        self.notifier.stopping()
        self._shutdown(threads, drain)
        return 0

    def _shutdown(self, threads: list[threading.Thread], drain: threading.Thread) -> None:
        log.info("stopping")
        self.updater.wake()
        for thread in threads:
            thread.join(timeout=5.0)
        if self.sink is not None:
            self.sink.close()  # before the connection goes: an MQTT sink flushes on it
        self.publisher.event("agent.stopping")
        deadline = time.monotonic() + SHUTDOWN_ACK_TIMEOUT_S
        flushed = self.forwarder.flush(SHUTDOWN_ACK_TIMEOUT_S)
        self._drain_stop.set()
        drain.join(timeout=2.0)
        self.publisher.status("offline")
        remaining = max(0.5, deadline - time.monotonic())
        stats = self.forwarder.stats()
        if not flushed or not self.transport.wait_published(remaining):
            log.warning(
                "not every message was acknowledged before shutdown",
                extra={"timeout_s": SHUTDOWN_ACK_TIMEOUT_S, "outbox_backlog": stats.messages},
            )
        self.transport.close()
        self.forwarder.close()

    # -- threads -------------------------------------------------------------------------------
    def _input_loop(self, source: InputSource, stop: threading.Event) -> None:
        """Feed the pipeline; a finished source (video end, batch done) is logged, not fatal."""
        self.pipeline.feed(source, stop)
        if not stop.is_set():
            log.info("input finished", extra={"source": type(source).__name__})

    def _results_dropped(self, count: int) -> None:
        for _ in range(count):
            self.collector.record_error("result_dropped")

    def _input_error(self, kind: str, detail: str) -> None:
        self.collector.record_error(kind)
        self._log_once(kind, detail)

    def _log_once(self, kind: str, detail: str) -> None:
        """Log the first error of each kind per telemetry interval (a bad file may loop)."""
        if kind not in self._logged_kinds:
            self._logged_kinds.add(kind)
            log.warning("input error", extra={"kind": kind, "detail": detail[:300]})

    def _token(self) -> str | None:
        try:
            return self.config.bearer_token()
        except AgentConfigError:
            return None  # an unreadable token file: the upload gets 401 and retries

    @property
    def snapshot(self) -> Snapshot:
        return self.state.snapshot
