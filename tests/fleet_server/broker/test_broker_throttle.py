"""Repeated failed logins at the embedded broker: locked per user name and per source address,
counted on /metrics, and never locking the legitimate holder out for long.

The rule alone with a fake clock (AuthThrottle), then the real server (SQLite, embedded broker
with device credentials) against real paho clients. Before, 100 wrong passwords in a row were
100 checked and answered failures, with nothing on /metrics."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fleet_server.broker import EmbeddedBroker
from fleet_server.broker.config import AuthThrottleConfig
from fleet_server.broker.throttle import AuthThrottle
from tests.fleet_server.broker.test_broker_auth import DictAuthenticator
from tests.fleet_server.helpers import (
    connack,
    make_settings,
    operator,
    running_app,
    unique_id,
)

WRONG = "Bad user name or password"  # CONNACK 0x04: checked
LOCKED = "Server unavailable"  # CONNACK 0x03: refused unchecked while locked


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_failures_lock_with_doubling_up_to_the_cap() -> None:
    clock = Clock()
    config = AuthThrottleConfig(free_failures=3, lockout_s=1.0, max_lockout_s=4.0)
    throttle = AuthThrottle(config, clock=clock)
    who = {"username": "dev-1", "address": "10.0.0.9"}
    for _ in range(2):
        throttle.failed(**who)
        assert throttle.locked(**who) == 0
    locks = []
    for _ in range(4):
        throttle.failed(**who)
        locks.append(throttle.locked(**who))
        clock.now += locks[-1]  # wait the lock out, then fail again
    assert locks == [1.0, 2.0, 4.0, 4.0]  # doubled, capped at max_lockout_s
    assert throttle.failures == 6
    # Another user name from the same address is locked too (the address is); once the lock
    # ends a correct password clears both keys.
    throttle.failed(**who)
    assert throttle.locked(username="dev-2", address="10.0.0.9") > 0
    clock.now += 4.0
    throttle.succeeded(**who)
    assert throttle.locked(**who) == 0
    assert throttle.locked_keys == 0


def test_a_user_name_lock_spares_its_last_good_address() -> None:
    clock = Clock()
    throttle = AuthThrottle(AuthThrottleConfig(free_failures=2), clock=clock)
    throttle.succeeded(username="dev-1", address="10.0.0.1")
    for _ in range(10):
        throttle.failed(username="dev-1", address="10.0.0.66")
    assert throttle.locked(username="dev-1", address="10.0.0.66") > 0
    assert throttle.locked(username="dev-1", address="10.0.0.1") == 0
    assert throttle.locked(username="dev-1", address="10.0.0.2") > 0


def test_a_misconfigured_neighbour_does_not_lock_out_known_devices() -> None:
    # Agents on one host (or behind one NAT): one with a wrong token keeps failing.
    throttle = AuthThrottle(AuthThrottleConfig(free_failures=2), clock=Clock())
    throttle.succeeded(username="dev-ok", address="10.0.0.1")
    for _ in range(10):
        throttle.failed(username="dev-bad", address="10.0.0.1")
    assert throttle.locked(username="dev-ok", address="10.0.0.1") == 0
    assert throttle.locked(username="dev-new", address="10.0.0.1") > 0  # the address is locked
    # Guessing dev-ok's password from its own address is still braked (the pair's lock).
    for _ in range(3):
        throttle.failed(username="dev-ok", address="10.0.0.1")
    assert throttle.locked(username="dev-ok", address="10.0.0.1") > 0


def test_memory_is_bounded() -> None:
    throttle = AuthThrottle(AuthThrottleConfig(max_tracked=100), clock=Clock())
    for i in range(5000):
        throttle.failed(username=f"guess-{i}", address=f"10.0.{i // 250}.{i % 250}")
        throttle.succeeded(username=f"ok-{i}", address="10.1.0.1")
    assert throttle.tracked <= 200  # max_tracked keys + max_tracked good addresses


def test_lockout_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="max_lockout_s"):
        AuthThrottleConfig(lockout_s=10, max_lockout_s=5)


@pytest.mark.integration
def test_an_authenticator_that_fails_counts_against_nobody(
    start_broker: Callable[..., EmbeddedBroker],
) -> None:
    auth = DictAuthenticator({"dev-db": "tok"})
    broker = start_broker(authenticator=auth)
    auth.fail = True  # the database is down: every login is refused, nobody's fault
    for _ in range(10):
        assert _login(broker.port, "dev-db", "tok") == WRONG
    auth.fail = False
    assert _login(broker.port, "dev-db", "tok") == ""
    assert broker.auth_throttle.failures == 0


def _login(port: int, username: str, password: str, *, source: str = "127.0.0.1") -> str:
    """The CONNACK's refusal ('' when admitted) for one login from ``source``."""
    reason = connack("127.0.0.1", port, (username, password), source=source)
    return "" if reason == "Success" else reason


def _metrics(client: TestClient) -> dict[str, float]:
    samples: dict[str, float] = {}
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("edgefleet_mqtt_auth"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


@pytest.mark.integration
def test_guessing_a_device_password_is_locked_and_counted(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        f"sqlite:///{tmp_path / 'fleet.db'}",
        mqtt_auth_throttle={"free_failures": 5, "lockout_s": 1.0, "max_lockout_s": 2.0},
    )
    with running_app(settings) as (client, runtime):
        device_id = unique_id("guess")
        response = client.post("/api/v1/devices", json={"device_id": device_id}, headers=operator())
        assert response.status_code == 201, response.text
        token = str(response.json()["token"])
        port = runtime.broker.port
        assert _login(port, device_id, token) == ""  # its usual address: 127.0.0.1

        # 100 wrong passwords in a row from another address.
        began = time.monotonic()
        codes = [_login(port, device_id, f"guess-{i}", source="127.0.0.2") for i in range(100)]
        took = time.monotonic() - began
        checked, locked = codes.count(WRONG), codes.count(LOCKED)
        print(f"\n100 wrong passwords in {took:.1f} s: {checked} checked, {locked} refused "
              f"unchecked while locked")  # fmt: skip
        assert checked + locked == 100
        assert checked <= 5 + took / 1.0, codes  # at most one checked try per lock period
        assert locked >= 80
        samples: dict[str, Any] = _metrics(client)
        assert samples["edgefleet_mqtt_auth_failures_total"] == checked
        assert samples["edgefleet_mqtt_auth_throttled_total"] == locked
        assert samples["edgefleet_mqtt_auth_locked"] >= 1

        # The device itself is not locked out: from its usual address at once, from the
        # guesser's address once the lock (at most max_lockout_s) has passed.
        assert _login(port, device_id, token) == ""
        assert _login(port, device_id, token, source="127.0.0.2") == LOCKED
        time.sleep(2.1)
        assert _login(port, device_id, token, source="127.0.0.2") == ""
