"""The reconciler: make the served model match the retained desired state.

received → download (bounded, hashed) → unpack and verify → load + self-test → swap →
probation → commit pointer → committed. Every step is reported as an event; any failure reports
``update.failed`` with its reason and leaves the old model serving. With a
:class:`~agent.probation.HealthMonitor`, a model that replaced another serves on probation
first: healthy → ``update.committed`` and only then ``current.json``; unhealthy → the previous
model (still loaded) is swapped back at once and ``update.rolled_back`` names the reason. A stop
or crash during probation leaves ``current.json`` on the previous model. The pointer is written
marked "not announced" before ``update.committed`` is queued and unmarked after: a crash in
between sends the event at the next start (at least once).
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol
from urllib.parse import urljoin, urlsplit

from agent.engine import LoadedModel
from agent.errors import AgentError, UpdateError
from agent.faults import crash_point
from agent.memory import release_freed
from agent.plugin_config import PostprocessConfig
from agent.probation import HealthMonitor
from agent.shadow import ShadowRunner
from agent.state import AgentState, ModelSlot, Serving
from agent.store import DataDir
from edgefleet.artifact import ArtifactError, unpack_bundle
from edgefleet.contract import ContractError, DesiredModel, DesiredState, ModelRef, ShadowSpec
from edgefleet.contract.payloads import EventKind, Phase

log = logging.getLogger(__name__)


class EventEmitter(Protocol):
    def __call__(
        self,
        kind: EventKind,
        *,
        model: ModelRef | None = None,
        detail: str = "",
        progress: float | None = None,
    ) -> None: ...


class Updater:
    def __init__(
        self,
        *,
        store: DataDir,
        slot: ModelSlot,
        state: AgentState,
        emit: EventEmitter,
        load: Callable[[Path], LoadedModel],
        token: Callable[[], str],
        server_url: str,
        max_bundle_bytes: int,
        download_timeout: float = 30.0,
        download_retry_s: float = 0.0,
        keep_artifacts: int = 2,
        disk_bytes: int | None = None,
        count_download: Callable[[str, int], None] | None = None,
        postprocess: PostprocessConfig | None = None,
        monitor: HealthMonitor | None = None,
        shadow: ShadowRunner | None = None,
        load_shadow: Callable[[Path], LoadedModel] | None = None,
    ) -> None:
        self.store = store
        self.slot = slot
        self.state = state
        self._emit = emit
        self._load = load
        self._token = token
        self._server_url = server_url.rstrip("/") + "/"
        self._max_bundle = max_bundle_bytes
        self._timeout = download_timeout
        self._retry_s = download_retry_s
        self._keep = keep_artifacts
        self._disk_bytes = disk_bytes
        self._count_download = count_download
        self._post = postprocess
        self._last_seq: int | None = None
        self._pending: DesiredState | None = None
        self._cond = threading.Condition()
        self._monitor = monitor
        self._stop = threading.Event()
        self.shadow = shadow
        self._load_shadow = load_shadow or load

    # -- mailbox (called from the MQTT thread) -------------------------------------------
    def offer(self, desired: DesiredState) -> None:
        """Queue a desired state for :meth:`run`; a newer one replaces a waiting one."""
        with self._cond:
            if self._pending is None or desired.seq >= self._pending.seq:
                self._pending = desired
            self._cond.notify()

    def run(self, stop: threading.Event) -> None:
        self._stop = stop
        while not stop.is_set():
            with self._cond:
                if self._pending is None:
                    self._cond.wait(timeout=0.5)
                desired, self._pending = self._pending, None
            if desired is None:
                continue
            try:
                self.apply(desired)
            except Exception as err:  # a bug must not end the updater thread; report it
                log.exception("update crashed")
                self._fail(None, f"internal error: {type(err).__name__}: {err}")
            release_freed()  # a model loaded, refused or replaced leaves freed heap behind

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    # -- steps ---------------------------------------------------------------------------
    def load_committed(self) -> None:
        """At start: serve the committed model if its artifact still verifies."""
        committed = self.store.read_pointer()
        if committed is None:
            self.state.update(phase="idle")
            return
        try:
            serving = Serving.of(self._load(committed.path), self._post)
        except (AgentError, OSError) as err:
            reason = f"committed model {committed.ref} not served: {err}"
            log.error("committed model failed to load", extra={"error": str(err)})
            self.state.update(phase="failed", last_error=reason[:2000])
            self._emit("model.load_failed", model=committed.ref, detail=reason[:2000])
            return
        self.slot.swap(serving)
        release_freed()  # the session's load temporaries
        ref = serving.model.ref
        self.state.update(phase="serving", running=ref, desired=ref)
        log.info("serving committed model", extra={"model": str(ref)})
        if not committed.announced:  # the agent stopped between the commit and its event
            self._emit("update.committed", model=ref, detail="committed before a restart")
            self._write_pointer(ref)

    def _write_pointer(self, ref: ModelRef, *, announced: bool = True) -> None:
        try:
            self.store.write_pointer(ref, announced=announced)
        except OSError as err:
            log.error("cannot write the model pointer", extra={"error": str(err)})

    def apply(self, desired: DesiredState) -> None:
        """Act on one desired state (synchronously): the serving model first, then the
        shadow (which never changes what is served, whatever happens to it)."""
        if self._last_seq is not None and desired.seq <= self._last_seq:
            log.info("ignoring old desired state", extra={"seq": desired.seq})
            return
        self._last_seq = desired.seq
        self._apply_model(desired)
        if self.shadow is not None and not self._stop.is_set():
            self._apply_shadow(desired.shadow)

    def _apply_model(self, desired: DesiredState) -> None:
        target = desired.model
        running = self.slot.current.model.ref if self.slot.current else None
        if target is None:
            self._unload(running)
            return
        try:
            ref = target.ref
        except ContractError as err:
            detail = f"desired model has an invalid name or version: {err}"
            self._fail(None, detail)
            return
        self.state.update(desired=ref)
        if ref == running:
            self.state.update(phase="serving", last_error=None)
            return
        self._emit("update.received", model=ref, detail=f"desired seq {desired.seq}")
        try:
            serving = self._prepare(target, ref)
        except (AgentError, ArtifactError, OSError) as err:
            self._fail(ref, str(err))
            return
        crash_point("before_switch")
        self._emit("update.switching", model=ref)
        old = self.slot.swap(serving)
        crash_point("after_switch")
        if old is not None and self._monitor is not None and self._monitor.config.enabled:
            verdict = self._probation(ref, old)
            if verdict is None:
                return  # stopping: current.json still names the previous model
            passed, reason = verdict
            if not passed:
                self._roll_back(ref, old, reason)
                return
        crash_point("before_commit")
        self._write_pointer(ref, announced=False)
        crash_point("after_commit")
        self.state.update(phase="serving", running=ref, last_error=None)
        self._emit("update.committed", model=ref)  # queued in the outbox: durable from here
        self._write_pointer(ref)
        log.info("model committed", extra={"model": str(ref)})
        keep = [ref] + ([old.model.ref] if old is not None else [])
        # The shadow's artifact is not the serving slots' to prune: it always stays.
        shadow = self.shadow.ref if self.shadow is not None else None
        self.store.prune(
            keep,
            max_count=self._keep,
            max_bytes=self._disk_bytes,
            always=[shadow] if shadow is not None else [],
        )

    def _probation(self, ref: ModelRef, old: Serving) -> tuple[bool, str] | None:
        """Serve ``ref`` until the monitor decides; None if the agent stops first."""
        assert self._monitor is not None
        self.state.update(phase="probation", running=ref, last_error=None)
        self._monitor.begin(ref)
        while (verdict := self._monitor.verdict()) is None:
            if self._stop.wait(0.05):
                self._monitor.end(committed=False)
                log.warning("stopped during probation", extra={"model": str(ref)})
                return None
        self._monitor.end(committed=verdict[0])
        log.info("probation over", extra={"model": str(ref), "passed": verdict[0]})
        return verdict

    def _roll_back(self, ref: ModelRef, old: Serving, reason: str) -> None:
        self.slot.swap(old)
        previous = old.model.ref
        detail = f"{reason}; serving {previous} again"[:2000]
        log.error("update rolled back", extra={"model": str(ref), "error": detail})
        # Gone before anyone hears of the rollback (a test, or an operator, may look at once).
        shutil.rmtree(self.store.artifact_dir(ref), ignore_errors=True)
        self.state.update(phase="serving", running=previous, last_error=detail)
        self._emit("update.rolled_back", model=ref, detail=detail)

    def _prepare(
        self,
        target: DesiredModel,
        ref: ModelRef,
        *,
        load: Callable[[Path], LoadedModel] | None = None,
        report: bool = True,
    ) -> Serving:
        """Download (unless on disk), verify, load and self-test ``target``. ``report=False``
        (a shadow): the same steps, with no phase change and no update events, since the
        device's state and events are about what it serves."""
        load = load or self._load
        dest = self.store.artifact_dir(ref)
        if dest.exists():
            self._step("loading", "update.self_test", ref, "artifact already on disk", report)
            try:
                return Serving.of(load(dest), self._post)
            except AgentError as err:
                log.warning("re-fetching unusable artifact", extra={"error": str(err)})
                shutil.rmtree(dest, ignore_errors=True)
        self._fetch(target, ref, dest, report=report)
        self._step("loading", "update.self_test", ref, "", report)
        try:
            return Serving.of(load(dest), self._post)
        except AgentError:
            shutil.rmtree(dest, ignore_errors=True)
            raise

    def _step(
        self,
        phase: Phase,
        kind: EventKind,
        ref: ModelRef,
        detail: str,
        report: bool,
        progress: float | None = None,
    ) -> None:
        if report:
            self.state.update(phase=phase)
            self._emit(kind, model=ref, detail=detail, progress=progress)

    def _fetch(self, target: DesiredModel, ref: ModelRef, dest: Path, *, report: bool) -> None:
        if target.size > self._max_bundle:
            raise UpdateError(f"bundle of {target.size} bytes exceeds max_bundle_bytes")
        if self._disk_bytes is not None:
            # The bundle and its unpacked files beside the serving model (the rest is pruned
            # after the commit) must fit the budget.
            serving = self.slot.current
            held = self.store.artifact_bytes(serving.model.ref) if serving is not None else 0
            if held + 2 * target.size > self._disk_bytes:
                raise UpdateError(
                    f"bundle of {target.size} bytes does not fit the disk budget "
                    f"(artifacts.disk_mb: {self._disk_bytes} bytes, {held} held by the serving "
                    "model, the bundle and its unpacked files need twice its size)"
                )
        free = shutil.disk_usage(self.store.root).free
        # The bundle and its unpacked files coexist for a moment; leave room for both and more.
        if target.size * 3 > free:
            raise UpdateError(f"not enough disk: bundle {target.size} bytes, {free} free")
        url = urljoin(self._server_url, target.url)
        self._step("downloading", "update.downloading", ref, "", report, 0.0)
        # Imported on the first download: urllib.request, http.client and email are ~1 MB of
        # RSS an agent that is not updating does not need.
        from agent.download import RetryPolicy, download, part_files

        dest_bundle = self.store.downloads / f"{target.sha256}.tar.gz"
        # One bundle on disk at a time: its part (and the part's validator) and itself.
        self.store.clear_downloads(keep=(*part_files(dest_bundle), dest_bundle))
        bundle = download(
            url=url,
            token=self._token() if self._same_origin(url) else None,
            dest=dest_bundle,
            size=target.size,
            sha256=target.sha256,
            timeout=self._timeout,
            count=self._count_download,
            retry=RetryPolicy(window_s=self._retry_s),
            stop=self._stop,
        )
        crash_point("after_download")
        self._step("verifying", "update.verifying", ref, "", report, 1.0)
        try:
            manifest = unpack_bundle(bundle, dest, max_unpacked_bytes=self._max_bundle * 4)
        except ArtifactError as err:
            raise UpdateError(f"bad bundle: {err}") from err
        finally:
            bundle.unlink(missing_ok=True)
        if manifest.ref != ref:
            shutil.rmtree(dest, ignore_errors=True)
            raise UpdateError(f"bundle holds {manifest.ref}, not the desired {ref}")
        crash_point("after_verify")

    def _apply_shadow(self, spec: ShadowSpec | None) -> None:
        """Load, keep or unload the shadow model. Fetched and verified by the same steps as a
        serving model (:meth:`_prepare`), kept in its own runner, never in the serving slot; a
        failure is counted in the shadow report and leaves serving as it was."""
        runner = self.shadow
        assert runner is not None
        current = runner.current
        if spec is None:
            gone = runner.unload()
            if gone is not None:
                log.info("shadow removed", extra={"model": str(gone)})
                self._drop_shadow_artifact(gone)
            return
        try:
            ref = spec.ref
        except ContractError as err:
            log.error("shadow has an invalid name or version", extra={"error": str(err)})
            return
        limits = {"sample_rate": spec.sample_rate, "cpu_budget": spec.cpu_budget}
        if current is not None and current.model.ref == ref:
            runner.set_limits(**limits)
            return
        try:
            if self._serving_uses(ref):  # its artifact is the serving one's: load, never delete
                serving = Serving.of(self._load_shadow(self.store.artifact_dir(ref)), self._post)
            else:
                serving = self._prepare(spec, ref, load=self._load_shadow, report=False)
        except (AgentError, ArtifactError, OSError) as err:
            log.error("shadow not loaded", extra={"model": str(ref), "error": str(err)[:300]})
            gone = runner.unload()
            runner.failed(ref, "load_failed")
            if gone is not None:
                self._drop_shadow_artifact(gone)
            return
        runner.load(serving, **limits)
        log.info("shadow loaded", extra={"model": str(ref), **limits})
        if current is not None:
            self._drop_shadow_artifact(current.model.ref)

    def _drop_shadow_artifact(self, ref: ModelRef) -> None:
        """Delete a former shadow's artifact unless the serving model uses it (disk budget)."""
        if not self._serving_uses(ref):
            shutil.rmtree(self.store.artifact_dir(ref), ignore_errors=True)

    def _serving_uses(self, ref: ModelRef) -> bool:
        """Is ``ref`` the served or the committed model (whose artifact is not the shadow's)?"""
        serving = self.slot.current
        committed = self.store.read_pointer()
        return (serving is not None and serving.model.ref == ref) or (
            committed is not None and committed.ref == ref
        )

    def _same_origin(self, url: str) -> bool:
        """The device token goes to the fleet server only, never to a third-party host."""
        a, b = urlsplit(url), urlsplit(self._server_url)
        return (a.scheme, a.hostname, a.port) == (b.scheme, b.hostname, b.port)

    def _unload(self, running: ModelRef | None) -> None:
        if running is None:
            self.state.update(phase="idle", desired=None)
            return
        self.slot.swap(None)
        self.store.write_pointer(None)
        self.state.update(phase="idle", running=None, desired=None, last_error=None)
        self._emit("update.committed", detail="desired state has no model; serving none")

    def _fail(self, ref: ModelRef | None, reason: str) -> None:
        reason = reason.replace("\n", " ")[:2000]
        log.error("update failed", extra={"model": str(ref), "error": reason})
        phase = "serving" if self.slot.current is not None else "failed"
        self.state.update(phase=phase, last_error=reason)
        self._emit("update.failed", model=ref, detail=reason)
