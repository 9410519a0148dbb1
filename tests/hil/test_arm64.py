"""The real agent on an emulated arm64 board against a real fleet server on the host.

The board is ``hil.arm64``'s cached Debian root (``python -m hil.arm64 build``; ``.ci/run``
builds it, the first time takes tens of minutes). Each run builds the edgefleet wheel from this
tree, installs ``edgefleet[agent]`` from it into a fresh venv on the board (the pinned aarch64
wheels come from the cached root) and runs ``edgefleet agent`` there under qemu-user-static:
enrolment, signed ONNX and TFLite models with their self-tests, a folder and a video source,
telemetry stored by the server, an update that commits and one that probation rolls back.

Without the board (or without qemu/binfmt, or not root) the tests skip with the reason; under
``EDGEFLEET_REQUIRE_SERVICES=1`` they fail. Emulated timings are not device timings: nothing
here asserts or reports speed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import cv2
import numpy as np
import pytest

from hil.arm64.rootfs import WORK, Board, emulation_problem, find_board
from hil.ssh.local import build_wheel
from tests.agent.media import write_video
from tests.agent.probation_models import nan_on_real_inputs
from tests.fleet_server.helpers import wait_until
from tests.utils.artifacts import bundle_of, digits_images, sign_artifact
from tests.utils.required import missing
from tests.utils.server import live_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
VENV = f"{WORK}/venv"
EDGEFLEET = f"{VENV}/bin/edgefleet"
#: Emulation runs Python ~5-10x slower than the host; generous deadlines, polled.
SLOW = 180.0


def _board() -> Board:
    problem = emulation_problem()
    board = find_board() if problem is None else None
    if problem is None and board is None:
        problem = "the arm64 board is not built: run `python -m hil.arm64 build` (tens of minutes)"
    if board is None:
        missing(str(problem))
    return board


def _to_board(host: Path, work: Path) -> str:
    """The path the board sees for a file under the work folder."""
    return f"{WORK}/{host.relative_to(work)}"


@dataclass
class Site:
    board: Board
    work: Path
    server: Any
    client: Any
    key: Path
    bundles: dict[str, Path]
    agents: list[BoardAgent] = field(default_factory=list)

    def board_path(self, host: Path) -> str:
        return _to_board(host, self.work)


class BoardAgent:
    """``edgefleet agent run`` in the board; its JSON log lines go to a host file."""

    def __init__(self, site: Site, config: Path) -> None:
        self.log = config.with_suffix(".log")
        self._out: IO[str] = self.log.open("a")
        self.proc = site.board.popen(
            [EDGEFLEET, "agent", "run", "--config", site.board_path(config)],
            work=site.work,
            stdout=subprocess.DEVNULL,
            stderr=self._out.fileno(),
        )

    def lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def logged(self, msg: str) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line.get("msg") == msg]

    def stop(self, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self._out.close()


def _start_tflite_factory(out: Path) -> subprocess.Popen[bytes]:
    """TensorFlow makes the .tflite models in its own process while the board installs; its
    log goes to a file (a pipe nobody reads while the board installs could fill and block)."""
    out.mkdir(parents=True)
    with (out / "factory.log").open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.agent.tflite_factory", str(out)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )


def _tflite_digits(factory: subprocess.Popen[bytes], made: Path, out: Path) -> Path | None:
    """The digits TFLite artifact (to be signed), or None when TensorFlow is not installed."""
    from tests.agent.conftest import _digits_tflite

    factory.wait(300)
    if factory.returncode != 0:
        log = (made / "factory.log").read_text(errors="replace")
        if "No module named 'tensorflow'" in log:
            return None
        raise RuntimeError(f"tests.agent.tflite_factory failed: {log[-3000:]}")
    return _digits_tflite(out / "digits-tfl", made / "digits_fp32.tflite", int8=False)


def _start_install(board: Board, work: Path) -> subprocess.Popen[str]:
    """This tree's wheel, installed with its [agent] extra into a fresh venv on the board (the
    pinned aarch64 dependencies come from the cached root; --no-index: nothing else), in the
    background: under emulation it is the slowest step, and the host has its own to do."""
    wheel = build_wheel(work / "wheels")
    venv = f"python3 -m venv --system-site-packages --without-pip {VENV}"
    pip = (
        f"python3 -m pip --python {VENV}/bin/python install --no-index "
        f"--find-links {WORK}/wheels 'edgefleet[agent] @ file://{WORK}/wheels/{wheel.name}'"
    )
    with (work / "install.log").open("w") as log:
        return board.popen(
            ["sh", "-ec", f"{venv} && {pip}"], work=work, stdout=log.fileno(), stderr=log.fileno()
        )


def _finish_install(install: subprocess.Popen[str], work: Path) -> None:
    if install.wait(600) != 0:
        log = (work / "install.log").read_text(errors="replace")
        raise RuntimeError(f"installing the wheel on the board failed: {log[-3000:]}")


def _signed_bundles(work: Path, factory: subprocess.Popen[bytes]) -> tuple[Path, dict[str, Path]]:
    """Signed bundles by ref (digits 1.0.0, 2.0.0, the NaN 3.0.0, digits-tfl 1.0.0 when
    TensorFlow is there) and the public key that verifies them."""
    from edgefleet.signing import generate_keypair
    from tests.utils.artifacts import build_digits_artifact

    keys = work / "keys"
    keys.mkdir()
    generate_keypair(keys / "signing.pem", keys / "signing.pub.pem")
    private = (keys / "signing.pem").read_bytes()
    artifacts = work / "artifacts"
    bundles: dict[str, Path] = {}
    for version in ("1.0.0", "2.0.0"):
        art = build_digits_artifact(artifacts / f"digits-{version}", version=version)
        bundles[f"digits@{version}"] = bundle_of(
            sign_artifact(art, private), artifacts / f"digits-{version}.tar.gz"
        )
    bad = sign_artifact(nan_on_real_inputs(artifacts / "nan", version="3.0.0"), private)
    bundles["digits@3.0.0"] = bundle_of(bad, artifacts / "digits-3.0.0.tar.gz")
    tflite = _tflite_digits(factory, work / "tflite", artifacts)
    if tflite is not None:
        bundles["digits-tfl@1.0.0"] = bundle_of(
            sign_artifact(tflite, private), artifacts / "digits-tfl-1.0.0.tar.gz"
        )
    return keys / "signing.pub.pem", bundles


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    from fleet_server.client.api import FleetClient

    board = _board()
    work = tmp_path_factory.mktemp("arm64")
    factory = _start_tflite_factory(work / "tflite")
    install = None
    try:
        install = _start_install(board, work)
        keys, bundles = _signed_bundles(work, factory)
        with live_server(work / "server", trusted_keys=[keys]) as server:
            client = FleetClient(server.url, server.token)
            for bundle in bundles.values():
                client.push_model(bundle)
            _finish_install(install, work)
            state = Site(board, work, server, client, keys, bundles)
            try:
                yield state
            finally:
                for agent in state.agents:
                    agent.kill()
                client.close()
    finally:
        if factory.poll() is None:
            factory.kill()
            factory.wait(10)
        if install is not None and install.poll() is None:
            os.killpg(install.pid, signal.SIGKILL)  # its own session: sh, pip and qemu
            install.wait(10)


def _config(site: Site, *, name: str, credentials: Path, input_table: str) -> Path:
    path = site.work / f"{name}.toml"
    path.write_text(
        f"""
credentials_file = "{site.board_path(credentials)}"
data_dir = "{WORK}/data-{name}"
trusted_keys = ["{site.board_path(site.key)}"]
log_level = "debug"

[mqtt]
url = "{site.server.broker_url}"
keepalive = 10
connect_wait_s = 5

[telemetry]
interval_s = 1

[engine]
threads = 1

{input_table}

[probation]
inferences = 20
max_s = 120
latency_factor = 50
latency_floor_ms = 5
"""
    )
    return path


def _enroll(site: Site, name: str) -> tuple[str, Path]:
    grant = site.client.create_enrollment_token(
        expires_in_s=600, uses=1, device_class="aarch64", tags=["arm64-hil"]
    )
    out = site.work / f"{name}-credentials.json"
    done = site.board.run(
        [EDGEFLEET, "agent", "enroll", "--server", site.server.url]
        + [f"--enrollment-token={grant['token']}", "--out", site.board_path(out)],
        work=site.work,
        timeout=SLOW,
    )
    assert "enrolled as" in done.stdout, done.stdout + done.stderr
    return str(json.loads(out.read_text())["device_id"]), out


def _running(site: Site, device_id: str) -> str | None:
    running = site.client.get_device(device_id).get("running") or {}
    return f"{running['name']}@{running['version']}" if running else None


def _served(site: Site, device_id: str, ref: str) -> int:
    """Inferences the server has stored in this device's telemetry for ``ref``."""
    total = 0
    for row in site.client.device_telemetry(device_id, limit=200):
        model = row.get("model") or {}
        if f"{model.get('name')}@{model.get('version')}" == ref:
            total += int(row.get("inference_count") or 0)
    return total


def _assign(site: Site, device_id: str, ref: str) -> None:
    name, version = ref.split("@")
    site.client.assign(name, version, device_ids=[device_id])


def test_the_board_is_arm64_and_runs_the_agent_wheel(site: Site) -> None:
    uname = site.board.run(["uname", "-m"]).stdout.strip()
    assert uname == "aarch64"
    probe = site.board.run(
        [
            f"{VENV}/bin/python",
            "-c",
            # The runtimes themselves are imported by the agent in the tests below.
            "import json, platform, importlib.metadata as m, agent; "
            "print(json.dumps({'machine': platform.machine(), 'edgefleet': "
            "str(m.distribution('edgefleet').locate_file('')), 'agent': agent.__file__}))",
        ],
        work=site.work,
        timeout=SLOW,
    )
    seen = json.loads(probe.stdout.strip().splitlines()[-1])
    assert seen["machine"] == "aarch64"
    # The agent comes from this run's wheel in the fresh venv, not from the cached root.
    assert seen["edgefleet"].startswith(f"{VENV}/"), seen
    assert seen["agent"].startswith(f"{VENV}/lib/"), seen


def test_enrolled_agent_serves_signed_onnx_commits_an_update_and_rolls_back_a_bad_one(
    site: Site,
) -> None:
    device_id, credentials = _enroll(site, "folder")
    images = site.work / "images"
    digits_images(images, 8)
    # The bad model answers NaN for a blank image (its self-test rows are fine).
    cv2.imwrite(str(images / "blank.png"), np.zeros((8, 8), dtype=np.uint8))
    config = _config(
        site,
        name="folder",
        credentials=credentials,
        input_table=(
            f'[input]\ntype = "folder"\npath = "{site.board_path(images)}"\n'
            'pattern = "*.png"\nloop = true\nrate_hz = 20.0'
        ),
    )
    agent = BoardAgent(site, config)
    site.agents.append(agent)
    device = site.client.get_device(device_id)
    assert device["device_class"] == "aarch64" and "arm64-hil" in device["tags"]

    _assign(site, device_id, "digits@1.0.0")
    wait_until(lambda: _running(site, device_id) == "digits@1.0.0", SLOW, "digits 1.0.0", every=0.5)
    wait_until(lambda: _served(site, device_id, "digits@1.0.0") > 0, SLOW, "telemetry", every=0.5)
    assert any(e.get("model") == "digits@1.0.0" for e in agent.logged("model committed"))
    # The board's own gauges reach the server (RSS from the board's /proc; the value is an
    # emulated process's and is not quoted anywhere).
    rows = site.client.device_telemetry(device_id, limit=50)
    assert any((row.get("system") or {}).get("rss_mb", 0) > 0 for row in rows), rows[:2]

    _assign(site, device_id, "digits@2.0.0")
    wait_until(
        lambda: any(e.get("model") == "digits@2.0.0" for e in agent.logged("model committed")),
        SLOW,
        "2.0.0 committed after its probation",
        every=0.5,
    )
    wait_until(lambda: _running(site, device_id) == "digits@2.0.0", SLOW, "2.0.0", every=0.5)

    _assign(site, device_id, "digits@3.0.0")
    wait_until(
        lambda: bool(agent.logged("update rolled back")), SLOW, "3.0.0 rolled back", every=0.5
    )
    (rolled,) = agent.logged("update rolled back")
    assert rolled["model"] == "digits@3.0.0" and "NaN or Inf" in rolled["error"], rolled
    assert "serving digits@2.0.0 again" in rolled["error"]
    wait_until(
        lambda: (site.client.get_device(device_id).get("last_error") or "").startswith(
            rolled["error"][:40]
        ),
        SLOW,
        "the rollback reported to the server",
        every=0.5,
    )
    assert _running(site, device_id) == "digits@2.0.0"
    assert not any(e.get("model") == "digits@3.0.0" for e in agent.logged("model committed"))
    served = _served(site, device_id, "digits@2.0.0")
    wait_until(
        lambda: _served(site, device_id, "digits@2.0.0") > served,
        SLOW,
        "2.0.0 still serving after the rollback",
        every=0.5,
    )
    assert agent.stop() == 0, agent.log.read_text()[-2000:]


def test_signed_tflite_model_serves_a_video(site: Site) -> None:
    if "digits-tfl@1.0.0" not in site.bundles:
        if os.environ.get("EDGEFLEET_REQUIRE_TF"):
            pytest.fail("EDGEFLEET_REQUIRE_TF is set but tensorflow does not import")
        pytest.skip("tensorflow is not installed: cannot make the .tflite test model")
    device_id, credentials = _enroll(site, "video")
    video = write_video(site.work / "clip.avi", 40)
    config = _config(
        site,
        name="video",
        credentials=credentials,
        input_table=(f'[input]\ntype = "video"\npath = "{site.board_path(video)}"\nloop = true'),
    )
    agent = BoardAgent(site, config)
    site.agents.append(agent)
    _assign(site, device_id, "digits-tfl@1.0.0")
    wait_until(
        lambda: _running(site, device_id) == "digits-tfl@1.0.0",
        SLOW,
        "the TFLite model",
        every=0.5,
    )
    wait_until(
        lambda: _served(site, device_id, "digits-tfl@1.0.0") >= 40,
        SLOW,
        "video frames served by the TFLite model",
        every=0.5,
    )
    assert any(e.get("model") == "digits-tfl@1.0.0" for e in agent.logged("model committed"))
    assert agent.stop() == 0, agent.log.read_text()[-2000:]
    shutil.rmtree(site.work / "data-video", ignore_errors=True)
