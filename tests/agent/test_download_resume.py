"""Downloads that keep going: retries that resume, If-Range, and the bytes fetched twice.

Against a real stdlib HTTP server that cuts connections mid-body, answers 503 while
"restarting", and can change the content behind a URL (a new ETag).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from agent.download import RetryPolicy, download, part_files
from agent.download_counters import DownloadCounters
from agent.errors import UpdateError

SIZE = 600_000
FAST = RetryPolicy(window_s=30.0, first_delay_s=0.01, max_delay_s=0.05)


@dataclass
class Origin:
    data: bytes = field(default_factory=lambda: secrets.token_bytes(SIZE))
    etag: str | None = '"v1"'
    #: body bytes sent before the connection is cut, one entry per request (then whole)
    cuts: list[int] = field(default_factory=list)
    #: statuses answered instead of the body, one per request (before ``cuts`` apply)
    statuses: list[int] = field(default_factory=list)
    #: (Range, If-Range) of every request
    asked: list[tuple[str | None, str | None]] = field(default_factory=list)
    url: str = ""

    @property
    def sha(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@contextmanager
def _serve(origin: Origin) -> Iterator[Origin]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802  (http.server's naming)
            asked, if_range = self.headers.get("Range"), self.headers.get("If-Range")
            origin.asked.append((asked, if_range))
            if origin.statuses:
                self.send_error(origin.statuses.pop(0))
                return
            data, start = origin.data, 0
            match = re.fullmatch(r"bytes=(\d+)-", asked or "")
            if match is not None and (if_range is None or if_range == origin.etag):
                start = int(match.group(1))
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            if origin.etag is not None:
                self.send_header("ETag", origin.etag)
            self.send_header("Content-Length", str(len(data) - start))
            self.end_headers()
            end = start + origin.cuts.pop(0) if origin.cuts else len(data)
            self.wfile.write(data[start:end])
            self.wfile.flush()
            self.close_connection = True  # a cut: the client sees the body end early

        def log_message(self, format: str, *args: object) -> None:
            return

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    origin.url = f"http://127.0.0.1:{httpd.server_address[1]}/bundle"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield origin
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def origin() -> Iterator[Origin]:
    with _serve(Origin()) as state:
        yield state


def _get(
    origin: Origin,
    dest: Path,
    counters: DownloadCounters,
    *,
    retry: RetryPolicy = FAST,
    stop: threading.Event | None = None,
) -> Path:
    return download(
        url=origin.url,
        token=None,
        dest=dest,
        size=len(origin.data),
        sha256=origin.sha,
        timeout=5,
        count=counters.add,
        retry=retry,
        stop=stop,
    )


def test_cut_connections_are_resumed_within_one_download(origin: Origin, tmp_path: Path) -> None:
    origin.cuts = [100_000, 150_000, 50_000]
    counters = DownloadCounters()
    assert _get(origin, tmp_path / "b.tgz", counters).read_bytes() == origin.data
    assert [a for a, _ in origin.asked] == [
        None,
        "bytes=100000-",
        "bytes=250000-",
        "bytes=300000-",
    ]
    assert all(v == '"v1"' for a, v in origin.asked if a)  # If-Range with the first ETag
    totals = counters.totals()
    assert totals == {
        "bytes": SIZE,
        "refetched_bytes": 0,
        "retries": 3,
        "resumes": 3,
        "restarts": 0,
    }
    assert not any(p.exists() for p in part_files(tmp_path / "b.tgz"))


def test_changed_content_restarts_from_zero_and_counts_the_bytes_twice(
    origin: Origin, tmp_path: Path
) -> None:
    dest = tmp_path / "b.tgz"
    origin.cuts = [200_000]
    counters = DownloadCounters()
    with pytest.raises(UpdateError, match="truncated: 200000 of 600000"):
        _get(origin, dest, counters, retry=RetryPolicy())
    part, validator = part_files(dest)
    assert part.stat().st_size == 200_000 and validator.read_text().strip() == '"v1"'
    # The bundle behind the URL is replaced (same size, new bytes, new ETag): If-Range no
    # longer matches, the server sends the whole new body, the part restarts from zero.
    origin.data, origin.etag = secrets.token_bytes(SIZE), '"v2"'
    assert _get(origin, dest, counters).read_bytes() == origin.data
    assert origin.asked[-1] == ("bytes=200000-", '"v1"')
    totals = counters.totals()
    assert totals["restarts"] == 1 and totals["resumes"] == 0
    assert totals["bytes"] == 200_000 + SIZE
    assert totals["refetched_bytes"] == 200_000


def test_a_part_from_before_a_restart_is_resumed_not_refetched(
    origin: Origin, tmp_path: Path
) -> None:
    dest = tmp_path / "b.tgz"
    part, validator = part_files(dest)
    part.write_bytes(origin.data[:250_000])  # left by an agent that was killed
    validator.write_text('"v1"\n')
    counters = DownloadCounters()
    assert _get(origin, dest, counters).read_bytes() == origin.data
    assert origin.asked == [("bytes=250000-", '"v1"')]
    assert counters.totals()["bytes"] == SIZE - 250_000
    assert counters.totals()["refetched_bytes"] == 0


def test_transient_statuses_are_retried_and_others_fail_at_once(
    origin: Origin, tmp_path: Path
) -> None:
    origin.statuses = [503, 502, 429]
    counters = DownloadCounters()
    assert _get(origin, tmp_path / "a.tgz", counters).read_bytes() == origin.data
    assert counters.totals()["retries"] == 3
    origin.statuses, origin.asked = [404, 404], []
    with pytest.raises(UpdateError, match="HTTP 404"):
        _get(origin, tmp_path / "b.tgz", DownloadCounters())
    assert len(origin.asked) == 1  # not retried


def test_an_unreachable_server_is_retried_until_the_window_ends(tmp_path: Path) -> None:
    with _serve(Origin()) as gone:
        url, data = gone.url, gone.data
    counters = DownloadCounters()
    window = RetryPolicy(window_s=0.3, first_delay_s=0.05, max_delay_s=0.05)
    with pytest.raises(UpdateError, match="download failed"):
        download(
            url=url,
            token=None,
            dest=tmp_path / "b.tgz",
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            timeout=2,
            count=counters.add,
            retry=window,
        )
    assert counters.totals()["retries"] >= 2


def test_stop_ends_the_retries_and_keeps_the_part(origin: Origin, tmp_path: Path) -> None:
    origin.cuts = [100_000]
    origin.statuses = []
    stop = threading.Event()
    slow = RetryPolicy(window_s=60.0, first_delay_s=30.0, max_delay_s=30.0)
    threading.Timer(0.3, stop.set).start()
    started = time.monotonic()
    with pytest.raises(UpdateError, match="stopping; kept to resume"):
        _get(origin, tmp_path / "b.tgz", DownloadCounters(), retry=slow, stop=stop)
    assert time.monotonic() - started < 20  # did not sit out the 30 s back-off
    assert part_files(tmp_path / "b.tgz")[0].stat().st_size == 100_000


@pytest.mark.parametrize(
    "validator",
    [b"\xff\xfe garbage", b'"' + b"x" * 5000 + b'"', b"\n\n", b'"a"\r\nX-Injected: 1'],
    ids=["binary", "oversized", "blank", "header-injection"],
)
def test_a_hostile_validator_file_is_not_sent(
    origin: Origin, tmp_path: Path, validator: bytes
) -> None:
    dest = tmp_path / "b.tgz"
    part, kept = part_files(dest)
    part.write_bytes(origin.data[:1000])
    kept.write_bytes(validator)
    assert _get(origin, dest, DownloadCounters()).read_bytes() == origin.data
    assert origin.asked == [("bytes=1000-", None)]


@pytest.mark.parametrize("etag", ['W/"weak"', None])
def test_no_strong_validator_means_no_if_range(tmp_path: Path, etag: str | None) -> None:
    with _serve(Origin(etag=etag, cuts=[300_000])) as origin:
        assert _get(origin, tmp_path / "b.tgz", DownloadCounters()).read_bytes() == origin.data
        assert origin.asked == [(None, None), ("bytes=300000-", None)]
