"""MQTT throughput: the embedded amqtt broker vs an external Mosquitto, side by side.

Publisher and subscriber run in separate processes (in one process paho's threads starve each
other). For each broker and QoS: N telemetry-sized JSON messages, received msg/s measured at
the subscriber from first to last message, and how many were lost. Prints medians over runs
and the embedded/external ratio.

    python bench/broker_bench.py [--messages 20000] [--runs 3] [--external mqtt://127.0.0.1:1883]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PAYLOAD = json.dumps(
    {
        "schema_version": 1, "kind": "telemetry", "device_id": "bench-device-0001", "seq": 0,
        "ts": "2026-11-23T12:00:00+00:00", "interval_s": 10.0, "inference_count": 1234,
        "error_count": 0, "latency_ms": {"p50": 1.25, "p95": 2.5}, "model": None,
    }
).encode()  # fmt: skip


def _address(url: str) -> tuple[str, int]:
    from edgefleet.mqtt import BrokerAddress

    addr = BrokerAddress.from_url(url)
    return addr.host, addr.port


def _subscriber(url: str, topic: str, n: int, qos: int, ready: mp.Event, out: mp.Queue) -> None:  # type: ignore[type-arg]
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    host, port = _address(url)
    times: list[float] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-sub-{time.time_ns()}")
    client.on_connect = lambda c, *_: c.subscribe(topic, qos=qos)
    client.on_subscribe = lambda *_: ready.set()
    client.on_message = lambda *_: times.append(time.perf_counter())
    client.connect(host, port)
    deadline = time.monotonic() + 120
    while len(times) < n and time.monotonic() < deadline:
        client.loop(timeout=0.05)
        if times and time.perf_counter() - times[-1] > 5:
            break
    client.disconnect()
    rate = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0
    out.put((len(times), rate))


def _publisher(url: str, topic: str, n: int, qos: int) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    host, port = _address(url)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{time.time_ns()}")
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect(host, port)
    client.loop_start()
    infos = [client.publish(topic, PAYLOAD, qos=qos) for _ in range(n)]
    for info in infos[-100:]:
        info.wait_for_publish(timeout=60)
    client.loop_stop()
    client.disconnect()


def run_once(url: str, n: int, qos: int) -> tuple[int, float]:
    ctx = mp.get_context("spawn")
    topic = f"edgefleet/v1/bench-{time.time_ns()}/telemetry"
    ready, out = ctx.Event(), ctx.Queue()
    sub = ctx.Process(target=_subscriber, args=(url, topic, n, qos, ready, out))
    sub.start()
    if not ready.wait(30):
        sub.terminate()
        raise RuntimeError(f"subscriber never subscribed on {url}")
    pub = ctx.Process(target=_publisher, args=(url, topic, n, qos))
    pub.start()
    pub.join(180)
    received, rate = out.get(timeout=180)
    sub.join(10)
    return received, rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--external", default="mqtt://127.0.0.1:1883")
    args = parser.parse_args()

    from fleet_server.broker import EmbeddedBroker
    from tests.utils.net import free_port, wait_for_port

    brokers: dict[str, str] = {}
    embedded = EmbeddedBroker(host="127.0.0.1", port=free_port())
    embedded.start(timeout=10)
    brokers["embedded (amqtt)"] = embedded.url
    try:
        host, port = _address(args.external)
        wait_for_port(host, port, timeout=2)
        brokers["external (Mosquitto)"] = args.external
    except TimeoutError:
        print(f"external broker {args.external} not reachable: measuring the embedded one only")
    results: dict[tuple[str, int], tuple[float, int]] = {}
    try:
        for qos in (0, 1):
            for name, url in brokers.items():
                rates, lost = [], 0
                for _ in range(args.runs):  # interleaved by broker within each QoS
                    received, rate = run_once(url, args.messages, qos)
                    rates.append(rate)
                    lost += args.messages - received
                results[(name, qos)] = (statistics.median(rates), lost)
    finally:
        embedded.stop()

    print(
        f"\n{args.messages} messages × {args.runs} runs, {len(PAYLOAD)}-byte JSON, "
        "separate processes"
    )
    print(f"{'broker':<24}{'QoS':>4}{'median msg/s':>15}{'lost':>8}")
    for (name, qos), (rate, lost) in results.items():
        print(f"{name:<24}{qos:>4}{rate:>15,.0f}{lost:>8}")
    for qos in (0, 1):
        emb = results.get(("embedded (amqtt)", qos))
        ext = results.get(("external (Mosquitto)", qos))
        if emb and ext and ext[0]:
            print(f"QoS {qos}: embedded / Mosquitto = {emb[0] / ext[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
