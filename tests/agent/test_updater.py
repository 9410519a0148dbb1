"""The updater against a real HTTP server (stdlib http.server) serving real bundles."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agent.engine import BackendOptions, LoadedModel, load_model
from agent.state import AgentState, ModelSlot, Serving, Snapshot
from agent.store import POINTER_FILE, DataDir
from agent.updater import Updater
from edgefleet.contract import DesiredModel, DesiredState, ModelRef
from tests.agent.helpers import BundleServer, raw_tar_gz, rehash, serve_bundles
from tests.utils.artifacts import bundle_of

TOKEN = secrets.token_hex(8)
V1 = ModelRef(name="digits", version="1.0.0")
V2 = ModelRef(name="digits", version="2.0.0")


@dataclass
class Harness:
    updater: Updater
    slot: ModelSlot
    state: AgentState
    store: DataDir
    server: BundleServer
    events: list[dict[str, Any]] = field(default_factory=list)
    states: list[Snapshot] = field(default_factory=list)
    seq: int = 0

    def desired(
        self, path: str, data: bytes, *, ref: ModelRef = V2, sha: str | None = None, size: int = 0
    ) -> DesiredState:
        self.server.files[path] = data
        self.seq += 1
        model = DesiredModel(
            name=ref.name,
            version=ref.version,
            url=f"{self.server.url}{path}",
            sha256=sha or hashlib.sha256(data).hexdigest(),
            size=size or len(data),
        )
        return DesiredState(device_id="dev-1", seq=self.seq, model=model)

    def kinds(self) -> list[str]:
        return [e["kind"] for e in self.events]

    def running(self) -> ModelRef | None:
        return self.slot.current.model.ref if self.slot.current else None


def _load(path: Path) -> LoadedModel:
    return load_model(path, options=BackendOptions())


def make_harness(
    data_dir: Path,
    server: BundleServer,
    *,
    max_bundle: int = 10**8,
    retry_s: float = 0.0,
    count: Callable[[str, int], None] | None = None,
    keep: int = 2,
    disk_bytes: int | None = None,
) -> Harness:
    store = DataDir(data_dir)
    slot = ModelSlot()
    h = Harness(updater=None, slot=slot, state=AgentState(), store=store, server=server)  # type: ignore[arg-type]
    h.state.on_change = h.states.append

    def emit(kind: str, *, model: ModelRef | None = None, detail: str = "", **kw: Any) -> None:
        h.events.append({"kind": kind, "model": model, "detail": detail, **kw})

    h.updater = Updater(
        store=store,
        slot=slot,
        state=h.state,
        emit=emit,
        load=_load,
        token=lambda: TOKEN,
        server_url=server.url,
        max_bundle_bytes=max_bundle,
        download_timeout=5.0,
        download_retry_s=retry_s,
        count_download=count,
        keep_artifacts=keep,
        disk_bytes=disk_bytes,
    )
    return h


@pytest.fixture
def server() -> Iterator[BundleServer]:
    with serve_bundles(TOKEN) as s:
        yield s


@pytest.fixture
def serving_v1(tmp_path: Path, server: BundleServer, digits_v1: Path) -> Harness:
    """An updater that has committed v1 through a real download."""
    h = make_harness(tmp_path / "data", server)
    bundle = bundle_of(digits_v1, tmp_path / "v1.tar.gz").read_bytes()
    h.updater.apply(h.desired("/v1.tar.gz", bundle, ref=V1))
    assert h.running() == V1, h.events
    h.events.clear()
    return h


def bundle_bytes(artifact: Path, tmp_path: Path, name: str = "b.tar.gz") -> bytes:
    return bundle_of(artifact, tmp_path / name).read_bytes()


def assert_failed_and_v1_serving(h: Harness, reason: str, *, part_kept: bool = False) -> None:
    assert h.kinds()[-1] == "update.failed", h.kinds()
    assert reason in h.events[-1]["detail"], h.events[-1]["detail"]
    assert h.running() == V1
    snap = h.state.snapshot
    assert snap.running == V1 and snap.phase == "serving"
    assert snap.last_error is not None and reason in snap.last_error
    parts = [p.name for p in h.store.downloads.iterdir()]
    assert all(p.endswith(".part") for p in parts) and bool(parts) == part_kept, parts
    assert not h.store.artifact_dir(V2).exists()
    assert json.loads((h.store.root / POINTER_FILE).read_text())["version"] == "1.0.0"


def test_update_commits_and_survives_restart(
    serving_v1: Harness, digits_v2: Path, tmp_path: Path
) -> None:
    h = serving_v1
    old = h.slot.current
    h.updater.apply(h.desired("/v2.tar.gz", bundle_bytes(digits_v2, tmp_path)))
    assert h.kinds() == [
        "update.received",
        "update.downloading",
        "update.verifying",
        "update.self_test",
        "update.switching",
        "update.committed",
    ]
    assert h.running() == V2 and h.slot.current is not old
    assert h.state.snapshot == Snapshot(phase="serving", running=V2, desired=V2, last_error=None)
    assert [s.phase for s in h.states][-4:] == ["downloading", "verifying", "loading", "serving"]
    pointer = json.loads((h.store.root / POINTER_FILE).read_text())
    assert pointer == {"name": "digits", "version": "2.0.0", "path": "artifacts/digits/2.0.0"}
    assert h.server.requests[-1] == ("/v2.tar.gz", f"Bearer {TOKEN}")
    # The old model object still answers (an in-flight inference completes on it).
    assert old is not None and old.model.ref == V1

    restarted = make_harness(h.store.root, h.server)
    restarted.updater.load_committed()
    assert restarted.running() == V2 and restarted.state.snapshot.phase == "serving"
    assert restarted.events == []  # announced before the restart: nothing to say again


def test_a_commit_cut_off_before_its_event_is_announced_at_the_next_start(
    serving_v1: Harness, digits_v2: Path, tmp_path: Path
) -> None:
    h = serving_v1
    h.updater.apply(h.desired("/v2.tar.gz", bundle_bytes(digits_v2, tmp_path)))
    # As if the agent died between writing the pointer and queueing update.committed.
    h.store.write_pointer(V2, announced=False)
    assert json.loads((h.store.root / POINTER_FILE).read_text())["announced"] is False
    restarted = make_harness(h.store.root, h.server)
    restarted.updater.load_committed()
    assert restarted.running() == V2
    assert restarted.kinds() == ["update.committed"]
    assert restarted.events[0]["model"] == V2
    assert "announced" not in json.loads((h.store.root / POINTER_FILE).read_text())
    again = make_harness(h.store.root, h.server)
    again.updater.load_committed()
    assert again.events == []  # once


def test_same_model_and_old_seq_are_ignored(serving_v1: Harness, tmp_path: Path) -> None:
    h = serving_v1
    h.updater.apply(h.desired("/again", b"unused", ref=V1))
    assert h.events == []
    stale = h.desired("/v2", b"whatever")
    h.updater.apply(stale.model_copy(update={"seq": 0}))
    assert h.events == [] and h.running() == V1


def test_bad_sha_is_refused(serving_v1: Harness, digits_v2: Path, tmp_path: Path) -> None:
    h = serving_v1
    h.updater.apply(h.desired("/v2", bundle_bytes(digits_v2, tmp_path), sha="0" * 64))
    assert_failed_and_v1_serving(h, "sha256 does not match")


def test_truncated_download_is_refused(
    serving_v1: Harness, digits_v2: Path, tmp_path: Path
) -> None:
    h = serving_v1
    data = bundle_bytes(digits_v2, tmp_path)
    h.server.truncate["/v2"] = len(data) // 2
    desired = h.desired("/v2", data)
    h.updater.apply(desired)
    # The half that arrived is kept to resume; this server ignores Range, so the retry
    # (a newer desired state for the same bundle) starts over with its full 200 body.
    assert_failed_and_v1_serving(h, "bundle truncated", part_kept=True)
    del h.server.truncate["/v2"]
    h.updater.apply(desired.model_copy(update={"seq": desired.seq + 1}))
    assert h.running() == V2, h.events
    assert list(h.store.downloads.iterdir()) == []


def test_size_mismatch_is_refused(serving_v1: Harness, digits_v2: Path, tmp_path: Path) -> None:
    h = serving_v1
    data = bundle_bytes(digits_v2, tmp_path)
    h.updater.apply(h.desired("/v2", data, size=len(data) - 10))
    assert_failed_and_v1_serving(h, f"server announces {len(data)} bytes")


def test_wrong_token_gives_401(serving_v1: Harness, digits_v2: Path, tmp_path: Path) -> None:
    h = serving_v1
    h.server.token = secrets.token_hex(8)
    h.updater.apply(h.desired("/v2", bundle_bytes(digits_v2, tmp_path)))
    assert_failed_and_v1_serving(h, "HTTP 401")


def test_missing_bundle_gives_404(serving_v1: Harness) -> None:
    h = serving_v1
    desired = h.desired("/v2", b"x" * 10)
    del h.server.files["/v2"]
    h.updater.apply(desired)
    assert_failed_and_v1_serving(h, "HTTP 404")


def test_token_is_not_sent_to_other_hosts(
    serving_v1: Harness, digits_v2: Path, tmp_path: Path
) -> None:
    h = serving_v1
    desired = h.desired("/v2", bundle_bytes(digits_v2, tmp_path))
    assert desired.model is not None
    other_origin = desired.model.url.replace("127.0.0.1", "localhost")
    h.updater.apply(
        desired.model_copy(update={"model": desired.model.model_copy(update={"url": other_origin})})
    )
    assert h.server.requests[-1] == ("/v2", None)
    assert_failed_and_v1_serving(h, "HTTP 401")


def test_relative_url_resolves_against_server(
    serving_v1: Harness, digits_v2: Path, tmp_path: Path
) -> None:
    h = serving_v1
    desired = h.desired("/api/bundles/v2", bundle_bytes(digits_v2, tmp_path))
    assert desired.model is not None
    relative = desired.model.model_copy(update={"url": "/api/bundles/v2"})
    h.updater.apply(desired.model_copy(update={"model": relative}))
    assert h.running() == V2


@pytest.mark.parametrize(
    ("members", "symlink", "reason"),
    [
        ({"../evil": b"x", "manifest.json": b"{}"}, None, "escapes the artifact directory"),
        ({"manifest.json": b"{}"}, ("model.onnx", "/etc/passwd"), "not a regular file"),
        ({"manifest.json": b"not json"}, None, "not valid JSON"),
        ({"model.onnx": b"x"}, None, "has no manifest.json"),
    ],
)
def test_hostile_bundles_are_refused(
    serving_v1: Harness,
    members: dict[str, bytes],
    symlink: tuple[str, str] | None,
    reason: str,
) -> None:
    h = serving_v1
    h.updater.apply(h.desired("/evil", raw_tar_gz(members, symlink=symlink)))
    assert_failed_and_v1_serving(h, reason)
    assert not (h.store.root / "evil").exists()


def test_not_a_tarball_is_refused(serving_v1: Harness) -> None:
    h = serving_v1
    h.updater.apply(h.desired("/junk", b"\x1f\x8b" + b"garbage" * 50))
    assert_failed_and_v1_serving(h, "bad bundle")


def test_bundle_for_another_version_is_refused(
    serving_v1: Harness, digits_v1: Path, tmp_path: Path
) -> None:
    h = serving_v1
    h.updater.apply(h.desired("/v1-as-v2", bundle_bytes(digits_v1, tmp_path)))
    assert_failed_and_v1_serving(h, "bundle holds digits@1.0.0, not the desired digits@2.0.0")


def test_failing_self_test_is_refused(serving_v1: Harness, digits_v2: Path, tmp_path: Path) -> None:
    import shutil

    import numpy as np

    broken = Path(shutil.copytree(digits_v2, tmp_path / "broken"))
    with np.load(broken / "selftest.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["output/probabilities"] = np.zeros_like(arrays["output/probabilities"])
    np.savez(broken / "selftest.npz", **arrays)
    rehash(broken)
    h = serving_v1
    h.updater.apply(h.desired("/broken", bundle_bytes(broken, tmp_path)))
    assert_failed_and_v1_serving(h, "self-test output 'probabilities' differs")


def test_oversized_bundle_is_not_downloaded(tmp_path: Path, server: BundleServer) -> None:
    h = make_harness(tmp_path / "data", server, max_bundle=100)
    h.updater.apply(h.desired("/big", b"x" * 101))
    assert h.kinds() == ["update.received", "update.failed"]
    assert "exceeds max_bundle_bytes" in h.events[-1]["detail"]
    assert h.server.requests == []
    assert h.state.snapshot.phase == "failed"


def test_invalid_model_name_is_refused(tmp_path: Path, server: BundleServer) -> None:
    h = make_harness(tmp_path / "data", server)
    desired = h.desired("/x", b"x", ref=ModelRef(name="ok", version="1"))
    assert desired.model is not None
    bad = desired.model.model_copy(update={"name": "../../etc"})
    h.updater.apply(desired.model_copy(update={"model": bad}))
    detail = h.events[0]["detail"]
    assert h.kinds() == ["update.failed"] and "invalid name or version" in detail
    assert "invalid ModelRef: Expected `str` matching regex" in detail and "`$.name`" in detail


def test_desired_none_unloads(serving_v1: Harness) -> None:
    h = serving_v1
    h.seq += 1
    h.updater.apply(DesiredState(device_id="dev-1", seq=h.seq, model=None))
    assert h.running() is None and not h.slot.ready.is_set()
    assert h.state.snapshot.phase == "idle"
    assert json.loads((h.store.root / POINTER_FILE).read_text())["name"] is None
    restarted = make_harness(h.store.root, h.server)
    restarted.updater.load_committed()
    assert restarted.running() is None and restarted.state.snapshot.phase == "idle"


def test_corrupted_committed_artifact_is_not_served(serving_v1: Harness) -> None:
    h = serving_v1
    model_file = h.store.artifact_dir(V1) / "model.onnx"
    model_file.write_bytes(model_file.read_bytes()[:-1])
    restarted = make_harness(h.store.root, h.server)
    restarted.updater.load_committed()
    assert restarted.running() is None
    assert restarted.state.snapshot.phase == "failed"
    assert restarted.kinds() == ["model.load_failed"]
    assert "model.onnx" in restarted.events[0]["detail"]


def test_garbage_pointer_is_ignored(tmp_path: Path, server: BundleServer) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / POINTER_FILE).write_text('{"name": "../x", "version": 3}')
    h = make_harness(data, server)
    h.updater.load_committed()
    assert h.running() is None and h.state.snapshot.phase == "idle"


def test_previous_version_is_kept_for_rollback(
    serving_v1: Harness, digits_v2: Path, tmp_path: Path
) -> None:
    h = serving_v1
    h.updater.apply(h.desired("/v2", bundle_bytes(digits_v2, tmp_path)))
    assert h.store.artifact_dir(V1).is_dir() and h.store.artifact_dir(V2).is_dir()
    requests = len(h.server.requests)
    h.seq += 1
    back = h.desired("/v1", b"not fetched again", ref=V1)
    h.updater.apply(back)
    assert h.running() == V1
    assert len(h.server.requests) == requests  # served from disk, no download


def test_serving_pairs_model_and_preprocessor(digits_v1: Path) -> None:
    serving = Serving.of(_load(digits_v1))
    assert serving.preprocess.tensor.name == "input"


def test_preprocessing_that_cannot_fit_is_refused(
    serving_v1: Harness, digits_v2: Path, tmp_path: Path
) -> None:
    import shutil

    broken = Path(shutil.copytree(digits_v2, tmp_path / "misfit"))
    data = json.loads((broken / "manifest.json").read_text())
    data["preprocessing"]["resize"] = {"width": 28, "height": 28}
    (broken / "manifest.json").write_text(json.dumps(data))
    h = serving_v1
    h.updater.apply(h.desired("/misfit", bundle_bytes(broken, tmp_path)))
    assert_failed_and_v1_serving(h, "preprocessing makes (1, 784), input 'input' is ('?', 64)")


def test_a_finished_bundle_survives_a_restart_and_is_not_fetched_again(
    serving_v1: Harness, digits_v2: Path, tmp_path: Path
) -> None:
    h = serving_v1
    data = bundle_bytes(digits_v2, tmp_path)
    desired = h.desired("/v2", data)
    # As if the agent died right after the download: the finished bundle is in downloads/.
    sha = desired.model.sha256 if desired.model else ""
    (h.store.downloads / f"{sha}.tar.gz").write_bytes(data)
    (h.store.downloads / "0123.tar.gz.part").write_bytes(b"an older, abandoned part")
    again = make_harness(h.store.root, h.server)
    again.store.clear_downloads()  # start-up keeps parts and finished bundles
    assert len(list(again.store.downloads.iterdir())) == 2
    again.updater.load_committed()
    fetched = list(h.server.requests)
    again.updater.apply(desired)
    assert again.running() == V2, again.events
    assert h.server.requests == fetched  # reused after its hash was checked again
    assert list(again.store.downloads.iterdir()) == []  # unpacked, abandoned part gone


def test_a_download_cut_short_resumes_after_a_restart(
    serving_v1: Harness, digits_v2: Path, tmp_path: Path
) -> None:
    h = serving_v1
    h.server.ranges = True
    data = bundle_bytes(digits_v2, tmp_path)
    h.server.truncate["/v2"] = len(data) // 3
    desired = h.desired("/v2", data)
    h.updater.apply(desired)
    assert_failed_and_v1_serving(h, "bundle truncated", part_kept=True)
    # A restart: a new data dir object and updater; start-up keeps the part.
    del h.server.truncate["/v2"]
    again = make_harness(h.store.root, h.server)
    again.store.clear_downloads()
    again.updater.load_committed()
    assert again.running() == V1
    again.updater.apply(desired)  # the retained desired state, offered again
    assert again.running() == V2, again.events
    assert h.server.ranges_asked == [f"bytes={len(data) // 3}-"]
    assert list(again.store.downloads.iterdir()) == []


def test_a_download_cut_twice_resumes_within_the_same_update(
    serving_v1: Harness, digits_v2: Path, tmp_path: Path
) -> None:
    from agent.download_counters import DownloadCounters

    counters = DownloadCounters()
    # A restarted updater on the same data dir, retrying for up to 30 s, counting.
    h = make_harness(serving_v1.store.root, serving_v1.server, retry_s=30.0, count=counters.add)
    h.updater.load_committed()
    h.server.ranges = True
    data = bundle_bytes(digits_v2, tmp_path)
    third = len(data) // 3
    h.server.cuts["/v2"] = [third, third]  # the link drops twice, then holds
    h.updater.apply(h.desired("/v2", data))
    assert h.running() == V2, h.events
    assert "update.failed" not in h.kinds()
    assert h.server.ranges_asked == [f"bytes={third}-", f"bytes={2 * third}-"]
    totals = counters.totals()
    assert (totals["retries"], totals["resumes"], totals["refetched_bytes"]) == (2, 2, 0)
    assert totals["bytes"] == len(data)


def _versions(h: Harness) -> list[str]:
    return sorted(p.name for p in (h.store.artifacts / "digits").iterdir())


def _serve(h: Harness, artifact: Path, tmp_path: Path, ref: ModelRef) -> None:
    h.updater.apply(h.desired(f"/{ref.version}", bundle_bytes(artifact, tmp_path), ref=ref))
    assert h.running() == ref, h.events


def test_keep_artifacts_keeps_the_newest_versions(
    tmp_path: Path, server: BundleServer, digits_v1: Path, digits_v2: Path
) -> None:
    from tests.utils.artifacts import build_digits_artifact

    v3 = ModelRef(name="digits", version="3.0.0")
    digits_v3 = build_digits_artifact(tmp_path / "digits-3.0.0", version="3.0.0")
    h = make_harness(tmp_path / "data", server, keep=3)
    for artifact, ref in ((digits_v1, V1), (digits_v2, V2), (digits_v3, v3)):
        _serve(h, artifact, tmp_path, ref)
    assert _versions(h) == ["1.0.0", "2.0.0", "3.0.0"]  # three kept, not two
    two = make_harness(tmp_path / "data", server, keep=2)
    two.updater.load_committed()
    _serve(two, digits_v1, tmp_path, V1)  # back to 1.0.0 from disk: 3.0.0 is the previous
    assert _versions(two) == ["1.0.0", "3.0.0"]


def test_the_disk_budget_refuses_a_bundle_and_prunes_what_does_not_fit(
    tmp_path: Path, server: BundleServer, digits_v1: Path
) -> None:
    tight = make_harness(tmp_path / "tight", server, disk_bytes=1000)
    data = bundle_bytes(digits_v1, tmp_path)
    tight.updater.apply(tight.desired("/v1", data, ref=V1))
    assert tight.kinds()[-1] == "update.failed"
    assert "does not fit the disk budget" in tight.events[-1]["detail"]
    assert not server.requests  # refused before any byte was fetched
    # Pruning by bytes: the serving version always stays, then what fits, newest first.
    store = DataDir(tmp_path / "store")
    for version, n in (("1.0.0", 3000), ("2.0.0", 2000), ("3.0.0", 1000), ("4.0.0", 500)):
        ref = ModelRef(name="digits", version=version)
        store.artifact_dir(ref).mkdir(parents=True)
        (store.artifact_dir(ref) / "model.onnx").write_bytes(b"x" * n)
    v3 = ModelRef(name="digits", version="3.0.0")
    store.prune([v3, V1], max_count=3, max_bytes=1000 + 500 + 100)
    # 3.0.0 serving; 1.0.0 (previous, 3000 B) does not fit; 4.0.0 (newest other) does.
    assert sorted(p.name for p in (store.artifacts / "digits").iterdir()) == ["3.0.0", "4.0.0"]
    store.prune([v3], max_count=1, max_bytes=1)  # over budget alone: the serving one stays
    assert sorted(p.name for p in (store.artifacts / "digits").iterdir()) == ["3.0.0"]
