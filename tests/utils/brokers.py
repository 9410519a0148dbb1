"""Which MQTT brokers the tests started, for the server settings that depend on them."""

from __future__ import annotations

#: URLs of amqtt brokers the ``mqtt_url`` fixture started, which a server reaches as an
#: external broker: amqtt speaks MQTT 3.1.1 only (``broker_mqtt_version``).
AMQTT_URLS: set[str] = set()


def mqtt_version_for(broker_url: str | None) -> dict[str, str]:
    """Server settings for ``broker_url``: 3.1.1 for an amqtt broker, else the default (5)."""
    return {"broker_mqtt_version": "3.1.1"} if broker_url in AMQTT_URLS else {}
