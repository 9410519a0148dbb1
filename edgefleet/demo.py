"""The end-to-end demo: one command shows the whole EdgeFleet loop working for real.

server (subprocess) ← converter ← digits classifier; N agent processes ← rollout over MQTT;
telemetry → database → the table printed here. Everything runs on loopback in one directory.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from edgefleet.contract import Preprocessing
from edgefleet.contract.manifest import ResizeSpec

#: Digits features are 0..16; the demo's images store them as 0..255.
PIXEL_SCALE = 16 / 255
MODEL_NAME = "digits"
MODEL_VERSION = "1.0.0"


@dataclass(frozen=True)
class DemoOptions:
    duration_s: float = 20.0
    devices: int = 3
    data_dir: str | None = None
    database_url: str | None = None
    broker_url: str | None = None
    telemetry_interval_s: float = 2.0


class DemoError(Exception):
    """A step of the demo failed; the message says which."""


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _say(message: str) -> None:
    print(f"[demo] {message}", flush=True)


class _Processes:
    """Child processes with their output in log files; stopped with SIGTERM, then SIGKILL."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: list[IO[bytes]] = []

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"{name}.log").open("wb")
        self._logs.append(log)
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)  # noqa: S603
        self.procs[name] = proc
        return proc

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                tail = (self.log_dir / f"{name}.log").read_text(errors="replace")[-2000:]
                raise DemoError(f"{name} exited with code {proc.returncode}; its log ends:\n{tail}")

    def stop(self, names: list[str] | None = None, timeout: float = 15.0) -> dict[str, int]:
        chosen = names if names is not None else list(self.procs)
        for name in chosen:
            proc = self.procs[name]
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = {}
        deadline = time.monotonic() + timeout
        for name in chosen:
            proc = self.procs[name]
            try:
                codes[name] = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[name] = proc.wait()
        return codes

    def close(self) -> None:
        self.stop()
        for log in self._logs:
            log.close()


def _wait_http(url: str, timeout: float, procs: _Processes) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        procs.check_alive()
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310 (loopback URL)
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise DemoError(f"{url} did not answer within {timeout:.0f} s")


def _train_and_convert(work: Path) -> Path:
    """Train a digits classifier, save it, and convert it into an artifact directory."""
    import joblib
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    from converters.api import ConvertOptions, convert

    digits = load_digits()
    x, y = digits.data.astype(np.float32), digits.target.astype(np.int64)
    model = LogisticRegression(max_iter=500).fit(x[:1400], y[:1400])
    source = work / "digits.pkl"
    joblib.dump(model, source)
    eval_path = work / "digits-eval.npz"
    np.savez(eval_path, x=x[1400:], y=y[1400:])
    preprocessing = Preprocessing(
        color="gray",
        resize=ResizeSpec(width=8, height=8, interpolation="area"),
        scale=PIXEL_SCALE,
        layout="flat",
    )
    result = convert(
        source,
        work / "artifact",
        ConvertOptions(
            name=MODEL_NAME,
            version=MODEL_VERSION,
            task="classification",
            preprocessing=preprocessing,
            eval_data=eval_path,
        ),
    )
    top1 = result.manifest.metrics.top1
    _say(
        f"converted {source.name} → {result.artifact_dir.name}/ "
        f"(top-1 {top1:.3f} on {result.manifest.metrics.eval_samples} held-out digits)"
        if top1 is not None
        else f"converted {source.name} → {result.artifact_dir.name}/"
    )
    return result.artifact_dir


def _write_inputs(folder: Path, count: int, offset: int) -> None:
    import cv2
    import numpy as np
    from sklearn.datasets import load_digits

    folder.mkdir(parents=True, exist_ok=True)
    data = load_digits()
    for i in range(offset, offset + count):
        img = np.clip(np.rint(data.data[i].reshape(8, 8) / PIXEL_SCALE), 0, 255).astype(np.uint8)
        cv2.imwrite(str(folder / f"digit-{i:04d}-is-{data.target[i]}.png"), img)


def _agent_config(
    path: Path, *, device_id: str, token: str, server: str, broker: str, inputs: Path,
    data_dir: Path, interval: float,
) -> None:  # fmt: skip
    path.write_text(
        "\n".join(
            [
                f"device_id = {json.dumps(device_id)}",
                f"server_url = {json.dumps(server)}",
                f"token = {json.dumps(token)}",
                f"data_dir = {json.dumps(str(data_dir))}",
                "",
                "[mqtt]",
                f"url = {json.dumps(broker)}",
                f"username = {json.dumps(device_id)}",
                f"password = {json.dumps(token)}",
                "",
                "[input]",
                'type = "folder"',
                f"path = {json.dumps(str(inputs))}",
                "loop = true",
                "rate_hz = 20.0",
                "",
                "[telemetry]",
                f"interval_s = {interval}",
                "",
            ]
        )
    )


def _print_table(devices: list[dict[str, Any]]) -> None:
    header = f"{'device':<22}{'online':<8}{'phase':<11}{'model':<16}{'infer':>8}{'p50 ms':>9}"
    header += f"{'p95 ms':>9}{'errors':>8}"
    lines = [header, "-" * len(header)]
    for dev in sorted(devices, key=lambda d: str(d["device_id"])):
        tel = dev.get("last_telemetry") or {}
        model = tel.get("model") or dev.get("running")
        label = f"{model['name']}@{model['version']}" if model else "-"
        lat = tel.get("latency_ms") or {}
        p50 = f"{lat['p50']:.3f}" if "p50" in lat else "-"
        p95 = f"{lat['p95']:.3f}" if "p95" in lat else "-"
        lines.append(
            f"{dev['device_id']:<22}{'yes' if dev.get('online') else 'no':<8}"
            f"{dev.get('phase') or '-':<11}{label:<16}{tel.get('inference_count', '-'):>8}"
            f"{p50:>9}{p95:>9}{tel.get('error_count', '-'):>8}"
        )
    print("\n".join(lines), flush=True)


def _reported_new_version(device: dict[str, Any]) -> bool:
    tel = device.get("last_telemetry") or {}
    model = tel.get("model") or {}
    return (
        model.get("name") == MODEL_NAME
        and model.get("version") == MODEL_VERSION
        and int(tel.get("inference_count") or 0) > 0
    )


def run_demo(options: DemoOptions) -> int:
    if not 1 <= options.devices <= 20:
        print("edgefleet demo: --devices must be between 1 and 20", file=sys.stderr)
        return 2
    if options.duration_s <= 0:
        print("edgefleet demo: --duration must be positive", file=sys.stderr)
        return 2
    temp = options.data_dir is None
    root = Path(tempfile.mkdtemp(prefix="edgefleet-demo-") if temp else str(options.data_dir))
    root.mkdir(parents=True, exist_ok=True)
    (root / "logs").mkdir(exist_ok=True)
    procs = _Processes(root / "logs")
    try:
        return _demo(options, root, procs)
    except DemoError as err:
        print(f"edgefleet demo: {err}", file=sys.stderr)
        return 1
    finally:
        procs.close()
        if temp:
            shutil.rmtree(root, ignore_errors=True)
        else:
            _say(f"kept everything in {root}")


def _demo(options: DemoOptions, root: Path, procs: _Processes) -> int:
    from fleet_server.client.api import FleetClient

    started = time.monotonic()
    port = _free_port()
    server_url = f"http://127.0.0.1:{port}"
    token = secrets.token_urlsafe(24)
    env = {**os.environ, "EDGEFLEET_OPERATOR_TOKEN": token, "PYTHONUNBUFFERED": "1"}
    server_args = [sys.executable, "-m", "edgefleet", "server", "--data-dir", str(root / "server"),
                   "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    if options.broker_url:
        broker_url = options.broker_url
        server_args += ["--broker-url", broker_url]
    else:
        broker_port = _free_port()
        broker_url = f"mqtt://127.0.0.1:{broker_port}"
        server_args += ["--broker-port", str(broker_port)]
    if options.database_url:
        server_args += ["--database-url", options.database_url]
    _say(f"starting the fleet server on {server_url} (broker {broker_url})")
    procs.start("server", server_args, env)

    artifact = _train_and_convert(root)
    _wait_http(f"{server_url}/healthz", 60, procs)
    client = FleetClient(server_url, token)
    pushed = client.push_model(artifact)
    _say(f"registered {pushed['name']}@{pushed['version']} ({pushed['size']} bytes, sha256 "
         f"{str(pushed['sha256'])[:12]}…)")  # fmt: skip

    run_id = secrets.token_hex(2)
    device_ids = [f"demo-{run_id}-{i + 1}" for i in range(options.devices)]
    for index, device_id in enumerate(device_ids):
        created = client.add_device(device_id, device_class="x86_64", tags=["demo"])
        inputs = root / "inputs" / device_id
        _write_inputs(inputs, count=40, offset=1400 + 40 * index)
        config = root / f"{device_id}.toml"
        _agent_config(
            config,
            device_id=device_id,
            token=str(created["token"]),
            server=server_url,
            broker=broker_url,
            inputs=inputs,
            data_dir=root / "agents" / device_id,
            interval=options.telemetry_interval_s,
        )
        procs.start(device_id, [sys.executable, "-m", "edgefleet", "agent", "run", "--config",
                                str(config)], env)  # fmt: skip
    _say(f"started {len(device_ids)} agent processes: {', '.join(device_ids)}")

    assigned = client.assign(MODEL_NAME, MODEL_VERSION, tag="demo")
    _say(f"rolled out {MODEL_NAME}@{MODEL_VERSION} to {len(assigned['devices'])} devices")
    rollout_at = time.monotonic()

    deadline = rollout_at + options.duration_s
    first_all: float | None = None
    devices: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        time.sleep(max(1.0, options.telemetry_interval_s))
        procs.check_alive()
        devices = [d for d in client.list_devices() if d["device_id"] in device_ids]
        print(f"\n[demo] t+{time.monotonic() - rollout_at:5.1f} s", flush=True)
        _print_table(devices)
        if first_all is None and all(_reported_new_version(d) for d in devices):
            first_all = time.monotonic() - rollout_at
            _say(f"every device reported telemetry for the new version {first_all:.1f} s after "
                 "the rollout")  # fmt: skip

    codes = procs.stop(device_ids)
    procs.stop(["server"])
    ok = len(devices) == len(device_ids) and all(_reported_new_version(d) for d in devices)
    stats = {name: code for name, code in codes.items() if code != 0}
    if stats:
        _say(f"agents that did not exit cleanly: {stats}")
    _say(f"done in {time.monotonic() - started:.1f} s: "
         + ("every agent reported telemetry for the new version" if ok else
            "NOT every agent reported telemetry for the new version"))  # fmt: skip
    return 0 if ok and not stats else 1
