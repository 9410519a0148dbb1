"""Factories for agent tests: edited artifacts, configs, a bundle HTTP server."""

from __future__ import annotations

import io
import tarfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from edgefleet.artifact import hash_file, read_manifest
from edgefleet.contract import ModelFile


def rehash(artifact_dir: Path) -> None:
    """Recompute every file's sha256/size in the manifest after a test edited the files."""
    manifest = read_manifest(artifact_dir)
    files = []
    for entry in manifest.files:
        sha, size = hash_file(artifact_dir / entry.path)
        files.append(ModelFile(path=entry.path, sha256=sha, size=size, role=entry.role))
    updated = manifest.model_copy(update={"files": files})
    (artifact_dir / "manifest.json").write_text(updated.to_json())


def raw_tar_gz(members: dict[str, bytes], *, symlink: tuple[str, str] | None = None) -> bytes:
    """A .tar.gz with exactly these members (and optionally a symlink), however hostile."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if symlink is not None:
            info = tarfile.TarInfo(symlink[0])
            info.type = tarfile.SYMTYPE
            info.linkname = symlink[1]
            tar.addfile(info)
    return buf.getvalue()


@dataclass
class BundleServer:
    """A real HTTP server on loopback serving byte blobs by path, behind a bearer token."""

    token: str
    files: dict[str, bytes] = field(default_factory=dict)
    #: path → (declared Content-Length, bytes actually sent) to simulate a truncated body
    truncate: dict[str, int] = field(default_factory=dict)
    #: path → body bytes sent before the connection is cut, one entry per request (a lost link)
    cuts: dict[str, list[int]] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    #: answer ``Range: bytes=N-`` with 206 + Content-Range (otherwise Range is ignored: 200)
    ranges: bool = False
    ranges_asked: list[str] = field(default_factory=list)
    #: when set, a truncated body is held open (a stalled transfer) until this event is set
    hold: threading.Event | None = None
    url: str = ""

    def handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802  (http.server's naming)
                auth = self.headers.get("Authorization")
                server.requests.append((self.path, auth))
                if auth != f"Bearer {server.token}":
                    self.send_error(401, "Unauthorized")
                    return
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404, "Not Found")
                    return
                asked = self.headers.get("Range", "")
                start = 0
                if asked:
                    server.ranges_asked.append(asked)
                if server.ranges and asked.startswith("bytes=") and asked.endswith("-"):
                    start = int(asked[len("bytes=") : -1])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Type", "application/gzip")
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                end = server.truncate.get(self.path, len(data))
                if server.cuts.get(self.path):
                    end = start + server.cuts[self.path].pop(0)
                    self.close_connection = True
                self.wfile.write(data[start:end])
                if server.hold is not None and self.path in server.truncate:
                    self.wfile.flush()
                    server.hold.wait(30)

            def log_message(self, format: str, *args: object) -> None:
                return

        return Handler


@contextmanager
def serve_bundles(token: str) -> Iterator[BundleServer]:
    state = BundleServer(token=token)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), state.handler())
    httpd.daemon_threads = True
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()


def config_toml(
    *,
    device_id: str = "dev-1",
    data_dir: Path,
    mqtt_url: str = "mqtt://127.0.0.1:1883",
    server_url: str = "http://127.0.0.1:8080",
    extra: str = "",
    input_dir: Path | None = None,
    rate_hz: float = 20.0,
    interval_s: float = 5.0,
) -> str:
    text = f"""
device_id = "{device_id}"
server_url = "{server_url}"
token = "device-token"
data_dir = "{data_dir}"
{extra}

[mqtt]
url = "{mqtt_url}"
keepalive = 10

[telemetry]
interval_s = {interval_s}

[engine]
threads = 1
"""
    if input_dir is not None:
        text += f"""
[input]
type = "folder"
path = "{input_dir}"
pattern = "*"
loop = true
rate_hz = {rate_hz}
"""
    return text


Recorder = Callable[..., None]


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    qos: int
    retain: bool


class Watcher:
    """A separate paho client that records everything under one device's topics."""

    def __init__(self, mqtt_url: str, device_id: str, *, name: str = "watch") -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        from edgefleet.mqtt import BrokerAddress

        self.address = BrokerAddress.from_url(mqtt_url)
        self.messages: list[Received] = []
        self._cond = threading.Condition()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{name}-{device_id}")
        if self.address.username:
            self.client.username_pw_set(self.address.username, self.address.password)
        self.client.on_message = self._on_message
        self.filter = f"edgefleet/v1/{device_id}/#"

    def _on_message(self, client: object, userdata: object, msg: object) -> None:
        received = Received(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain))  # type: ignore[attr-defined]
        with self._cond:
            self.messages.append(received)
            self._cond.notify_all()

    def __enter__(self) -> Watcher:
        self.client.connect(self.address.host, self.address.port, keepalive=30)
        self.client.loop_start()
        result, mid = self.client.subscribe(self.filter, qos=1)
        assert result == 0
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(timeout=5)
        assert info.is_published()

    def wait_count(
        self, predicate: Callable[[Received], bool], n: int, *, timeout: float = 20.0
    ) -> list[Received]:
        """Wait until ``n`` messages match; returns them."""
        import time

        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                matched = [m for m in self.messages if predicate(m)]
                if len(matched) >= n:
                    return matched
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{len(matched)} of {n} messages within {timeout} s")
                self._cond.wait(remaining)

    def wait_for(
        self, predicate: Callable[[Received], bool], *, timeout: float = 20.0, what: str = ""
    ) -> Received:
        import time

        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for message in self.messages[seen:]:
                    if predicate(message):
                        return message
                seen = len(self.messages)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    topics = [m.topic.rsplit("/", 1)[-1] for m in self.messages[-20:]]
                    raise TimeoutError(f"no message {what} within {timeout} s; last: {topics}")
                self._cond.wait(remaining)


def desired_bundle(
    device_id: str, *, seq: int, version: str, url: str, bundle: bytes, name: str = "digits"
) -> bytes:
    """The encoded DesiredState pointing a device at ``bundle`` served at ``url``."""
    import hashlib

    from edgefleet.contract import DesiredModel, DesiredState, encode

    model = DesiredModel(
        name=name,
        version=version,
        url=url,
        sha256=hashlib.sha256(bundle).hexdigest(),
        size=len(bundle),
    )
    return encode(DesiredState(device_id=device_id, seq=seq, model=model))
