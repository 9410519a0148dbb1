"""Running the app under uvicorn: JSON logs, a startup line on stdout, SIGTERM → exit 0."""

from __future__ import annotations

import logging
import signal
import socket
import sys
from types import FrameType

import uvicorn
from fastapi import FastAPI

from edgefleet.logs import configure_logging
from fleet_server.app import create_app
from fleet_server.db import safe_url
from fleet_server.heap import cap_arenas
from fleet_server.settings import ServerSettings


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, settings: ServerSettings) -> None:
        super().__init__(config)
        self._settings = settings

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if not self.started:
            return
        settings = self._settings
        runtime = getattr(self.config.app, "state", None)
        broker = getattr(getattr(runtime, "runtime", None), "broker_url", "") or "?"
        sys.stdout.write(
            f"edgefleet server listening on http://{settings.host}:{settings.port} "
            f"(broker {broker}, db {safe_url(settings.resolved_database_url)})\n"
        )
        sys.stdout.flush()


class _ExplainedStartupFailure(logging.Filter):
    """Drops uvicorn's traceback of a start-up failure the runtime explained (``StartupError``:
    a database in the wrong encoding, no broker): the one line ``serve`` prints says it all.
    Anything else keeps its traceback."""

    def __init__(self, app: FastAPI) -> None:
        super().__init__()
        self._app = app

    def filter(self, record: logging.LogRecord) -> bool:
        reason = self._app.state.startup_error
        explained = isinstance(reason, str) and reason.startswith("StartupError:")
        return not (explained and str(record.msg).startswith("Traceback"))


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    # uvicorn re-raises the signal it shut down on; by then everything is stopped.
    raise SystemExit(0)


def serve(settings: ServerSettings) -> int:
    cap_arenas(settings.malloc_arena_max)  # before uvicorn's and the runtime's threads exist
    configure_logging(
        settings.log_level,
        quiet=("paho", "amqtt", "transitions", "alembic.runtime.plugins"),
        reroute=("uvicorn", "uvicorn.error", "uvicorn.access"),
    )
    app = create_app(settings)
    known = _ExplainedStartupFailure(app)
    logging.getLogger("uvicorn.error").addFilter(known)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        log_level=settings.log_level,
        lifespan="on",
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        access_log=settings.log_level == "debug",
    )
    server = _Server(config, settings)
    signal.signal(signal.SIGTERM, _exit_cleanly)
    try:
        server.run()
    except SystemExit as exit_:
        if exit_.code in (0, None):
            return 0
        reason = app.state.startup_error or f"exit status {exit_.code}"
        sys.stderr.write(f"edgefleet server: cannot start: {' '.join(str(reason).split())}\n")
        return 3
    return 0
