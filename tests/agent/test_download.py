"""Resumable downloads against real stdlib HTTP servers, with and without Range support."""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from agent.download import download
from agent.errors import UpdateError

DATA = secrets.token_bytes(700_000)
SHA = hashlib.sha256(DATA).hexdigest()


@dataclass
class Server:
    ranges: bool
    #: sent instead of the right Content-Range, to play a broken server
    bad_range: str | None = None
    #: stop after this many body bytes (a connection lost mid-transfer), once
    cut_at: int | None = None
    requests: list[str | None] = field(default_factory=list)
    url: str = ""


@pytest.fixture(params=[True, False], ids=["range", "no-range"])
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    with _serve(Server(ranges=request.param)) as state:
        yield state


@contextmanager
def _serve(state: Server) -> Iterator[Server]:

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802  (http.server's naming)
            asked = self.headers.get("Range")
            state.requests.append(asked)
            start = 0
            match = re.fullmatch(r"bytes=(\d+)-", asked or "")
            if state.ranges and match is not None:
                start = int(match.group(1))
                self.send_response(206)
                value = state.bad_range or f"bytes {start}-{len(DATA) - 1}/{len(DATA)}"
                self.send_header("Content-Range", value)
            else:
                self.send_response(200)
            body = DATA[start:]
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if state.cut_at is not None:
                body, state.cut_at = body[: state.cut_at], None
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/bundle"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()


def _get(server: Server, dest: Path) -> Path:
    return download(url=server.url, token=None, dest=dest, size=len(DATA), sha256=SHA, timeout=5)


def test_interrupted_download_resumes_or_restarts(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "b.tar.gz"
    part = tmp_path / "b.tar.gz.part"
    server.cut_at = 300_000
    with pytest.raises(UpdateError, match="truncated: 300000 of 700000 bytes"):
        _get(server, dest)
    assert part.stat().st_size == 300_000 and not dest.exists()
    assert _get(server, dest).read_bytes() == DATA
    assert not part.exists()
    # With Range the second request asked for the rest and got 206; without, the 200 body
    # replaced the part from byte 0. Either way the whole file hashed right.
    assert server.requests == [None, "bytes=300000-"]


def test_a_part_left_by_a_crash_is_resumed_and_hashed_whole(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "b.tar.gz"
    (tmp_path / "b.tar.gz.part").write_bytes(DATA[:123_456])
    assert _get(server, dest).read_bytes() == DATA
    assert server.requests == ["bytes=123456-"]
    # A part holding wrong bytes: resumed, the whole file fails its hash and is deleted;
    # a server without Range sends everything again and the download succeeds.
    other = tmp_path / "c.tar.gz"
    (tmp_path / "c.tar.gz.part").write_bytes(b"x" * 1000)
    if server.ranges:
        with pytest.raises(UpdateError, match="sha256 does not match"):
            _get(server, other)
        assert not (tmp_path / "c.tar.gz.part").exists()
    else:
        assert _get(server, other).read_bytes() == DATA


def test_a_finished_bundle_left_by_a_crash_is_reused_only_if_right(
    server: Server, tmp_path: Path
) -> None:
    dest = tmp_path / "b.tar.gz"
    dest.write_bytes(DATA)  # downloaded, then the agent died before unpacking it
    assert _get(server, dest).read_bytes() == DATA
    assert server.requests == []  # hash checked again, nothing fetched
    for wrong in (DATA[:-1] + b"\0", DATA[:1000], DATA + b"x"):  # bad bytes, short, long
        dest.write_bytes(wrong)
        assert _get(server, dest).read_bytes() == DATA
    assert server.requests == [None, None, None]  # each wrong one fetched again from byte 0


def test_an_oversized_part_or_a_wrong_content_range_starts_over(tmp_path: Path) -> None:
    with _serve(Server(ranges=True)) as server:
        part = tmp_path / "b.tar.gz.part"
        part.write_bytes(DATA + b"extra")  # larger than the bundle: never resumed
        assert _get(server, tmp_path / "b.tar.gz").read_bytes() == DATA
        assert server.requests == [None]
        (tmp_path / "b.tar.gz").unlink()  # else the finished bundle would be reused
        part.write_bytes(DATA[:1000])
        server.bad_range = f"bytes 0-{len(DATA) - 1}/{len(DATA)}"  # not the range asked for
        with pytest.raises(UpdateError, match="asked for bytes 1000-699999"):
            _get(server, tmp_path / "b.tar.gz")
        assert not part.exists()
        server.bad_range = None
        assert _get(server, tmp_path / "b.tar.gz").read_bytes() == DATA
        assert server.requests == [None, "bytes=1000-", None]
