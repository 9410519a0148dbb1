"""What crosses the wire through the broker: retained, Last Will, wildcards, QoS 1, sizes, fan-out.

Runs against the embedded broker and, when ``EDGEFLEET_TEST_MQTT_URL`` is set, Mosquitto too
(the ``mqtt_url`` fixture), so the embedded broker is held to the external one's behaviour.
"""

from __future__ import annotations

import secrets
import time
from typing import TYPE_CHECKING

import pytest

from edgefleet.contract.topics import Channel, fleet_filter, topic

if TYPE_CHECKING:
    from tests.fleet_server.broker.conftest import ClientFactory

pytestmark = pytest.mark.integration


def _device() -> str:
    return f"dev-{secrets.token_hex(4)}"


def test_late_subscriber_gets_the_retained_desired_state(
    mqtt_url: str, connect: ClientFactory
) -> None:
    device = _device()
    desired = topic(device, Channel.DESIRED)
    server = connect(mqtt_url, f"server-{device}")
    server.publish(desired, b'{"v": 1}', retain=True)
    server.publish(desired, b'{"v": 2}', retain=True)

    agent = connect(mqtt_url, device)
    agent.subscribe(desired)
    got = agent.wait_for(1)
    assert [(m.topic, m.payload, m.retain) for m in got] == [(desired, b'{"v": 2}', True)]
    assert got[0].qos == 1

    server.publish(desired, b"", retain=True)  # an empty retained payload clears it
    late = connect(mqtt_url, f"{device}-again")
    late.subscribe(desired)
    assert late.wait_for(1, timeout=0.5) == []


def test_last_will_is_published_and_retained_when_a_client_drops(
    mqtt_url: str, connect: ClientFactory
) -> None:
    device = _device()
    status = topic(device, Channel.STATUS)
    watcher = connect(mqtt_url, f"watch-{device}")
    watcher.subscribe(status)
    agent = connect(mqtt_url, device, will=(status, b'{"status":"offline"}'))
    agent.publish(status, b'{"status":"online"}', retain=True)
    assert [m.payload for m in watcher.wait_for(1)] == [b'{"status":"online"}']

    agent.kill_socket()
    got = watcher.wait_for(2)
    assert [m.payload for m in got] == [b'{"status":"online"}', b'{"status":"offline"}']

    late = connect(mqtt_url, f"late-{device}")
    late.subscribe(status)
    assert [(m.payload, m.retain) for m in late.wait_for(1)] == [(b'{"status":"offline"}', True)]
    watcher.publish(status, b"", retain=True)


def test_clean_disconnect_sends_no_will(mqtt_url: str, connect: ClientFactory) -> None:
    device = _device()
    status = topic(device, Channel.STATUS)
    watcher = connect(mqtt_url, f"watch-{device}")
    watcher.subscribe(status)
    agent = connect(mqtt_url, device, will=(status, b"offline"))
    agent.mqtt.disconnect()
    assert watcher.wait_for(1, timeout=1.0) == []


def test_fleet_wildcard_matches_one_channel_of_every_device(
    mqtt_url: str, connect: ClientFactory
) -> None:
    server = connect(mqtt_url, f"ingest-{secrets.token_hex(4)}")
    server.subscribe(fleet_filter(Channel.TELEMETRY))
    devices = [_device() for _ in range(3)]
    publisher = connect(mqtt_url, f"pub-{devices[0]}")
    for device in devices:
        publisher.publish(topic(device, Channel.EVENTS), b"not telemetry")
        publisher.publish(topic(device, Channel.TELEMETRY), device.encode())
    publisher.publish("edgefleet/v1/x/y/telemetry", b"one level too deep")
    got = server.wait_for(len(devices))
    time.sleep(0.2)  # anything that should not match has had time to arrive
    mine = [m for m in server.messages if m.payload in {d.encode() for d in devices}]
    assert sorted(m.topic for m in mine) == sorted(topic(d, Channel.TELEMETRY) for d in devices)
    assert all(m.topic.endswith("/telemetry") and m.topic.count("/") == 3 for m in got)


def test_qos1_delivers_every_message(mqtt_url: str, connect: ClientFactory) -> None:
    device = _device()
    telemetry = topic(device, Channel.TELEMETRY)
    ingest = connect(mqtt_url, f"ingest-{device}")
    ingest.subscribe(telemetry, qos=1)
    agent = connect(mqtt_url, device)
    count = 300
    infos = [agent.mqtt.publish(telemetry, f"{i:05d}".encode(), qos=1) for i in range(count)]
    for info in infos:
        info.wait_for_publish(timeout=10)
        assert info.is_published()
    got = ingest.wait_for(count, timeout=15)
    assert sorted(m.payload for m in got) == [f"{i:05d}".encode() for i in range(count)]
    assert {m.qos for m in got} == {1}


@pytest.mark.parametrize("size", [0, 1, 64 * 1024])
def test_payload_sizes_round_trip(mqtt_url: str, connect: ClientFactory, size: int) -> None:
    device = _device()
    events = topic(device, Channel.EVENTS)
    server = connect(mqtt_url, f"srv-{device}")
    server.subscribe(events)
    payload = secrets.token_bytes(size)
    connect(mqtt_url, device).publish(events, payload)
    got = server.wait_for(1)
    assert len(got) == 1 and got[0].payload == payload


def test_fifty_five_clients_each_get_their_desired_state(
    mqtt_url: str, connect: ClientFactory
) -> None:
    prefix = f"fleet-{secrets.token_hex(3)}"
    agents = {f"{prefix}-{i:02d}": connect(mqtt_url, f"{prefix}-{i:02d}") for i in range(55)}
    for device, agent in agents.items():
        agent.subscribe(topic(device, Channel.DESIRED))
    server = connect(mqtt_url, f"server-{prefix}")
    for device in agents:
        server.publish(topic(device, Channel.DESIRED), device.encode(), retain=True)
    for device, agent in agents.items():
        got = agent.wait_for(1)
        assert [m.payload for m in got] == [device.encode()], device
    for device in agents:
        server.publish(topic(device, Channel.DESIRED), b"", retain=True)


def test_a_client_gets_no_retained_message_it_did_not_subscribe_to(
    mqtt_url: str, connect: ClientFactory
) -> None:
    device, other = _device(), _device()
    desired = topic(device, Channel.DESIRED)
    owner = connect(mqtt_url, device)
    owner.subscribe(desired)
    server = connect(mqtt_url, f"server-{device}")
    server.publish(desired, b"for the owner only", retain=True)
    assert [m.payload for m in owner.wait_for(1)] == [b"for the owner only"]

    stranger = connect(mqtt_url, other)
    stranger.subscribe(topic(other, Channel.DESIRED))
    assert stranger.wait_for(1, timeout=0.5) == []
    server.publish(desired, b"", retain=True)


def test_a_reconnecting_device_takes_over_its_half_open_session(
    mqtt_url: str, connect: ClientFactory
) -> None:
    device = _device()
    desired = topic(device, Channel.DESIRED)
    stale = connect(mqtt_url, device)
    stale.subscribe(desired)
    stale.mqtt.loop_stop()  # the old connection is still open but its device has rebooted
    fresh = connect(mqtt_url, device)
    fresh.subscribe(desired)
    server = connect(mqtt_url, f"server-{device}")
    server.publish(desired, b"after reboot", retain=True)
    assert [m.payload for m in fresh.wait_for(1)] == [b"after reboot"]
    server.publish(desired, b"", retain=True)
