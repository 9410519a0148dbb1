"""Hostile bundle uploads against a real server process (issue #11, finding 6).

Each upload is under 2.1 MB but declares up to 2 GiB: a PAX header or GNU long name that
``tarfile`` would read whole, a GNU sparse map it would hold as a list of ints, a member of zeros
it would decompress to skip, PAX headers it would recurse into. The server's VmHWM is read from
``/proc`` before and after. Measured with tarfile (before): VmHWM 100 → 972 MB, 5 to 20 s per
upload, and 500 (``RecursionError``) for the nested headers; with edgefleet.tar_stream: +1.3 MB,
under 0.4 s each, every one a 400 naming the reason.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.utils.hostile_bundles import HOSTILE
from tests.utils.net import free_port
from tests.utils.replica import ReplicaProcess

pytestmark = pytest.mark.integration

TOKEN = "operator-token-for-bomb-tests-0123456789"  # noqa: S105 - test-only token
MAX_RSS_RISE_KB = 50 * 1024


def _vm_hwm_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc/<pid>/status")


def _upload(url: str, data: bytes) -> httpx.Response:
    return httpx.post(
        f"{url}/api/v1/models",
        files={"bundle": ("model.tar.gz", data, "application/gzip")},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=120,
    )


def test_hostile_uploads_cost_the_server_no_memory(
    tmp_path: Path, database_url: str, digits_bundle: Path
) -> None:
    server = ReplicaProcess(
        tmp_path / "server",
        name="bombs",
        token=TOKEN,
        settings={
            "EDGEFLEET_DATABASE_URL": database_url,
            "EDGEFLEET_EMBEDDED_BROKER_PORT": str(free_port()),
        },
    )
    server.start()
    try:
        server.wait_ready()
        assert server.proc is not None
        # Warm up the whole upload path (lazy imports, first session) with a sound bundle.
        assert _upload(server.url, digits_bundle.read_bytes()).status_code == 201
        assert _upload(server.url, b"not a bundle").status_code == 400
        before = _vm_hwm_kb(server.proc.pid)
        outcomes = {}
        for name, build in HOSTILE.items():
            data = build()
            started = time.monotonic()
            response = _upload(server.url, data)
            outcomes[name] = (response.status_code, time.monotonic() - started)
            assert response.status_code == 400, (name, response.status_code, response.text)
            detail = response.json()["detail"]
            assert detail.startswith("invalid bundle: ") and "\n" not in detail, detail
        after = _vm_hwm_kb(server.proc.pid)
        assert after - before < MAX_RSS_RISE_KB, (before, after, outcomes)
        assert all(seconds < 5 for _, seconds in outcomes.values()), outcomes
        # Nothing left behind: no scratch directory, only the sound bundle stored and listed.
        data_dir = tmp_path / "server" / "data"
        assert list((data_dir / "tmp").iterdir()) == []
        stored = [p for p in (data_dir / "artifacts").rglob("*") if p.is_file()]
        assert len(stored) == 1, stored
        models = httpx.get(
            f"{server.url}/api/v1/models", headers={"Authorization": f"Bearer {TOKEN}"}
        ).json()
        assert [(m["name"], m["version"]) for m in models] == [("digits", "1.0.0")]
    finally:
        server.stop()
