"""The running agent: input → bounded queue → inference worker, plus telemetry and updates.

Threads: ``input`` (reads the source), ``inference`` (preprocess + infer + count), ``telemetry``
(one summary per interval), ``updater`` (applies desired states). MQTT callbacks only decode and
hand work over. :meth:`AgentService.run` returns when ``stop`` is set, after publishing
``agent.stopping`` and ``status=offline`` and waiting (bounded) for their acknowledgement.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path

from agent.config import AgentConfig
from agent.engine import BackendOptions, LoadedModel, load_model
from agent.errors import AgentConfigError, AgentError, InferenceError, InputError
from agent.inputs import InputItem, create_source
from agent.publisher import Publisher, status_payload
from agent.sdnotify import SystemdNotifier
from agent.seq import SequenceCounter
from agent.state import AgentState, ModelSlot, Snapshot
from agent.store import DataDir
from agent.telemetry import TelemetryCollector
from agent.updater import Updater
from edgefleet.contract import Channel, ContractError, DesiredState, decode, topic
from edgefleet.mqtt import BrokerAddress, MqttError, MqttTransport

log = logging.getLogger(__name__)

SHUTDOWN_ACK_TIMEOUT_S = 5.0


class AgentService:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.device_id = config.device_id
        self.trusted_keys = _read_keys(config.trusted_keys)
        self.store = DataDir(config.data_dir)
        self.store.clear_downloads()
        self.seq = SequenceCounter(config.data_dir)
        self.collector = TelemetryCollector(device_id=self.device_id, data_dir=config.data_dir)
        self.slot = ModelSlot()
        self.queue: queue.Queue[InputItem] = queue.Queue(maxsize=config.engine.queue_size)
        self.transport = MqttTransport(
            _broker(config),
            client_id=f"edgefleet-agent-{self.device_id}",
            will=(topic(self.device_id, Channel.STATUS), status_payload(self.device_id, "offline")),
            on_connect=self._on_connect,
            keepalive=config.mqtt.keepalive,
        )
        self.publisher = Publisher(
            self.transport,
            device_id=self.device_id,
            seq=self.seq,
            device_class=config.device_class,
        )
        self.state = AgentState(on_change=self.publisher.state)
        self.updater = Updater(
            store=self.store,
            slot=self.slot,
            state=self.state,
            emit=self.publisher.event,
            load=self._load,
            token=config.bearer_token,
            server_url=config.server_url,
            max_bundle_bytes=config.max_bundle_bytes,
        )
        self._logged_kinds: set[str] = set()
        self.notifier = SystemdNotifier()

    def _load(self, path: Path) -> LoadedModel:
        options = BackendOptions(threads=self.config.engine.threads)
        return load_model(path, options=options, trusted_keys=self.trusted_keys)

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
        self.updater.offer(desired)

    # -- lifecycle ---------------------------------------------------------------------------
    def run(self, stop: threading.Event, *, on_running: Callable[[str], None]) -> int:
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
        self.publisher.event("agent.started", detail=f"data_dir={self.config.data_dir}")
        self.updater.load_committed()
        threads = [
            threading.Thread(target=self.updater.run, args=(stop,), name="updater"),
            threading.Thread(target=self._telemetry_loop, args=(stop,), name="telemetry"),
            threading.Thread(target=self._inference_loop, args=(stop,), name="inference"),
        ]
        if self.config.input is not None:
            threads.append(threading.Thread(target=self._input_loop, args=(stop,), name="input"))
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
            if all(t.is_alive() for t in threads):  # a dead worker stops the pings: systemd
                self.notifier.watchdog()  # restarts the agent
        self.notifier.stopping()
        self._shutdown(threads)
        return 0

    def _shutdown(self, threads: list[threading.Thread]) -> None:
        log.info("stopping")
        self.updater.wake()
        for thread in threads:
            thread.join(timeout=5.0)
        self.publisher.event("agent.stopping")
        self.publisher.status("offline")
        if not self.transport.wait_published(SHUTDOWN_ACK_TIMEOUT_S):
            log.warning(
                "not every message was acknowledged before shutdown",
                extra={"timeout_s": SHUTDOWN_ACK_TIMEOUT_S},
            )
        self.transport.close()

    # -- threads -------------------------------------------------------------------------------
    def _input_loop(self, stop: threading.Event) -> None:
        assert self.config.input is not None
        source = create_source(self.config.input, on_error=self._input_error)
        while not stop.is_set() and not self.slot.ready.wait(0.2):
            pass
        for item in source.items(stop):
            while not self.slot.ready.wait(0.2):
                if stop.is_set():
                    return
            try:
                self.queue.put_nowait(item)
            except queue.Full:
                try:
                    self.queue.get_nowait()  # drop the oldest: fresh inputs matter more
                    self.collector.record_dropped()
                except queue.Empty:
                    pass
                self.queue.put_nowait(item)

    def _input_error(self, kind: str, detail: str) -> None:
        self.collector.record_error(kind)
        self._log_once(kind, detail)

    def _log_once(self, kind: str, detail: str) -> None:
        """Log the first error of each kind per telemetry interval (a bad file may loop)."""
        if kind not in self._logged_kinds:
            self._logged_kinds.add(kind)
            log.warning("input error", extra={"kind": kind, "detail": detail[:300]})

    def _inference_loop(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                item = self.queue.get(timeout=0.2)
            except queue.Empty:
                continue
            serving = self.slot.current  # one reference per item: a swap never splits an item
            if serving is None:
                self.collector.record_dropped()
                continue
            try:
                batch = {serving.preprocess.tensor.name: serving.preprocess(item.data)}
                start = time.perf_counter()
                outputs = serving.model.infer(batch)
                elapsed_ms = (time.perf_counter() - start) * 1000.0
            except InputError as err:
                self._input_error(err.kind, f"{item.source}: {err}")
                continue
            except InferenceError as err:
                self._input_error("inference", f"{item.source}: {err}")
                continue
            except Exception:  # a bug must not end the worker: count it, log it, go on
                self.collector.record_error("internal")
                log.exception("inference crashed", extra={"source": item.source})
                continue
            top = serving.model.top1(outputs)
            self.collector.record_inference(elapsed_ms, float(top[1][0]) if top else None)

    def _telemetry_loop(self, stop: threading.Event) -> None:
        interval = self.config.telemetry.interval_s
        next_at = time.monotonic() + interval
        while not stop.wait(max(0.0, next_at - time.monotonic())):
            next_at += interval
            self.publish_telemetry()

    def publish_telemetry(self) -> None:
        serving = self.slot.current
        self._logged_kinds.clear()
        payload = self.collector.flush(
            seq=self.seq.next(),
            model=serving.model.ref if serving else None,
            classifier=serving is not None and serving.model.scores_output is not None,
        )
        self.publisher.telemetry(payload)

    @property
    def snapshot(self) -> Snapshot:
        return self.state.snapshot


def _broker(config: AgentConfig) -> BrokerAddress:
    m = config.mqtt
    try:
        address = BrokerAddress.from_url(m.url, ca_file=str(m.ca_file) if m.ca_file else None)
    except MqttError as err:
        raise AgentConfigError(f"mqtt.url: {err}") from err
    if m.username is not None:
        password = m.password.get_secret_value() if m.password else None
        address = BrokerAddress(
            host=address.host,
            port=address.port,
            username=m.username,
            password=password,
            tls=address.tls,
            ca_file=address.ca_file,
        )
    return address


def _read_keys(paths: list[Path]) -> list[bytes]:
    """Read and check the trusted public keys now, so a bad key fails at start-up."""
    if not paths:
        return []
    from edgefleet.signing import SignatureError, load_public_key

    keys = []
    for path in paths:
        try:
            pem = path.read_bytes()[: 64 * 1024]
            load_public_key(pem)
        except OSError as err:
            raise AgentConfigError(f"trusted_keys: cannot read {path}: {err.strerror}") from err
        except SignatureError as err:
            raise AgentConfigError(f"trusted_keys: {path}: {err}") from err
        keys.append(pem)
    return keys
