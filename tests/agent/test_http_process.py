"""``edgefleet agent run`` as a real subprocess with the HTTP input and a file sink, offline:
no broker is reachable, and the device serves its committed model anyway."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from agent.store import DataDir
from edgefleet.artifact import read_manifest
from tests.agent.helpers import config_toml
from tests.utils.artifacts import digits_images
from tests.utils.net import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[2]


def test_agent_process_serves_http_and_writes_results_offline(
    digits_v1: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    store = DataDir(data)
    ref = read_manifest(digits_v1).ref
    shutil.copytree(digits_v1, store.artifact_dir(ref))
    store.write_pointer(ref)
    port = free_port()
    results = tmp_path / "results.jsonl"
    text = config_toml(data_dir=data, mqtt_url=f"mqtt://127.0.0.1:{free_port()}")
    text = text.replace("keepalive = 10", "keepalive = 10\nconnect_wait_s = 0.2")
    text += f'\n[input]\ntype = "http"\nport = {port}\n'
    text += f'\n[sink]\ntype = "file"\npath = "{results}"\n'
    config = tmp_path / "agent.toml"
    config.write_text(text)
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgefleet", "agent", "run", "--config", str(config)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_port("127.0.0.1", port, timeout=30)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:  # the port opens before the committed model finishes loading
            try:
                with urllib.request.urlopen(base + "/healthz", timeout=5) as resp:  # noqa: S310
                    health = json.loads(resp.read())
                    break
            except OSError:
                assert time.monotonic() < deadline, "never healthy"
                time.sleep(0.1)
        assert health["model"] == "digits@1.0.0"
        images = digits_images(tmp_path / "img", 3)
        for image in images:
            req = urllib.request.Request(base + "/infer", data=image.read_bytes())  # noqa: S310
            with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310
                [result] = json.loads(resp.read())["results"]
            assert result["top_k"][0]["label"] == image.stem[-1]
        with urllib.request.urlopen(base + "/metrics", timeout=5) as resp:  # noqa: S310
            metrics = resp.read().decode()
        assert "edgefleet_agent_inferences_total 3" in metrics
        # Offline: what the agent queued (agent.started, its state) waits in the outbox.
        waiting = re.search(r"^edgefleet_agent_outbox_messages (\d+)$", metrics, re.M)
        assert waiting is not None and int(waiting.group(1)) >= 2, metrics
        assert re.search(r"^edgefleet_agent_outbox_bytes [1-9]\d*$", metrics, re.M)
        assert "edgefleet_agent_outbox_drained_total 0" in metrics
        # mqtt:// and http:// only: ssl is never imported (agent.deferred), so libssl is
        # not mapped; nothing has been downloaded, so neither is urllib.request's code; the
        # committed model was verified by edgefleet.digest's SHA-256: no libcrypto either.
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
        assert "libssl" not in maps and "_ssl." not in maps
        assert "libcrypto" not in maps and "_hashlib." not in maps
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
    assert code == 0, proc.stderr.read() if proc.stderr else ""
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    assert [line["top_k"][0]["label"] for line in lines] == [p.stem[-1] for p in images]
