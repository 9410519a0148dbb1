"""JSON-lines logging to stderr, shared by every EdgeFleet process.

One object per line — ``ts``, ``level``, ``logger``, ``msg``, then any ``extra`` fields — so
journald, Loki or ``jq`` can read the logs of the agent and the server alike.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

#: LogRecord attributes that are not user-supplied ``extra`` fields.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "color_message"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_logging(
    level: str = "info",
    *,
    quiet: Iterable[str] = ("paho",),
    reroute: Iterable[str] = (),
) -> None:
    """Send every record to stderr as JSON lines, replacing existing root handlers.

    ``quiet`` loggers are raised to WARNING (chatty libraries); ``reroute`` loggers drop their own
    handlers and propagate to the root (e.g. uvicorn's).
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in reroute:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    for name in quiet:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
