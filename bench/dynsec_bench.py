"""How soon a device-login change reaches Mosquitto through its dynamic-security plugin
(``fleet_server.services.broker_credentials.dynsec``), on a private Mosquitto 2.0 on loopback:

* enrol → admitted: ``add`` returns, then the device's CONNECT is accepted (no reload);
* remove → cut off: ``remove`` is called while the device is connected, until the broker has
  closed its connection (paho's on_disconnect);
* rotate → cut off: the same for ``rotate`` (a new password).

Medians and p95 over N devices, side by side in one run, with the load average: a command is one
MQTT round trip to the plugin, which also saves its JSON file on every change.

    PYTHONPATH=. python bench/dynsec_bench.py [--devices 30]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import paho.mqtt.client as paho  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from fleet_server.services.broker_credentials.dynsec import (  # noqa: E402
    DynsecClient,
    DynsecCredentials,
)
from fleet_server.services.broker_credentials.dynsec_config import (  # noqa: E402
    PLUGIN_PATH,
    initial_json,
)

SERVER = ("edgefleet.server", "bench-server-password-0123")


class Device:
    def __init__(self, port: int, device_id: str, token: str) -> None:
        self.connected = threading.Event()
        self.closed_at: float | None = None
        self.refused = False
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=device_id)
        self.client.username_pw_set(device_id, token)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self.refused = reason.is_failure
        self.connected.set()

    def _on_disconnect(self, *_args: Any) -> None:
        if self.closed_at is None:
            self.closed_at = time.perf_counter()

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _summary(name: str, values: list[float]) -> str:
    ms = sorted(v * 1000 for v in values)
    p95 = ms[min(len(ms) - 1, int(0.95 * len(ms)))]
    return f"{name:<22} median {statistics.median(ms):7.1f} ms   p95 {p95:7.1f} ms   n={len(ms)}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=30)
    args = parser.parse_args()
    mosquitto = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin")
    if not PLUGIN_PATH.exists() or mosquitto is None:
        print(f"needs mosquitto and {PLUGIN_PATH}", file=sys.stderr)  # noqa: T201
        return 2
    directory = Path(tempfile.mkdtemp(prefix="edgefleet-dynsec-bench-"))
    directory.chmod(0o777)
    config = directory / "dynamic-security.json"
    config.write_text(initial_json(server=SERVER, devices=[]))
    config.chmod(0o666)
    port = _free_port()
    conf = directory / "mosquitto.conf"
    conf.write_text(
        f"per_listener_settings false\nallow_anonymous false\nplugin {PLUGIN_PATH}\n"
        f"plugin_opt_config_file {config}\nlistener {port} 127.0.0.1\n"
    )
    broker = subprocess.Popen([mosquitto, "-c", str(conf)], stderr=subprocess.DEVNULL)
    admin = None
    try:
        time.sleep(0.5)
        admin = DynsecClient(
            broker_url=f"mqtt://127.0.0.1:{port}",
            username=SERVER[0],
            password=SERVER[1],
            client_id="edgefleet.bench.dynsec",
        )
        admin.start()
        credentials = DynsecCredentials(admin)
        admitted, removed, rotated = [], [], []
        for i in range(args.devices):
            device_id, token = f"bench-{i}", f"bench-token-{i}-0123456789"
            started = time.perf_counter()
            credentials.add(device_id=device_id, token=token)
            device = Device(port, device_id, token)
            assert device.connected.wait(5) and not device.refused
            admitted.append(time.perf_counter() - started)
            started = time.perf_counter()
            if i % 2:
                credentials.rotate(device_id=device_id, token=token + "-new")
            else:
                credentials.remove(device_id=device_id)
            while device.closed_at is None and time.perf_counter() - started < 5:
                time.sleep(0.0005)
            assert device.closed_at is not None, "never cut off"
            (rotated if i % 2 else removed).append(device.closed_at - started)
            device.close()
        print(f"load average {os.getloadavg()[0]:.2f}, Mosquitto 2.0 on loopback")  # noqa: T201
        for name, values in (
            ("enrol -> admitted", admitted),
            ("remove -> cut off", removed),
            ("rotate -> cut off", rotated),
        ):
            print(_summary(name, values))  # noqa: T201
    finally:
        if admin is not None:
            admin.close()
        broker.terminate()
        broker.wait(10)
        shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
