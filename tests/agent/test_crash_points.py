"""A real agent SIGKILLed at every update step serves a valid model after a restart and finishes.

The agent serves v1 with traffic; v2 is published as the retained desired state and served by a
bundle server. ``EDGEFLEET_AGENT_CRASH_AT`` (agent.faults) makes the agent SIGKILL itself at one
step. Restarted without it, the agent must serve the committed model at once (v1, or v2 once
``current.json`` names it), then finish the update from the retained desired state: committed on
v2, the pointer, the retained state and the events agreeing, and nothing but the two artifacts
left in the data directory. Killing during the download and during probation (long waits rather
than a step) is covered by test_crash_process.py and test_probation_process.py.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.datalock import LOCK_FILE
from agent.faults import ENV_VAR, POINTS
from agent.store import POINTER_FILE
from edgefleet.contract import Channel, Event, State, decode, topic
from tests.agent.helpers import Received, Watcher, config_toml, desired_bundle, serve_bundles
from tests.agent.test_agent_process import (  # noqa: F401  (device_id: a fixture)
    AGENT,
    ROOT,
    TOKEN,
    AgentProcess,
    _env,
    device_id,
)
from tests.utils.artifacts import bundle_of, digits_images

pytestmark = pytest.mark.integration
Predicate = Callable[[Received], bool]

#: Points after which ``current.json`` already names v2 (the restart serves v2 at once).
COMMITTED_ON_DISK = {"after_commit"}
#: Points where the bundle is on disk but not yet unpacked: a restart reuses it (hash checked
#: again) instead of fetching it again.
DOWNLOADED = {"after_download"}
#: Data-dir entries besides ``artifacts/`` and ``downloads/`` (the outbox may have SQLite files).
TOP_LEVEL = {
    POINTER_FILE,
    LOCK_FILE,
    "seq.json",
    "outbox.db",
    "outbox.db-wal",
    "outbox.db-shm",
    "capture",
}


def _events(watch: Watcher, device: str, kind: str) -> list[Event]:
    found = []
    for m in list(watch.messages):
        if m.topic.endswith("/events"):
            e = decode(Channel.EVENTS, m.payload, device_id=device)
            if isinstance(e, Event) and e.event == kind:
                found.append(e)
    return found


def _state(device: str, running: str, phase: str = "serving") -> Predicate:
    def predicate(m: Received) -> bool:
        if not m.topic.endswith("/state") or not m.payload:
            return False
        s = decode(Channel.STATE, m.payload, device_id=device)
        return isinstance(s, State) and s.phase == phase and str(s.running) == running

    return predicate


def _after(watch: Watcher, seen: int, predicate: Predicate) -> Predicate:
    return lambda m: watch.messages.index(m) >= seen and predicate(m)


def _on_disk(data_dir: Path) -> dict[str, object]:
    """What the killed agent left: pointer version, bundles, artifact versions, hidden temps."""
    digits = data_dir / "artifacts" / "digits"
    return {
        "pointer": json.loads((data_dir / POINTER_FILE).read_text())["version"],
        "downloads": sorted(p.name for p in (data_dir / "downloads").iterdir()),
        "artifacts": sorted(p.name for p in digits.iterdir() if not p.name.startswith(".")),
        "hidden": sorted(str(p.relative_to(data_dir)) for p in data_dir.rglob(".*")),
    }


@pytest.mark.parametrize("point", POINTS)
def test_sigkill_at_update_step_then_restart_commits(
    point: str,
    mqtt_url: str,
    device_id: str,  # noqa: F811  (the fixture imported above)
    tmp_path: Path,
    digits_v1: Path,
    digits_v2: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)  # the restarted agent must not inherit one
    data_dir = tmp_path / "data"
    shutil.copytree(digits_v1, data_dir / "artifacts" / "digits" / "1.0.0")
    (data_dir / POINTER_FILE).write_text(json.dumps({"name": "digits", "version": "1.0.0"}))
    images = tmp_path / "in"
    digits_images(images, 6)
    data = bundle_of(digits_v2, tmp_path / "v2.tgz").read_bytes()
    with serve_bundles(TOKEN) as server, Watcher(mqtt_url, device_id) as watch:
        server.files["/b/v2"] = data
        server.ranges = True
        config = tmp_path / "agent.toml"
        config.write_text(
            config_toml(
                device_id=device_id,
                data_dir=data_dir,
                mqtt_url=mqtt_url,
                server_url=server.url,
                input_dir=images,
                rate_hz=50.0,
                interval_s=0.5,
                extra="[probation]\ninferences = 10\n",
            ).replace('token = "device-token"', f'token = "{TOKEN}"')
        )
        agent = AgentProcess(config, env={ENV_VAR: point})
        try:
            assert "model=digits@1.0.0" in agent.first_line()
            watch.wait_for(  # v1 has served traffic (the probation baseline)
                lambda m: m.topic.endswith("/telemetry") and b'"inference_count":0' not in m.payload
            )
            desired = desired_bundle(
                device_id, seq=1, version="2.0.0", url=f"{server.url}/b/v2", bundle=data
            )
            watch.publish(topic(device_id, Channel.DESIRED), desired, retain=True)
            assert agent.proc.wait(30) == -signal.SIGKILL, agent.stderr[-5:]
            agent._drain.join(5)
            reached = [json.loads(line) for line in agent.stderr if "crash point" in line]
            assert [r["at"] for r in reached] == [point], agent.stderr[-5:]

            left = _on_disk(data_dir)
            assert left["pointer"] == ("2.0.0" if point in COMMITTED_ON_DISK else "1.0.0")
            pointer_now = json.loads((data_dir / POINTER_FILE).read_text())
            assert pointer_now.get("announced", True) is (point not in COMMITTED_ON_DISK)
            assert left["hidden"] == [], left  # no .unpack-* directory, no .current.json.tmp
            if point in DOWNLOADED:
                assert left["downloads"] == [f"{hashlib.sha256(data).hexdigest()}.tar.gz"]
                assert left["artifacts"] == ["1.0.0"]
            else:
                assert left["downloads"] == []
                assert left["artifacts"] == ["1.0.0", "2.0.0"]
            assert _events(watch, device_id, "update.committed") == []

            seen = len(watch.messages)
            started = time.monotonic()
            agent = AgentProcess(config)
            running = "2.0.0" if point in COMMITTED_ON_DISK else "1.0.0"
            assert agent.served_first() == f"digits@{running}"
            agent.first_line()
            first_line_s = time.monotonic() - started
            if point in COMMITTED_ON_DISK:
                # The pointer already names v2 (marked not announced): nothing to redo; the
                # start sends the update.committed event the crash cut off.
                watch.wait_for(_after(watch, seen, _state(device_id, "digits@2.0.0")))
                watch.wait_for(
                    lambda m: (
                        watch.messages.index(m) >= seen
                        and m.topic.endswith("/events")
                        and b"update.committed" in m.payload
                    ),
                    timeout=40,
                    what="update.committed after the restart",
                )
            else:
                watch.wait_for(
                    _after(watch, seen, _state(device_id, "digits@1.0.0")), what="v1 serving"
                )
                watch.wait_for(
                    lambda m: (
                        watch.messages.index(m) >= seen
                        and m.topic.endswith("/events")
                        and b"update.committed" in m.payload
                    ),
                    timeout=40,
                    what="update.committed",
                )
            committed_s = time.monotonic() - started
            request.node.user_properties += [  # reported with --junitxml (bench figures)
                ("restart_to_first_line_s", round(first_line_s, 2)),
                ("restart_to_committed_s", round(committed_s, 2)),
            ]
            watch.wait_for(_state(device_id, "digits@2.0.0"))
            assert agent.stop() == 0, agent.stderr[-10:]
        finally:
            agent.kill()

        committed = _events(watch, device_id, "update.committed")
        assert [str(e.model) for e in committed] == ["digits@2.0.0"]  # every point: exactly one
        assert _events(watch, device_id, "update.failed") == []
        assert _events(watch, device_id, "update.rolled_back") == []
        # Every point, after_download included, fetched the bundle once in all.
        assert [p for p, _ in server.requests] == ["/b/v2"]
        assert server.ranges_asked == []  # a complete bundle is never resumed with a Range

    with Watcher(mqtt_url, device_id, name="late") as late:
        retained = late.wait_for(lambda m: m.topic.endswith("/state") and m.retain)
        final = decode(Channel.STATE, retained.payload, device_id=device_id)
        assert isinstance(final, State) and str(final.running) == "digits@2.0.0"
        assert final.phase == "serving" and final.last_error is None
    pointer = json.loads((data_dir / POINTER_FILE).read_text())
    assert pointer == {"name": "digits", "version": "2.0.0", "path": "artifacts/digits/2.0.0"}
    assert {p.name for p in data_dir.iterdir()} - {"artifacts", "downloads"} <= TOP_LEVEL
    assert list((data_dir / "downloads").iterdir()) == []
    digits = data_dir / "artifacts" / "digits"
    assert sorted(p.name for p in (data_dir / "artifacts").iterdir()) == ["digits"]
    assert sorted(p.name for p in digits.iterdir()) == ["1.0.0", "2.0.0"]  # current + previous
    assert [str(p) for p in data_dir.rglob(".*")] == []


def test_unknown_crash_point_is_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(config_toml(data_dir=tmp_path / "data"))
    result = subprocess.run(
        [*AGENT, "run", "--config", str(config)],
        cwd=ROOT,
        env={**_env(), ENV_VAR: "during_lunch"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr[-500:]
    assert result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if line.startswith("edgefleet agent:")]
    assert lines == [
        f"edgefleet agent: {ENV_VAR}='during_lunch' is not a crash point; use one of "
        + ", ".join(POINTS)
    ]
    assert not (tmp_path / "data").exists()  # refused before the agent touched anything
