"""A webhook receiver on loopback for tests: records each POST (lower-cased headers, body) and
answers with the status ``answer(headers, body)`` gives."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Received = list[tuple[dict[str, str], bytes]]


@contextmanager
def webhook_server(
    answer: Callable[[dict[str, str], bytes], int] = lambda _h, _b: 202,
) -> Iterator[tuple[str, Received]]:
    received: Received = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802  (http.server's naming)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            headers = {k.lower(): v for k, v in self.headers.items()}
            received.append((headers, body))
            self.send_response(answer(headers, body))
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/retrain", received
    finally:
        server.shutdown()
        server.server_close()
