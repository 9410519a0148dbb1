"""``edgefleet hil run``: a real board over SSH runs a scenario against a fleet server.

Steps: connect (``uname -m``, the address the board sees us at) → build this tree's wheel →
a folder on the board with the wheel, the probe and the inputs → a venv with
``edgefleet[agent]`` → a fleet server (ours, on the address the board reached us from, unless
``--server``) → enrol the board → the agent in the background with the probe beside it →
the scenario (:mod:`hil.ssh.scenarios`) → the board's numbers back here → clean-up: the
board's processes and folder, our server and temporary files — also after a failure or
Ctrl-C. The report is JSON; the table is its summary.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from fleet_server.client.api import FleetClientError
from hil import probe
from hil.ssh import scenarios
from hil.ssh.errors import HilError
from hil.ssh.local import LocalServer, build_wheel, digit_images
from hil.ssh.session import RemoteRun
from hil.ssh.target import Board, Target

SCENARIOS = ("update", "outage", "soak")


@dataclass(frozen=True)
class RunOptions:
    target: Target
    scenario: str
    known_hosts: Path
    identity: Path | None = None
    server_url: str | None = None
    broker_url: str | None = None
    token: str | None = None
    models: tuple[str, str] | None = None
    trusted_key: Path | None = None
    system_site_packages: bool = False
    no_index: bool = False
    duration_s: float = 600.0
    outage_s: float = 30.0
    bench_runs: int = 500
    #: update: how long TO serves after the update before the agent stops (probe samples).
    hold_s: float = 20.0
    #: Emulated boards are 5-10x slower than the device they stand in for.
    step_timeout_s: float = 300.0
    install_timeout_s: float = 1800.0
    say: Callable[[str], None] = field(default=lambda line: None)


@dataclass
class Context:
    """What a scenario works with (filled in by :func:`run`)."""

    options: RunOptions
    board: Board
    remote: RemoteRun
    client: Any
    server: LocalServer | None
    device_id: str
    models: tuple[str, str]
    agent_cmd: str
    #: Models the scenario had the agent serve, in order (the ones timed at the end).
    served: list[str] = field(default_factory=list)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM ends the run like Ctrl-C does: through the clean-up."""

    def raise_interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, raise_interrupt)
    except ValueError:  # not the main thread: nothing to install
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _uninterruptible() -> Iterator[None]:
    """A second Ctrl-C (or SIGTERM) does not cut the clean-up short."""
    try:
        previous = {
            sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)
        }
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run(options: RunOptions) -> dict[str, Any]:
    """Run the scenario; the report (``ok`` says whether the scenario's checks held)."""
    if options.scenario not in SCENARIOS:
        raise HilError(f"--scenario must be one of {', '.join(SCENARIOS)}")
    if options.scenario == "outage" and options.server_url:
        raise HilError("--scenario outage stops and restarts the server: run it without --server")
    if options.server_url and not (
        options.token and options.models and options.trusted_key and options.broker_url
    ):
        raise HilError(
            "--server needs --token, --broker, --models FROM,TO and --trusted-key as well"
        )
    options.known_hosts.parent.mkdir(parents=True, exist_ok=True)
    board = Board(options.target, known_hosts=options.known_hosts, identity=options.identity)
    remote = RemoteRun(board)
    server: LocalServer | None = None
    client: Any = None
    report: dict[str, Any] = {"target": str(options.target), "scenario": options.scenario}
    started = time.monotonic()
    with _sigterm_as_interrupt(), tempfile.TemporaryDirectory(prefix="edgefleet-hilrun-") as tmp:
        local = Path(tmp)
        try:
            facts = _facts(board)
            report["board"] = facts
            options.say(f"{options.target}: {facts['machine']}, {facts['python']}")
            work = remote.open()
            wheel = build_wheel(local / "wheels")
            inputs = local / "inputs"
            digit_images(inputs)
            remote.send({wheel.name: wheel, "probe.py": Path(probe.__file__), "inputs": inputs})
            t = time.monotonic()
            remote.install(
                wheel.name,
                system_site=options.system_site_packages,
                no_index=options.no_index,
                timeout=options.install_timeout_s,
            )
            report["install_s"] = round(time.monotonic() - t, 1)
            options.say(f"installed {wheel.name} into {work}/venv ({report['install_s']} s)")
            server, client, models, key = _server(options, local, facts["ssh_client_ip"])
            device_id = _enrol(options, remote, client, server, local, facts["machine"])
            remote.send({"trusted.pub.pem": key})
            config = _agent_config(remote, server, options)
            remote.send({"agent.toml": _write(local / "agent.toml", config)})
            agent_cmd = f"{remote.path('venv/bin/edgefleet')} agent run --config agent.toml"
            ctx = Context(options, board, remote, client, server, device_id, models, agent_cmd)
            report["device_id"] = device_id
            report["server"] = server.url if server else options.server_url
            report.update(scenarios.SCENARIOS[options.scenario](ctx))
        except KeyboardInterrupt:
            report["ok"] = False
            report["error"] = "interrupted"
        except HilError as err:
            report["ok"] = False
            report["error"] = str(err)
        except FleetClientError as err:  # the fleet server refused or did not answer
            report["ok"] = False
            report["error"] = f"fleet server: {err}"
        finally:
            with _uninterruptible():
                try:
                    report["cleanup"] = remote.close()
                except HilError as err:
                    report["cleanup"] = {"work": remote.work, "removed": False, "error": str(err)}
                if client is not None:
                    client.close()
                if server is not None:
                    server.stop()
    report["total_s"] = round(time.monotonic() - started, 1)
    return report


def _facts(board: Board) -> dict[str, str]:
    text = board.text('uname -m; python3 -V 2>&1; echo "$SSH_CONNECTION"; uname -r')
    lines = text.splitlines()
    if len(lines) < 4 or len(lines[2].split()) != 4:
        raise HilError(f"{board.target}: unexpected answer to uname/python3 -V: {text[:300]!r}")
    return {
        "machine": lines[0],
        "python": lines[1],
        "ssh_client_ip": lines[2].split()[0],
        "kernel": lines[3],
    }


def _server(
    options: RunOptions, local: Path, board_sees_us_at: str
) -> tuple[LocalServer | None, Any, tuple[str, str], Path]:
    from fleet_server.client.api import FleetClient

    if options.server_url:
        assert options.token and options.models and options.trusted_key
        client = FleetClient(options.server_url, options.token)
        return None, client, options.models, options.trusted_key
    server = LocalServer(local / "server", host=board_sees_us_at)
    server.work.mkdir()
    server.start()
    options.say(f"fleet server on {server.url} (broker {server.broker_url})")
    client = FleetClient(server.url, server.token)
    first, second = server.push_models(client)
    return server, client, (first, second), server.public_key


def _enrol(
    options: RunOptions,
    remote: RemoteRun,
    client: Any,
    server: LocalServer | None,
    local: Path,
    machine: str,
) -> str:
    grant = client.create_enrollment_token(
        expires_in_s=900, uses=1, device_class=machine, tags=["hil-ssh"]
    )
    token_file = _write(local / "enrollment.token", str(grant["token"]))
    token_file.chmod(0o600)
    remote.send({"enrollment.token": token_file})
    url = server.url if server else options.server_url
    edgefleet = remote.path("venv/bin/edgefleet")
    remote.board.run(
        f"{edgefleet} agent enroll --server {shlex.quote(str(url))} "
        f"--enrollment-token-file {remote.path('enrollment.token')} "
        f"--out {remote.path('credentials.json')} --class {shlex.quote(machine)} && "
        f"rm -f {remote.path('enrollment.token')}",
        timeout=options.step_timeout_s,
    )
    creds = json.loads(remote.board.get(remote.path("credentials.json"), limit=65536))
    device_id = str(creds["device_id"])
    options.say(f"enrolled as {device_id}")
    return device_id


def _agent_config(remote: RemoteRun, server: LocalServer | None, options: RunOptions) -> str:
    broker = server.broker_url if server else options.broker_url
    return f"""
credentials_file = "{remote.path("credentials.json")}"
data_dir = "{remote.path("data")}"
trusted_keys = ["{remote.path("trusted.pub.pem")}"]

[mqtt]
url = "{broker}"
keepalive = 10
connect_wait_s = 5

[telemetry]
interval_s = 2

[input]
type = "folder"
path = "{remote.path("inputs")}"
pattern = "*.png"
loop = true
rate_hz = 20.0

[probation]
inferences = 20
max_s = 120
latency_factor = 50
latency_floor_ms = 5
"""


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def table(report: dict[str, Any]) -> str:
    """The report's summary, one line per measure."""
    rows: list[tuple[str, str]] = [
        ("target", str(report.get("target"))),
        (
            "board",
            " ".join(
                str(v) for k, v in (report.get("board") or {}).items() if k != "ssh_client_ip"
            ),
        ),  # fmt: skip
        ("scenario", f"{report.get('scenario')}: {'ok' if report.get('ok') else 'FAILED'}"),
    ]
    if report.get("error"):
        rows.append(("error", str(report["error"])))
    for key in ("install_s", "update_s", "drain_s", "duplicates", "updates", "flat", "total_s"):
        if key in report:
            rows.append((key, f"{report[key]}"))
    for ref, bench in (report.get("latency") or {}).items():
        if "error" in bench:
            rows.append((f"latency {ref}", f"error: {bench['error']}"))
            continue
        agent, bare = bench["agent_ms"], bench["bare_ms"]
        rows.append((f"latency {ref}", f"p50 {agent['p50']:.3f} ms p95 {agent['p95']:.3f} ms "
                     f"(bare p50 {bare['p50']:.3f} ms) {bench['backend']}"))  # fmt: skip
    agent = report.get("agent") or {}
    for key in ("rss_mb", "fds", "threads"):
        if key in agent:
            row = agent[key]
            rows.append((f"agent {key}", f"{row['first']:g} → {row['last']:g} "
                         f"(max {row['max']:g}, slope {row['slope_per_h']:+g}/h)"))  # fmt: skip
    temps = report.get("temperature_c") or {}
    rows.append(("temperature", ", ".join(f"{k} {v['max']:.1f} °C max" for k, v in temps.items())
                 or "no /sys/class/thermal zone"))  # fmt: skip
    cleanup = report.get("cleanup") or {}
    rows.append(("cleanup", "board folder and processes removed" if cleanup.get("removed")
                 else f"LEFT ON THE BOARD: {cleanup}"))  # fmt: skip
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
