"""What the emulated-board tests share (tests/hil/test_arm64.py, tests/hil/test_armhf.py): the
board lookup, this tree's wheel installed on the board, the agent run there with its JSON log on
the host, and the server-side checks (running model, stored telemetry).

Emulation runs Python ~5-10x slower than the host (more for 32-bit ARM): deadlines are generous
and polled; nothing here measures speed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from hil.arm64.rootfs import WORK, Board, RootfsSpec, board_key, emulation_problem, find_board
from hil.ssh.local import build_wheel
from tests.utils.required import missing

ROOT = Path(__file__).resolve().parents[2]
VENV = f"{WORK}/venv"
EDGEFLEET = f"{VENV}/bin/edgefleet"
SLOW = 180.0


def board_for(arch: str) -> Board:
    """The cached board of ``arch``; skips (fails under EDGEFLEET_REQUIRE_SERVICES) without it."""
    spec = RootfsSpec.for_arch(arch)
    problem = emulation_problem(arch)
    board = find_board(spec) if problem is None else None
    if problem is None and board is None:
        problem = (
            f"the {arch} board ({board_key(spec)}) is not built: run "
            f"`python -m hil.arm64 --arch {arch} build` (a debootstrap under emulation: "
            "minutes)"
        )
    if board is None:
        missing(str(problem))
    return board


def to_board(host: Path, work: Path) -> str:
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
        return to_board(host, self.work)


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


def start_tflite_factory(out: Path) -> subprocess.Popen[bytes]:
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


def tflite_digits(factory: subprocess.Popen[bytes], made: Path, out: Path) -> Path | None:
    """The digits TFLite artifact (to be signed), or None when TensorFlow is not installed."""
    from tests.agent.conftest import _digits_tflite

    factory.wait(300)
    if factory.returncode != 0:
        log = (made / "factory.log").read_text(errors="replace")
        if "No module named 'tensorflow'" in log:
            return None
        raise RuntimeError(f"tests.agent.tflite_factory failed: {log[-3000:]}")
    return _digits_tflite(out / "digits-tfl", made / "digits_fp32.tflite", int8=False)


def start_install(board: Board, work: Path, *, requirement: str) -> subprocess.Popen[str]:
    """This tree's wheel, installed into a fresh venv on the board (``--system-site-packages``:
    the pinned dependencies come from the cached root; ``--no-index``: nothing else), in the
    background: under emulation it is the slowest step, and the host has its own to do.

    ``requirement`` is what pip installs, ``{wheel}`` standing for the wheel's URL, e.g.
    ``"edgefleet[agent] @ {wheel}"``.
    """
    wheel = build_wheel(work / "wheels")
    venv = f"python3 -m venv --system-site-packages --without-pip {VENV}"
    target = requirement.format(wheel=f"file://{WORK}/wheels/{wheel.name}")
    pip = (
        f"python3 -m pip --python {VENV}/bin/python install --no-index "
        f"--find-links {WORK}/wheels '{target}'"
    )
    with (work / "install.log").open("w") as log:
        return board.popen(
            ["sh", "-ec", f"{venv} && {pip}"], work=work, stdout=log.fileno(), stderr=log.fileno()
        )


def finish_install(install: subprocess.Popen[str], work: Path) -> None:
    if install.wait(600) != 0:
        log = (work / "install.log").read_text(errors="replace")
        raise RuntimeError(f"installing the wheel on the board failed: {log[-3000:]}")


def stop_install(install: subprocess.Popen[str] | None) -> None:
    if install is not None and install.poll() is None:
        os.killpg(install.pid, signal.SIGKILL)  # its own session: sh, pip and qemu
        install.wait(10)


def agent_config(
    site: Site, *, name: str, credentials: Path, input_table: str, header: str = ""
) -> Path:
    """An agent config for the board; ``header`` goes first (``profile = ...`` lines)."""
    path = site.work / f"{name}.toml"
    path.write_text(
        f"""{header}
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


def enroll(site: Site, name: str, *, device_class: str | None, tags: list[str]) -> tuple[str, Path]:
    """``edgefleet agent enroll`` on the board; the device id and its credentials file."""
    grant = site.client.create_enrollment_token(
        expires_in_s=600, uses=1, device_class=device_class, tags=tags
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


def running(site: Site, device_id: str) -> str | None:
    current = site.client.get_device(device_id).get("running") or {}
    return f"{current['name']}@{current['version']}" if current else None


def served(site: Site, device_id: str, ref: str) -> int:
    """Inferences the server has stored in this device's telemetry for ``ref``."""
    total = 0
    for row in site.client.device_telemetry(device_id, limit=200):
        model = row.get("model") or {}
        if f"{model.get('name')}@{model.get('version')}" == ref:
            total += int(row.get("inference_count") or 0)
    return total


def assign(site: Site, device_id: str, ref: str) -> dict[str, Any]:
    name, version = ref.split("@")
    result: dict[str, Any] = site.client.assign(name, version, device_ids=[device_id])
    return result


#: Makes the signed bundles a site serves, by ref, and the public key that verifies them:
#: ``(work, tflite factory) -> (key, bundles)``.
BundleMaker = Callable[[Path, "subprocess.Popen[bytes]"], tuple[Path, dict[str, Path]]]


def signing_key(work: Path) -> tuple[Path, bytes]:
    """A new Ed25519 key pair under ``work/keys``: the public key's path, the private PEM."""
    from edgefleet.signing import generate_keypair

    keys = work / "keys"
    keys.mkdir()
    generate_keypair(keys / "signing.pem", keys / "signing.pub.pem")
    return keys / "signing.pub.pem", (keys / "signing.pem").read_bytes()


@contextmanager
def serving_site(
    arch: str, work: Path, *, requirement: str, bundles: BundleMaker
) -> Iterator[Site]:
    """The board of ``arch`` with this tree's wheel installed (``requirement``, ``{wheel}`` in
    it), a server on the host trusting the bundles' key and holding them; the agents the tests
    start on the board are killed on the way out."""
    from fleet_server.client.api import FleetClient
    from tests.utils.server import live_server

    board = board_for(arch)
    factory = start_tflite_factory(work / "tflite")
    install = None
    try:
        install = start_install(board, work, requirement=requirement)
        key, made = bundles(work, factory)
        with live_server(work / "server", trusted_keys=[key]) as server:
            client = FleetClient(server.url, server.token)
            for bundle in made.values():
                client.push_model(bundle)
            finish_install(install, work)
            state = Site(board, work, server, client, key, made)
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
        stop_install(install)
