"""``type = "http"``: an HTTP endpoint on the device (standard library ``http.server``).

- ``POST /infer``: the body is an encoded image or a ``.npy`` tensor (batch 1 or N); the
  answer is ``{"results": [...]}`` once the pipeline has run it. 400: not an image / unreadable
  tensor; 413: body too large; 422: a tensor whose shape or dtype does not fit the model;
  503: no model serving or the queue stayed full; 504: no result within ``timeout_s``.
- ``GET /healthz``: 200 with the serving model, 503 when none.
- ``GET /metrics``: Prometheus text exposition of the agent's counters.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from agent.errors import InferenceError, InputError, ModelUnavailableError
from agent.inputs.base import InputItem, SourceContext
from agent.plugin_config import HttpInputConfig

#: InputError kinds that mean "this body is not a usable input" (400) vs "wrong tensor" (422).
UNPROCESSABLE_KINDS = frozenset({"bad_tensor_shape", "bad_tensor_dtype"})


def status_for(err: Exception) -> int:
    if isinstance(err, InputError):
        return 422 if err.kind in UNPROCESSABLE_KINDS else 400
    if isinstance(err, InferenceError):
        return 422
    if isinstance(err, ModelUnavailableError):
        return 503
    return 500


class HttpSource:
    live = False

    def __init__(self, config: HttpInputConfig, *, context: SourceContext) -> None:
        self.config = config
        self.context = context
        self._inbox: queue.Queue[InputItem] = queue.Queue(maxsize=64)
        self.port: int | None = None
        self.bound = threading.Event()
        self._seq = 0
        self._seq_lock = threading.Lock()

    def items(self, stop: threading.Event) -> Iterator[InputItem]:
        try:
            server = ThreadingHTTPServer((self.config.host, self.config.port), self._handler())
        except OSError as err:
            where = f"{self.config.host}:{self.config.port}"
            self.context.on_error("input_unavailable", f"http {where}: {err.strerror}")
            return
        server.daemon_threads = True
        self.port = int(server.server_address[1])
        thread = threading.Thread(
            target=server.serve_forever, args=(0.1,), name="http", daemon=True
        )
        thread.start()
        self.bound.set()
        try:
            while not stop.is_set():
                try:
                    yield self._inbox.get(timeout=0.1)
                except queue.Empty:
                    continue
        finally:
            server.shutdown()
            server.server_close()
            while True:  # requests still waiting: tell them, do not leave them hanging
                try:
                    item = self._inbox.get_nowait()
                except queue.Empty:
                    break
                if item.reply is not None:
                    item.reply(None, ModelUnavailableError("the agent is stopping"))

    def _next_name(self) -> str:
        with self._seq_lock:
            self._seq += 1
            return f"http#{self._seq}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        source = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "edgefleet-agent"
            timeout = 30  # seconds a client may stall mid-request before its socket is closed

            def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _json(self, code: int, obj: dict[str, Any]) -> None:
                self._send(code, json.dumps(obj).encode())

            def do_GET(self) -> None:  # noqa: N802  (http.server's naming)
                if self.path == "/healthz":
                    ok, body = source.context.health()
                    self._json(200 if ok else 503, body)
                elif self.path == "/metrics":
                    text = source.context.metrics().encode()
                    self._send(200, text, "text/plain; version=0.0.4; charset=utf-8")
                else:
                    self._json(404, {"error": "not found"})

            def do_POST(self) -> None:  # noqa: N802
                if self.path.split("?", 1)[0] != "/infer":
                    self._json(404, {"error": "not found"})
                    return
                try:
                    length = int(self.headers.get("Content-Length", ""))
                except ValueError:
                    self._json(411, {"error": "Content-Length required"})
                    return
                if length > source.config.max_body_bytes or length < 0:
                    source.context.on_error("input_too_large", f"http body of {length} bytes")
                    self._json(413, {"error": f"body larger than {source.config.max_body_bytes}"})
                    return
                body = self.rfile.read(length)
                self._infer(body)

            def _infer(self, body: bytes) -> None:
                done = threading.Event()
                answer: dict[str, Any] = {}

                def reply(results: list[dict[str, Any]] | None, error: Exception | None) -> None:
                    answer["results"], answer["error"] = results, error
                    done.set()

                name = source._next_name()
                timeout = source.config.timeout_s
                try:
                    source._inbox.put(InputItem(name, body, reply=reply), timeout=timeout)
                except queue.Full:
                    source.context.on_error("busy", f"{name}: queue full")
                    self._json(503, {"error": "busy: the inference queue stayed full"})
                    return
                if not done.wait(timeout):
                    self._json(504, {"error": f"no result within {timeout} s"})
                    return
                error = answer["error"]
                if error is not None:
                    self._json(status_for(error), {"error": str(error)})
                else:
                    self._json(200, {"source": name, "results": answer["results"]})

            def log_message(self, format: str, *args: object) -> None:
                return  # requests are counted in telemetry, not logged one by one

        return Handler
