"""A device cannot cost another device its telemetry by sending what PostgreSQL refuses.

Through a real broker (a private Mosquitto) into a server on PostgreSQL: device A interleaves
poisoned messages with good ones, device B is well-behaved. Refused before the write, each
counted by reason: non-finite numbers (``NaN``, ``Infinity``, ``-Infinity`` tokens, which
msgspec refuses and a ``json.loads`` fallback accepted, and ``1e999``, which overflows to
infinity) as ``non_finite``, a counter past BIGINT as ``out_of_range``, a NUL in a text column
as ``nul_in_text``. Rows that pass all that but the database still refuses (here a CHECK
constraint the test adds, standing for whatever nobody foresaw) are isolated by bisecting
their batch and counted as ``db_refused``. Every other message is stored.

Before the fix (measured): 4 non-finite and 2 refused messages among 801 cost 712 of the 795
good ones, most of them the well-behaved device's (each batch holding a poisoned message was
dropped after three retries, and acknowledged); with the CHECK-refused rows added, 740 of 793.
After: 0 lost, in ~2 s.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import text

from edgefleet.contract import Channel, Event, Telemetry, encode, topic
from edgefleet.mqtt import BrokerAddress
from tests.conftest import fresh_postgres_database
from tests.fleet_server.helpers import make_settings, operator, running_app, wait_until
from tests.utils.mosquitto import private_mosquitto

pytestmark = pytest.mark.integration

PER_DEVICE = 400
#: seq → the raw JSON fragment that replaces a good field (the boundary refuses these).
NON_FINITE = {
    50: ('"system": {}', '"system": {"cpu_percent": NaN}'),
    150: ('"latency_ms": null', '"latency_ms": {"p50": Infinity, "p95": 1.0}'),
    250: ('"system": {}', '"system": {"soc_temp_c": -Infinity}'),
    350: ('"latency_ms": null', '"latency_ms": {"p50": 1.0, "p95": 1e999}'),
}
#: Valid under the contract, refused by PostgreSQL: inference_count past a bigint.
TOO_BIG = 100
#: Refused by a CHECK constraint the test adds (an inference count nobody else sends).
CHECKED, REFUSED_COUNT = (200, 300), 424_242


def _telemetry(device: str, seq: int, *, poisoned: bool) -> bytes:
    message = Telemetry(device_id=device, seq=seq, interval_s=1, model=None, inference_count=seq)
    raw = json.dumps(json.loads(encode(message)), separators=(", ", ": "))
    if not poisoned:
        return raw.encode()
    if seq in NON_FINITE:
        good, bad = NON_FINITE[seq]
        assert good in raw
        raw = raw.replace(good, bad)
    elif seq == TOO_BIG:
        raw = raw.replace(f'"inference_count": {seq}', f'"inference_count": {2**63}')
    elif seq in CHECKED:
        raw = raw.replace(f'"inference_count": {seq}', f'"inference_count": {REFUSED_COUNT}')
    return raw.encode()


def _publish(url: str, messages: list[tuple[str, bytes]]) -> None:
    address = BrokerAddress.from_url(url)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"poison-{secrets.token_hex(4)}")
    client.max_inflight_messages_set(200)
    client.connect(address.host, address.port)
    client.loop_start()
    try:
        infos = [client.publish(t, raw, qos=1) for t, raw in messages]
        for info in infos:
            info.wait_for_publish(timeout=60)
            assert info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()


def test_poisoned_messages_cost_only_themselves(tmp_path: Path) -> None:
    # A private Mosquitto: on the shared one other tests' devices would be counted here too.
    with private_mosquitto(tmp_path) as broker, fresh_postgres_database() as database:
        url = broker.url
        settings = make_settings(
            tmp_path, database, broker_url=url, ingest_batch_size=500, ingest_batch_interval_s=0.2
        )
        with running_app(settings) as (client, runtime):
            assert runtime.engine is not None
            with runtime.engine.begin() as conn:
                conn.execute(
                    text(
                        "ALTER TABLE telemetry ADD CONSTRAINT refuse_one_count "
                        f"CHECK (inference_count <> {REFUSED_COUNT})"
                    )
                )
            tag = secrets.token_hex(3)
            bad, good = f"poison-{tag}", f"good-{tag}"
            for device in (bad, good):
                created = client.post(
                    "/api/v1/devices", json={"device_id": device}, headers=operator()
                )
                assert created.status_code == 201, created.text
            messages: list[tuple[str, bytes]] = []
            for seq in range(1, PER_DEVICE + 1):
                messages.append(
                    (topic(bad, Channel.TELEMETRY), _telemetry(bad, seq, poisoned=True))
                )
                messages.append(
                    (topic(good, Channel.TELEMETRY), _telemetry(good, seq, poisoned=False))
                )
            # An event with a NUL in its detail: PostgreSQL text columns refuse it.
            nul = Event(device_id=bad, seq=PER_DEVICE + 1, event="input.error", detail="a\x00b")
            messages.insert(PER_DEVICE, (topic(bad, Channel.EVENTS), encode(nul)))
            _publish(url, messages)  # every one acknowledged by the broker

            assert runtime.writer is not None
            wait_until(lambda: runtime.stats.received >= len(messages), timeout=30, what="delivery")
            assert runtime.writer.flush(120)

            with runtime.engine.connect() as conn:
                rows = conn.execute(text("SELECT device_id, seq FROM telemetry")).all()
                events = conn.execute(text("SELECT count(*) FROM event")).scalar_one()
            stored = {(d, int(s)) for d, s in rows}
            poisoned = set(NON_FINITE) | {TOO_BIG, *CHECKED}
            expected = {(good, s) for s in range(1, PER_DEVICE + 1)} | {
                (bad, s) for s in range(1, PER_DEVICE + 1) if s not in poisoned
            }
            lost = len(expected - stored)
            print(f"poison: {len(stored)} of {len(expected)} good messages stored, {lost} lost")
            assert lost == 0, sorted(expected - stored)
            assert stored == expected
            assert events == 0
            rejected = runtime.stats.snapshot()["rejected"]
            assert rejected == {
                "non_finite": len(NON_FINITE),
                "out_of_range": 1,
                "nul_in_text": 1,
                "db_refused": len(CHECKED),
            }

            metrics = client.get("/metrics").text
            assert (
                f'edgefleet_ingest_rejected_total{{reason="non_finite"}} {len(NON_FINITE)}.0'
                in (metrics)
            )
            assert 'edgefleet_ingest_rejected_total{reason="db_refused"} 2.0' in metrics
            assert 'edgefleet_ingest_rejected_total{reason="out_of_range"} 1.0' in metrics
