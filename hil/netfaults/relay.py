"""A userspace TCP relay from a host address to a loopback service, with optional delay.

The broker and the server listen on 127.0.0.1, which a namespace cannot reach; the relay
listens on the host end of the veth pair and forwards each connection to the service. It is
also where delay is added when the kernel has no ``sch_netem``: every chunk read is delivered
``delay ± jitter`` seconds later (uniform), never before a chunk read earlier on the same
direction, so TCP's byte order holds. Closing the relay closes every connection it carries.
"""

from __future__ import annotations

import contextlib
import functools
import heapq
import random
import socket
import threading
import time
from collections.abc import Callable

from hil.netfaults.errors import NetFaultError

CHUNK = 64 * 1024


class Relay:
    """``Relay(listen=(ip, 0), target=("127.0.0.1", port))``; ``.port`` after ``start()``."""

    def __init__(self, *, listen: tuple[str, int], target: tuple[str, int]) -> None:
        self.listen = listen
        self.target = target
        self.delay_s = 0.0
        self.jitter_s = 0.0
        self.connections = 0
        self._rng = random.Random(0)  # noqa: S311  (a fault schedule, not a secret)
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._closed = threading.Event()
        self._server: socket.socket | None = None
        self.port = 0

    def set_delay(self, delay_s: float, jitter_s: float = 0.0) -> None:
        if delay_s < 0 or jitter_s < 0 or jitter_s > delay_s:
            raise NetFaultError(f"delay {delay_s} s ± {jitter_s} s: need 0 <= jitter <= delay")
        self.delay_s, self.jitter_s = delay_s, jitter_s

    def start(self) -> Relay:
        try:
            server = socket.create_server(self.listen, backlog=64)
        except OSError as err:
            raise NetFaultError(f"relay cannot listen on {self.listen}: {err}") from err
        self._server = server
        self.port = int(server.getsockname()[1])
        threading.Thread(target=self._accept, name=f"relay-{self.port}", daemon=True).start()
        return self

    def close(self) -> None:
        self._closed.set()
        if self._server is not None:
            self._server.close()
        with self._lock:
            sockets, self._sockets = set(self._sockets), set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def __enter__(self) -> Relay:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        assert self._server is not None
        while not self._closed.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets |= {client, upstream}
                self.connections += 1
            done = _Countdown(2, functools.partial(self._forget, client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                _Pipe(self, src, dst, done).start()

    def _delay(self) -> float:
        if not self.delay_s:
            return 0.0
        return self._rng.uniform(self.delay_s - self.jitter_s, self.delay_s + self.jitter_s)

    def _forget(self, *sockets: socket.socket) -> None:
        with self._lock:
            for sock in sockets:
                self._sockets.discard(sock)
                sock.close()


class _Pipe:
    """One direction: a reader thread stamps chunks with a due time, a writer sends them."""

    def __init__(
        self, relay: Relay, src: socket.socket, dst: socket.socket, done: _Countdown
    ) -> None:
        self.relay, self.src, self.dst, self.done = relay, src, dst, done
        self._due: list[tuple[float, int, bytes]] = []
        self._cond = threading.Condition()
        self._eof = False
        self._n = 0

    def start(self) -> None:
        threading.Thread(target=self._read, name="relay-read", daemon=True).start()
        threading.Thread(target=self._write, name="relay-write", daemon=True).start()

    def _read(self) -> None:
        last = 0.0
        while True:
            try:
                chunk = self.src.recv(CHUNK)
            except OSError:
                chunk = b""
            with self._cond:
                if not chunk:
                    self._eof = True
                    self._cond.notify()
                    return
                last = max(last, time.monotonic() + self.relay._delay())  # keep the order
                self._n += 1
                heapq.heappush(self._due, (last, self._n, chunk))
                self._cond.notify()

    def _write(self) -> None:
        while True:
            with self._cond:
                while not self._due and not self._eof:
                    self._cond.wait()
                if not self._due:  # end of stream and nothing left: pass the close on
                    break
                due, _, chunk = self._due[0]
                wait = due - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._due)
            try:
                self.dst.sendall(chunk)
            except OSError:
                break
        with contextlib.suppress(OSError):
            self.dst.shutdown(socket.SHUT_WR)  # pass the end of stream (or the failure) on
        self.done.tick()


class _Countdown:
    """Calls ``action`` once ``tick`` was called ``n`` times: both directions of a connection
    ended, so both sockets can close."""

    def __init__(self, n: int, action: Callable[[], None]) -> None:
        self._n = n
        self._action = action
        self._lock = threading.Lock()

    def tick(self) -> None:
        with self._lock:
            self._n -= 1
            last = self._n == 0
        if last:
            self._action()
