"""JSON-lines logging: every line parses, extras and exceptions included."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from edgefleet.logs import configure_logging


@pytest.fixture(autouse=True)
def _root_logging_restored() -> Iterator[None]:
    """configure_logging replaces the root's handlers, pytest's own among them (live logging, the
    log file): put them back, or every later test in this worker process loses them."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("debug", quiet=["chatty"])
    log = logging.getLogger("edgefleet.test")
    log.info("hello %s", "world", extra={"device_id": "pi-1", "count": 3})
    logging.getLogger("chatty").info("suppressed")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert lines[0]["msg"] == "hello world" and lines[0]["device_id"] == "pi-1"
    assert lines[0]["count"] == 3 and lines[0]["level"] == "info"
    assert len(lines) == 2 and "ValueError: boom" in lines[1]["exc"]
