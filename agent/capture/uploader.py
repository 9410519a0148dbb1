"""Uploads queued samples to ``POST /api/v1/samples`` with the device token.

One sample at a time, oldest first, at most ``rate_per_s``, only while the link is up. A
sample is deleted only after the server answered 200 (already stored: a replay after a crash
between upload and delete) or 201; a permanent refusal (400, 403, 409, 413, 415, 422) deletes
it too and is counted as ``capture.refused_<status>`` — retrying could never succeed. 429, 5xx,
401 (a token being rotated), 404 (a server without the endpoint yet) and network errors keep
it and back off (1 s doubling to 5 min), so nothing is lost to an outage and a restart resumes
where the queue is.
"""

from __future__ import annotations

import http.client
import logging
import os
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Final, Literal

from agent.capture.queue import Queued, SampleQueue

log = logging.getLogger(__name__)

PERMANENT: Final = frozenset({400, 403, 409, 413, 415, 422})
BACKOFF_START_S: Final = 1.0
BACKOFF_MAX_S: Final = 300.0
Outcome = Literal["stored", "refused", "retry"]


def multipart(meta: bytes, content: bytes, content_type: str) -> tuple[bytes, str]:
    """(body, Content-Type header) of a two-part form: ``meta`` (JSON) and ``file``."""
    boundary = "edgefleet-" + os.urandom(16).hex()
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="meta"\r\n'
        f"Content-Type: application/json\r\n\r\n"
    ).encode()
    file_head = (
        f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="sample"\r\n'
        f"Content-Type: {content_type}\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    return head + meta + file_head + content + tail, f"multipart/form-data; boundary={boundary}"


class Uploader:
    def __init__(
        self,
        queue: SampleQueue,
        *,
        url: str,
        token: Callable[[], str | None],
        link_up: Callable[[], bool],
        rate_per_s: float,
        count: Callable[[str], object],
        timeout_s: float = 30.0,
    ) -> None:
        self.queue = queue
        self.url = url
        self._token = token
        self._link_up = link_up
        self._interval = 1.0 / rate_per_s
        self._count = count
        self._timeout = timeout_s
        self.uploaded = 0
        self.refused = 0
        self.failures = 0

    def run(self, stop: threading.Event) -> None:
        backoff = BACKOFF_START_S
        while not stop.is_set():
            entry = self.queue.oldest()
            if entry is None or not self._link_up():
                stop.wait(0.5)
                continue
            outcome = self.upload(entry)
            if outcome == "retry":
                self.failures += 1
                stop.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            backoff = BACKOFF_START_S
            self.queue.remove(entry)
            stop.wait(self._interval)

    def upload(self, entry: Queued) -> Outcome:
        """Send one sample; what the answer means for it."""
        try:
            content = entry.content.read_bytes()
        except OSError as err:
            log.warning("captured sample unreadable", extra={"sample": entry.name, "err": str(err)})
            self._count("queue_corrupt")
            return "refused"
        body, content_type = multipart(
            entry.meta.model_dump_json().encode(), content, entry.meta.content_type
        )
        # server_url is an http(s) URL checked by the config (HttpUrl).
        request = urllib.request.Request(self.url, data=body, method="POST")  # noqa: S310
        request.add_header("Content-Type", content_type)
        token = self._token()
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:  # noqa: S310
                status = response.status
                response.read(65536)
        except urllib.error.HTTPError as err:
            status = err.code
            err.close()
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as err:
            log.info("sample upload failed; will retry", extra={"err": str(err)[:200]})
            return "retry"
        if status in (200, 201):
            self.uploaded += 1
            self._count("uploaded")
            return "stored"
        if status in PERMANENT:
            self.refused += 1
            self._count(f"refused_{status}")
            log.warning(
                "sample refused by the server",
                extra={"sample": entry.meta.sample_id, "status": status},
            )
            return "refused"
        return "retry"
