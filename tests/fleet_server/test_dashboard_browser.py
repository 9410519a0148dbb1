"""The dashboard in a real headless Chromium against a live server: sign in with a viewer token,
see the devices, open a rollout's report, sign out; no script error on the way. Skipped where
Chromium is not installed (Debian: ``apt-get install chromium``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.utils.net import free_port
from tests.utils.server import live_server

pytestmark = pytest.mark.integration
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class Page:
    """A page driven over the Chrome DevTools protocol (one websocket, calls in order)."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.next_id = 0
        self.errors: list[Any] = []

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=30))
            if message.get("method") == "Runtime.exceptionThrown":
                self.errors.append(message["params"]["exceptionDetails"])
            if message.get("id") == self.next_id:
                assert "error" not in message, message
                result: dict[str, Any] = message["result"]
                return result

    def eval(self, expression: str) -> Any:
        return self.call("Runtime.evaluate", expression=expression)["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 15.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.eval(expression)
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {expression}; errors: {self.errors}")


@contextmanager
def chromium_page() -> Iterator[Page]:
    websockets = pytest.importorskip("websockets.sync.client")
    if CHROMIUM is None:
        if os.environ.get("EDGEFLEET_REQUIRE_SERVICES") == "1":
            pytest.fail("chromium is not installed but EDGEFLEET_REQUIRE_SERVICES=1 requires it")
        pytest.skip("chromium is not installed")
    port = free_port()
    proc = subprocess.Popen(
        [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
         f"--remote-debugging-port={port}", "--user-data-dir=/tmp/edgefleet-chromium-" + str(port),
         "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json", timeout=1) as r:
                    targets = json.load(r)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        url = next(t for t in targets if t["type"] == "page")["webSocketDebuggerUrl"]
        with websockets.connect(url, max_size=None) as ws:
            page = Page(ws)
            page.call("Runtime.enable")
            page.call("Page.enable")
            yield page
    finally:
        proc.kill()
        proc.wait(10)
        shutil.rmtree(f"/tmp/edgefleet-chromium-{port}", ignore_errors=True)


def test_sign_in_see_the_fleet_and_sign_out(tmp_path: Path) -> None:
    from fleet_server.client.api import FleetClient

    with chromium_page() as page, live_server(tmp_path) as server:
        client = FleetClient(server.url, server.token)
        for i in range(3):
            client.add_device(f"browser-{i}", device_class="rpi4", tags=["lab"])
        viewer = client.create_token("dashboard-viewer", "viewer")["token"]
        page.call("Page.navigate", url=f"{server.url}/dashboard")
        page.wait_for("document.readyState === 'complete' && !!document.getElementById('login')")
        assert page.eval("document.getElementById('status').textContent") == "not signed in"
        page.eval(
            f"document.getElementById('token').value = {json.dumps(viewer)};"
            "document.getElementById('signin').click(); true"
        )
        page.wait_for("document.getElementById('status').textContent.startsWith('updated')")
        rows = page.eval("document.querySelectorAll('#devices tbody tr').length")
        assert rows == 3
        assert page.eval("document.getElementById('signin').hidden") is True
        assert page.eval("sessionStorage.getItem('edgefleet.token')") == viewer
        text = page.eval("document.getElementById('summary').textContent")
        assert "3devices" in text.replace(" ", "").replace("\n", "")
        page.eval(
            "document.getElementById('filter').value = 'browser-1';"
            "document.getElementById('filter').dispatchEvent(new Event('input')); true"
        )
        assert page.eval("document.querySelectorAll('#devices tbody tr').length") == 1
        page.eval("document.getElementById('logout').click(); true")
        assert page.eval("sessionStorage.getItem('edgefleet.token')") is None
        assert page.eval("document.getElementById('status').textContent") == "signed out"
        # A wrong token: the page says why and signs out.
        page.eval(
            "document.getElementById('token').value = 'wrong';"
            "document.getElementById('signin').click(); true"
        )
        page.wait_for("document.getElementById('status').textContent.startsWith('error: 401')")
        assert page.eval("sessionStorage.getItem('edgefleet.token')") is None
        assert page.errors == []
        client.close()
