"""The agent's MQTT connection as its config describes it: the broker address (TLS files, user
name, the device token as password) and the transport with the agent's client id and Last Will."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from agent.config import AgentConfig
from agent.errors import AgentConfigError
from agent.publisher import status_payload
from edgefleet.contract import Channel, topic
from edgefleet.mqtt import BrokerAddress, MqttError, MqttTransport


def make_transport(config: AgentConfig, *, on_connect: Callable[[], None]) -> MqttTransport:
    """The transport (not started): client id ``edgefleet-agent-<device id>``, and a retained
    ``status=offline`` as its Will. AgentConfigError if the TLS files are unusable."""
    try:
        return MqttTransport(
            broker_address(config),
            client_id=f"edgefleet-agent-{config.device_id}",
            will=(
                topic(config.device_id, Channel.STATUS),
                status_payload(config.device_id, "offline"),
            ),
            on_connect=on_connect,
            keepalive=config.mqtt.keepalive,
        )
    except MqttError as err:  # TLS files that changed since the config was read
        raise AgentConfigError(f"mqtt: {err}") from err


def broker_address(config: AgentConfig) -> BrokerAddress:
    m = config.mqtt
    try:
        address = BrokerAddress.from_url(
            m.url,
            ca_file=str(m.ca_file) if m.ca_file else None,
            cert_file=str(m.cert_file) if m.cert_file else None,
            key_file=str(m.key_file) if m.key_file else None,
        )
    except MqttError as err:
        raise AgentConfigError(f"mqtt.url: {err}") from err
    if m.username is not None:
        # The server's broker checks the device token as the password: a config need not
        # repeat that secret (the token file is read here, so a rotated token is picked up).
        # An explicit empty password sends none.
        password: str | None = config.bearer_token()
        if m.password is not None:
            password = m.password.get_secret_value() or None
        address = replace(address, username=m.username, password=password)
    return address
