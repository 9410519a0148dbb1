"""The profile's memory budget (budgets.memory_mb → [engine] memory_mb): a model that cannot fit
beside what the agent holds is refused before loading (file size × the backend's factor) or
after (the RSS it added), with one line naming the figures; an update keeps the old model."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import onnxruntime  # noqa: F401 (loaded first: the estimates here are about the files)
import pytest

from agent.config import parse_config
from agent.engine import BackendOptions, load_model
from agent.errors import ModelLoadError
from agent.memory import FILE_FACTORS, check_estimate, check_loaded, rss_mb
from edgefleet.contract import ModelRef, TensorSpec
from tests.agent.factory import conv_artifact, write_artifact
from tests.agent.helpers import BundleServer, serve_bundles
from tests.agent.onnx_models import mlp
from tests.agent.test_config import BASE
from tests.agent.test_updater import TOKEN, V1, bundle_bytes, make_harness

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def server() -> Iterator[BundleServer]:
    with serve_bundles(TOKEN) as s:
        yield s


def _now() -> float:
    now = rss_mb()
    assert now is not None
    return now


def _mlp_artifact(out: Path, features: int, hidden: int, version: str = "1.0.0") -> Path:
    return write_artifact(
        out,
        model_bytes=mlp(features, hidden),
        fmt="onnx",
        name="wide",
        version=version,
        inputs=[TensorSpec(name="input", shape=["batch", features], dtype="float32")],
        outputs=[TensorSpec(name="scores", shape=["batch", 10], dtype="float32")],
    )


def test_the_profile_fills_the_budget_and_the_file_can_set_or_refuse_it() -> None:
    assert parse_config(BASE).engine.memory_mb is None  # no profile: no limit
    assert parse_config('profile = "rpi-zero-2w"\n' + BASE).engine.memory_mb == 160
    own = parse_config('profile = "rpi-zero-2w"\n' + BASE + "[engine]\nmemory_mb = 200\n")
    assert own.engine.memory_mb == 200
    for bad in ("8", '"lots"', "-1"):
        with pytest.raises(Exception, match="engine.memory_mb"):
            parse_config(BASE + f"[engine]\nmemory_mb = {bad}\n")


def test_a_model_file_too_big_for_the_budget_is_refused_before_its_session_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wide = _mlp_artifact(tmp_path / "wide", 1024, 2048)  # 8 MB of weights
    size_mb = (wide / "model.onnx").stat().st_size / 2**20
    assert size_mb > 7.5

    def no_session(*args: object) -> None:
        raise AssertionError("a refused model must not reach the runtime")

    from agent.engine import registry

    monkeypatch.setattr(registry.BACKENDS["onnx"], "load", no_session)
    budget = _now() + size_mb / 2  # room for half the file
    with pytest.raises(ModelLoadError) as caught:
        load_model(wide, options=BackendOptions(memory_budget_mb=budget))
    line = str(caught.value)
    assert line.startswith(
        f"wide@1.0.0 does not fit the memory budget: its onnx file ({size_mb:.1f} MB) needs at "
        f"least {size_mb:.1f} MB more (1x the file) and the agent holds "
    )
    assert f"of its {budget:g} MB (engine.memory_mb, the profile's budgets.memory_mb)" in line
    assert line.endswith("not loaded") and "\n" not in line


def test_a_model_whose_activations_do_not_fit_is_refused_after_loading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A 20 kB file whose 256x256x16 float activations take megabytes once it runs: the file's
    # estimate lets it through, the RSS measured after warm-up and self-test does not. The
    # RSS readings are the agent's own before and after the real load (a long test process
    # may reuse freed memory, so the "after" is the real one plus what a fresh agent adds).
    conv = conv_artifact(tmp_path / "conv", size=256, channels=16)
    assert (conv / "model.onnx").stat().st_size < 64 * 1024
    from agent import memory

    readings: list[float] = []

    def measured() -> float:
        readings.append(_now() + (0.0 if not readings else 24.0))
        return readings[-1]

    monkeypatch.setattr(memory, "rss_mb", measured)
    budget = _now() + 8.0
    with pytest.raises(ModelLoadError) as caught:
        load_model(conv, options=BackendOptions(memory_budget_mb=budget))
    assert len(readings) == 2  # before the session (estimate) and after the self-test
    line = str(caught.value)
    assert line.startswith("conv@1.0.0 does not fit the memory budget: loaded, warmed up and")
    assert f"holds {readings[1]:.1f} MB (+{readings[1] - readings[0]:.1f} MB" in line
    assert f"over its {budget:g} MB" in line and line.endswith("refused")
    # With room, the same model loads and serves.
    monkeypatch.undo()
    roomy = BackendOptions(memory_budget_mb=_now() + 512)
    assert load_model(conv, options=roomy).manifest.name == "conv"


def test_the_estimate_uses_each_backends_factor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agent import memory

    monkeypatch.setattr(memory, "runtime_loaded", lambda fmt: True)  # the file's share only
    model = tmp_path / "model.bin"
    model.write_bytes(b"\0" * (4 * 2**20))  # 4 MB
    for fmt, factor in FILE_FACTORS.items():
        now = _now()
        need = 4 * factor
        assert check_estimate("m@1", fmt, model, now + need + 2) is not None  # fits
        with pytest.raises(ModelLoadError, match=f"its {fmt} file .4.0 MB. needs at least"):
            check_estimate("m@1", fmt, model, now + need - 1)
    check_loaded("m@1", None, _now() + 100)  # under: nothing to say
    with pytest.raises(ModelLoadError, match=r"holds [\d.]+ MB, over its 1 MB"):
        check_loaded("m@1", None, 1)


def test_an_update_that_does_not_fit_fails_and_the_old_model_keeps_serving(
    tmp_path: Path, server: BundleServer, digits_v1: Path
) -> None:
    h = make_harness(tmp_path / "data", server)
    h.updater.apply(h.desired("/v1", bundle_bytes(digits_v1, tmp_path), ref=V1))
    assert h.running() == V1
    wide = _mlp_artifact(tmp_path / "wide", 1024, 2048, version="2.0.0")
    budget = _now() + 4  # the serving model stays loaded: 4 MB of room, the file is 8 MB
    h.updater._load = lambda path: load_model(  # the service's loader with the profile budget
        path, options=BackendOptions(memory_budget_mb=budget)
    )
    wide_ref = ModelRef(name="wide", version="2.0.0")
    h.events.clear()
    h.updater.apply(h.desired("/wide", bundle_bytes(wide, tmp_path, "w.tar.gz"), ref=wide_ref))
    assert h.kinds()[-1] == "update.failed", h.kinds()
    detail = h.events[-1]["detail"]
    assert detail.startswith("wide@2.0.0 does not fit the memory budget") and "not loaded" in detail
    assert h.running() == V1  # still serving
    assert h.state.snapshot.last_error == detail and h.state.snapshot.phase == "serving"
    assert not h.store.artifact_dir(wide_ref).exists()  # a refused artifact is not kept


def test_the_service_loads_every_model_within_its_configured_budget(
    tmp_path: Path, digits_v1: Path
) -> None:
    from agent.service import AgentService
    from tests.agent.helpers import config_toml
    from tests.utils.net import free_port

    text = config_toml(data_dir=tmp_path / "data", mqtt_url=f"mqtt://127.0.0.1:{free_port()}")
    tight = AgentService(parse_config(text + "memory_mb = 32\n"))  # in the [engine] table
    try:  # a pytest process holds far more than 32 MB: nothing fits
        with pytest.raises(ModelLoadError, match="of its 32 MB .engine.memory_mb"):
            tight._load(digits_v1)
        with pytest.raises(ModelLoadError, match="of its 32 MB"):
            tight._load_shadow(digits_v1)  # a shadow model counts too
    finally:
        tight.lock.release()
    free = AgentService(parse_config(text))  # no profile, no memory_mb: no limit
    try:
        assert free._load(digits_v1).manifest.name == "digits"
    finally:
        free.lock.release()


def test_freed_heap_goes_back_to_the_system_after_a_load() -> None:
    import platform

    from agent import memory
    from edgefleet.heap import is_glibc

    if platform.libc_ver()[0] != "glibc":
        assert not is_glibc()  # musl: nothing to call, and nothing fails
        memory.release_freed()
        return
    assert is_glibc()
    blocks = [bytearray(64 * 1024) for _ in range(800)]  # 50 MB in heap-sized blocks
    del blocks[:-1]  # all but the last: freed, but below it the heap cannot shrink
    before = _now()
    memory.release_freed()
    assert _now() < before - 10  # malloc_trim gives the freed pages back


def test_a_committed_model_over_the_budget_at_start_is_reported_not_served(
    tmp_path: Path, server: BundleServer, digits_v1: Path
) -> None:
    first = make_harness(tmp_path / "data", server)
    first.updater.apply(first.desired("/v1", bundle_bytes(digits_v1, tmp_path), ref=V1))
    assert first.running() == V1
    restarted = make_harness(tmp_path / "data", server)
    restarted.updater._load = lambda path: load_model(  # a budget this process is over
        path, options=BackendOptions(memory_budget_mb=32)
    )
    restarted.updater.load_committed()
    assert restarted.kinds() == ["model.load_failed"] and restarted.running() is None
    detail = restarted.events[-1]["detail"]
    assert detail.startswith("committed model digits@1.0.0 not served: digits@1.0.0 does not fit")
    assert restarted.state.snapshot.phase == "failed"


def test_the_first_model_of_a_format_also_counts_its_runtime(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agent import memory

    model = tmp_path / "model.bin"
    model.write_bytes(b"\0" * 2**20)  # 1 MB
    budget = _now() + 1 + memory.RUNTIME_MB["onnx"] / 2  # the file fits, the runtime does not
    assert memory.runtime_loaded("onnx")  # this test process has imported onnxruntime
    assert check_estimate("m@1", "onnx", model, budget) is not None
    monkeypatch.setattr(memory, "runtime_loaded", lambda fmt: False)  # a fresh agent
    with pytest.raises(ModelLoadError, match=r"\+ 31 MB for its runtime, not loaded yet\)"):
        check_estimate("m@1", "onnx", model, budget)


ARENAS = """
import ctypes, sys, tempfile, threading
from agent.memory import cap_malloc_arenas
capped = cap_malloc_arenas() if sys.argv[1] == "cap" else False
held, ready, done = [], threading.Barrier(9), threading.Event()
def work():
    held.append(bytearray(100_000))  # under the mmap threshold: from this thread's arena
    ready.wait()
    done.wait()
threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads:
    t.start()
ready.wait()
libc = ctypes.CDLL(None)
libc.fopen.restype = ctypes.c_void_p
libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
libc.fclose.argtypes = [ctypes.c_void_p]
with tempfile.NamedTemporaryFile(suffix=".xml") as out:
    f = libc.fopen(out.name.encode(), b"w")
    libc.malloc_info(0, f)
    libc.fclose(f)
    arenas = open(out.name).read().count("<heap nr=")
done.set()
print(capped, arenas)
"""


@pytest.mark.parametrize(
    ("mode", "env", "capped", "most"),
    [
        ("cap", {}, True, 2),
        ("none", {}, False, None),  # glibc's default, what the cap prevents: more than 2
        ("cap", {"MALLOC_ARENA_MAX": "3"}, False, 3),  # the unit's environment wins
    ],
)
def test_the_agent_caps_glibc_arenas_unless_the_environment_does(
    mode: str, env: dict[str, str], capped: bool, most: int | None
) -> None:
    """``edgefleet agent run`` caps malloc arenas before its threads exist (agent.memory):
    eight threads allocating at once share two arenas, not one each (glibc: 8 per core)."""
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("malloc arenas are glibc's")
    done = subprocess.run(
        [sys.executable, "-c", ARENAS, mode],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    was_capped, arenas = done.stdout.split()
    assert was_capped == str(capped)
    if most is None:
        assert int(arenas) > 2, done.stdout
    else:
        assert 1 <= int(arenas) <= most, done.stdout
