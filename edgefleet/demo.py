"""The end-to-end demo: one command shows the whole EdgeFleet loop working for real.

server (subprocess) ← converter ← two digits classifiers (signed); N agent processes take
1.0.0 by a plain assignment, then 2.0.0 arrives through a staged rollout (canary → everyone)
whose gates judge the canary's telemetry against the devices still on 1.0.0; telemetry →
database → the tables printed here. Everything runs on loopback in one directory.
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
#: How a camera frame becomes the digits model's input (both demos' models).
DIGITS_PREPROCESSING = Preprocessing(
    color="gray",
    resize=ResizeSpec(width=8, height=8, interpolation="area"),
    scale=PIXEL_SCALE,
    layout="flat",
)
MODEL_NAME = "digits"
OLD_VERSION = "1.0.0"
MODEL_VERSION = "2.0.0"  # the new version the rollout ships
#: Regularisation of the two classifiers: the new one is the better model.
_C = {OLD_VERSION: 0.005, MODEL_VERSION: 0.01}


@dataclass(frozen=True)
class DemoOptions:
    duration_s: float = 45.0
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


def _train_and_convert(work: Path, version: str, signing_key: bytes) -> Path:
    """Train a digits classifier, save it, convert it into a signed artifact directory."""
    import joblib
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    from converters.api import ConvertOptions, convert

    digits = load_digits()
    x, y = digits.data.astype(np.float32), digits.target.astype(np.int64)
    model = LogisticRegression(max_iter=500, C=_C[version]).fit(x[:1400], y[:1400])
    source = work / f"digits-{version}.pkl"
    joblib.dump(model, source)
    eval_path = work / "digits-eval.npz"
    np.savez(eval_path, x=x[1400:], y=y[1400:])
    preprocessing = DIGITS_PREPROCESSING
    result = convert(
        source,
        work / f"artifact-{version}",
        ConvertOptions(
            name=MODEL_NAME,
            version=version,
            task="classification",
            preprocessing=preprocessing,
            eval_data=eval_path,
        ),
    )
    from edgefleet.signing import sign_manifest

    manifest_path = result.artifact_dir / "manifest.json"
    manifest_path.write_text(sign_manifest(result.manifest, signing_key).to_json())
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
    data_dir: Path, interval: float, trusted_key: Path,
) -> None:  # fmt: skip
    path.write_text(
        "\n".join(
            [
                f"device_id = {json.dumps(device_id)}",
                f"server_url = {json.dumps(server)}",
                f"token = {json.dumps(token)}",
                f"data_dir = {json.dumps(str(data_dir))}",
                f"trusted_keys = [{json.dumps(str(trusted_key))}]",
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
                "[probation]",
                "inferences = 20",
                "max_s = 15",
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


def _reported(device: dict[str, Any], version: str) -> bool:
    tel = device.get("last_telemetry") or {}
    model = tel.get("model") or {}
    return (
        model.get("name") == MODEL_NAME
        and model.get("version") == version
        and int(tel.get("inference_count") or 0) > 0
    )


def _reported_new_version(device: dict[str, Any]) -> bool:
    return _reported(device, MODEL_VERSION)


ROLLOUT_SPEC: dict[str, Any] = {
    "strategy": {"canary_percent": 30, "batches": [100], "soak_s": 3, "update_timeout_s": 60},
    "gates": {
        "error_rate": {"min_samples": 20},
        "latency_p95_ratio": {"min_samples": 2, "max_ratio": 2.0},
        "confidence_shift": {"min_samples": 20},
    },
}


def _print_decisions(report: dict[str, Any]) -> None:
    print("\n[demo] the rollout's decisions, with the numbers behind them:", flush=True)
    for decision in report.get("decisions", []):
        print(f"  stage {decision['stage']}  {decision['action']:<14} {decision['reason']}")
        for gate in (decision.get("evidence") or {}).get("gates", []):
            value = "-" if gate["value"] is None else f"{gate['value']:.4g}"
            print(f"      {gate['name']:<18} {gate['status']:<12} {value:>10} "
                  f"(threshold {gate['threshold']:g}, n={gate['samples']})")  # fmt: skip
    diff = report.get("differential") or {}
    for name, row in sorted((diff.get("latency_by_class") or {}).items()):
        print(f"  {name}: p95 {MODEL_VERSION} / {OLD_VERSION} = {row.get('p95_ratio')}; "
              f"confidence shift {diff.get('confidence_tv_distance')} "
              f"(baseline: {diff.get('baseline')})", flush=True)  # fmt: skip


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
    from fleet_server.services.rollouts.state import TERMINAL_STATES, RolloutState

    started = time.monotonic()
    port = _free_port()
    server_url = f"http://127.0.0.1:{port}"
    token = secrets.token_urlsafe(24)
    from edgefleet.signing import generate_keypair

    keys = root / "keys"
    keys.mkdir(exist_ok=True)
    generate_keypair(keys / "signing.pem", keys / "signing.pub.pem")
    # The server trusts the key the demo signs with: a signature counts only once verified, and
    # rollouts ship verified artifacts only.
    env = {
        **os.environ,
        "EDGEFLEET_OPERATOR_TOKEN": token,
        "EDGEFLEET_TRUSTED_KEYS": str(keys / "signing.pub.pem"),
        "PYTHONUNBUFFERED": "1",
    }
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

    private = (keys / "signing.pem").read_bytes()
    artifacts = [_train_and_convert(root, v, private) for v in (OLD_VERSION, MODEL_VERSION)]
    _wait_http(f"{server_url}/healthz", 60, procs)
    client = FleetClient(server_url, token)
    for artifact in artifacts:
        pushed = client.push_model(artifact)
        _say(f"registered {pushed['name']}@{pushed['version']} ({pushed['size']} bytes, sha256 "
             f"{str(pushed['sha256'])[:12]}…, signature {pushed.get('signature_status')})"
        )  # fmt: skip

    run_id = secrets.token_hex(2)
    device_ids = [f"demo-{run_id}-{i + 1}" for i in range(options.devices)]
    for device_id in device_ids:
        created = client.add_device(device_id, device_class="x86_64", tags=["demo"])
        inputs = root / "inputs" / device_id
        # The same held-out digits on every device: canary and control see the same inputs,
        # so the gates compare the models, not the inputs.
        _write_inputs(inputs, count=40, offset=1400)
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
            trusted_key=keys / "signing.pub.pem",
        )
        procs.start(device_id, [sys.executable, "-m", "edgefleet", "agent", "run", "--config",
                                str(config)], env)  # fmt: skip
    _say(f"started {len(device_ids)} agent processes: {', '.join(device_ids)}")

    assigned = client.assign(MODEL_NAME, OLD_VERSION, tag="demo")
    _say(f"assigned {MODEL_NAME}@{OLD_VERSION} to {len(assigned['devices'])} devices")
    deadline = time.monotonic() + 60
    devices: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        time.sleep(1.0)
        procs.check_alive()
        devices = [d for d in client.list_devices() if d["device_id"] in device_ids]
        if len(devices) == len(device_ids) and all(_reported(d, OLD_VERSION) for d in devices):
            break
    _print_table(devices)

    rollout = client.create_rollout(
        {"model": MODEL_NAME, "version": MODEL_VERSION, "selector": {"tags": ["demo"]},
         **ROLLOUT_SPEC}
    )  # fmt: skip
    rollout_id = int(rollout["id"])
    _say(f"rollout {rollout_id}: {MODEL_NAME}@{MODEL_VERSION}, canary first; gates compare it "
         f"with the devices still on {OLD_VERSION}")  # fmt: skip
    rollout_at = time.monotonic()
    deadline = rollout_at + options.duration_s
    first_all: float | None = None
    state = str(rollout["state"])
    while time.monotonic() < deadline:
        time.sleep(max(1.0, options.telemetry_interval_s))
        procs.check_alive()
        rollout = client.get_rollout(rollout_id)
        state = str(rollout["state"])
        devices = [d for d in client.list_devices() if d["device_id"] in device_ids]
        counts = rollout.get("counts") or {}
        print(f"\n[demo] t+{time.monotonic() - rollout_at:5.1f} s  rollout {state}, "
              f"{rollout['stage_name']}: {counts.get('committed', 0)} committed, "
              f"{counts.get('assigned', 0)} updating", flush=True)  # fmt: skip
        _print_table(devices)
        if first_all is None and all(_reported_new_version(d) for d in devices):
            first_all = time.monotonic() - rollout_at
            _say(f"every device reported telemetry for the new version {first_all:.1f} s after "
                 "the rollout started")  # fmt: skip
        if state in TERMINAL_STATES and (first_all is not None or state != RolloutState.COMPLETED):
            break
    _print_decisions(client.rollout_report(rollout_id))

    codes = procs.stop(device_ids)
    procs.stop(["server"])
    ok = (
        state == RolloutState.COMPLETED
        and len(devices) == len(device_ids)
        and all(_reported_new_version(d) for d in devices)
    )
    stats = {name: code for name, code in codes.items() if code != 0}
    if stats:
        _say(f"agents that did not exit cleanly: {stats}")
    _say(f"done in {time.monotonic() - started:.1f} s: rollout {state}; "
         + ("every agent reported telemetry for the new version" if ok else
            "NOT every agent reported telemetry for the new version"))  # fmt: skip
    return 0 if ok and not stats else 1
