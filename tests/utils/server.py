"""A real fleet server on a free loopback port, in-process (uvicorn in a thread).

For tests whose clients need real HTTP and MQTT (agents, simulated devices): the app, its
embedded or external broker and its database are all real.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.utils.brokers import mqtt_version_for
from tests.utils.net import free_port

OPERATOR_TOKEN = "operator-token-for-live-tests-0123456789"  # noqa: S105 - test-only token


@dataclass(frozen=True)
class LiveServer:
    url: str
    broker_url: str
    token: str
    runtime: Any
    #: Stop the server now (a crash-free restart test); leaving the context stops it anyway.
    stop: Any = None


@contextmanager
def live_server(
    tmp_path: Path,
    *,
    database_url: str | None = None,
    broker_url: str | None = None,
    **settings: Any,
) -> Iterator[LiveServer]:
    import uvicorn

    from fleet_server.app import create_app
    from fleet_server.settings import ServerSettings

    port = free_port()
    values: dict[str, Any] = {
        "data_dir": tmp_path / "server",
        "operator_token": OPERATOR_TOKEN,
        "host": "127.0.0.1",
        "port": port,
        "embedded_broker_port": free_port(),
        "mqtt_client_id": f"edgefleet.server-live-{secrets.token_hex(4)}",
        # A random client id is never resumed: no kept session (a clean start) unless a
        # test asks for one, so none is left behind on a shared broker.
        "mqtt_session_expiry_s": 0,
        "ingest_batch_interval_s": 0.05,
    }
    if database_url is not None:
        values["database_url"] = database_url
    if broker_url is not None:
        values["broker_url"] = broker_url
        values.update(mqtt_version_for(broker_url))
    values.update(settings)
    app = create_app(ServerSettings(**values))
    # log_config=None, as fleet_server/serve.py does: uvicorn's default runs
    # logging.config.dictConfig, which closes every handler the process ever made. absl's handler
    # (made when TensorFlow is first imported, bound to the sys.stderr of that moment: pytest's
    # capture file) closes its stream when it is no longer sys.stderr, e.g. under capsys; every
    # later test in that process then failed in pytest's capture ("I/O operation on closed file").
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_config=None,
            log_level="warning",
            lifespan="on",
        )
    )
    thread = threading.Thread(target=server.run, name="live-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the live fleet server did not start")
        time.sleep(0.02)

    def stop() -> None:
        server.should_exit = True
        thread.join(30)

    try:
        runtime = app.state.runtime
        yield LiveServer(
            url=f"http://127.0.0.1:{port}",
            broker_url=runtime.broker_url,
            token=OPERATOR_TOKEN,
            runtime=runtime,
            stop=stop,
        )
    finally:
        stop()
