"""Broker configs, the registry, and the external backend."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from pydantic import TypeAdapter, ValidationError

from fleet_server.broker import (
    BROKERS,
    BrokerConfig,
    BrokerError,
    EmbeddedBroker,
    EmbeddedBrokerConfig,
    ExternalBroker,
    ExternalBrokerConfig,
    create_broker,
)
from tests.utils.net import free_port

CONFIG = TypeAdapter(BrokerConfig)


def test_registry_is_written_by_hand() -> None:
    assert set(BROKERS) == {"embedded", "external"}


def test_configs_are_discriminated_on_kind() -> None:
    embedded = CONFIG.validate_python({"kind": "embedded", "port": 0})
    assert isinstance(embedded, EmbeddedBrokerConfig)
    assert embedded.max_packet_bytes > 64 * 1024
    external = CONFIG.validate_python({"kind": "external", "url": "mqtt://broker:1883"})
    assert isinstance(external, ExternalBrokerConfig)


@pytest.mark.parametrize(
    "raw",
    [
        {"kind": "emqx", "url": "mqtt://x"},
        {"kind": "embedded", "port": 1884, "unknown": 1},
        {"kind": "external"},
        {"kind": "external", "url": "http://broker:1883"},
        {"kind": "external", "url": "mqtt://"},
        {"kind": "external", "url": "mqtt://broker:99999"},
        {"kind": "external", "url": "mqtt://" + "a" * 3000},
    ],
)
def test_bad_configs_are_refused(raw: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        CONFIG.validate_python(raw)


def test_every_field_is_described() -> None:
    for model in (EmbeddedBrokerConfig, ExternalBrokerConfig):
        for name, info in model.model_fields.items():
            assert info.description, f"{model.__name__}.{name}"


def test_create_broker_builds_each_kind() -> None:
    embedded = create_broker(EmbeddedBrokerConfig(port=1999))
    assert isinstance(embedded, EmbeddedBroker)
    assert embedded.url == "mqtt://127.0.0.1:1999"
    assert not embedded.running
    external = create_broker(ExternalBrokerConfig(url="mqtts://user:pw@broker.example:8883"))
    assert isinstance(external, ExternalBroker)
    assert external.url == "mqtts://user:pw@broker.example:8883"


def test_embedded_url_brackets_ipv6() -> None:
    assert EmbeddedBroker(host="::1", port=1884).url == "mqtt://[::1]:1884"


@pytest.mark.parametrize("url", ["", "tcp://host:1883", "mqtt://host:port", "mqtt:///nohost"])
def test_external_broker_refuses_bad_urls(url: str) -> None:
    with pytest.raises(BrokerError, match="invalid broker URL"):
        ExternalBroker(url=url)


@pytest.mark.integration
def test_external_broker_start_checks_reachability(
    start_broker: Callable[..., EmbeddedBroker],
) -> None:
    running = start_broker()
    external = ExternalBroker(url=running.url)
    external.start(timeout=2.0)
    external.stop()
    external.stop()
    down = ExternalBroker(url=f"mqtt://127.0.0.1:{free_port()}")
    with pytest.raises(BrokerError, match="is not reachable") as info:
        down.start(timeout=1.0)
    assert "\n" not in str(info.value)
