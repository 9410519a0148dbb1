"""What Mosquitto's dynamic-security plugin holds for EdgeFleet: the roles, the clients, the
initial ``dynamic-security.json`` and the ``mosquitto.conf`` lines (pure: no I/O).

Per-device confinement is the same rule as the static ACL file and the embedded broker
(:mod:`fleet_server.broker.access`): a device publishes only to its own
telemetry/state/events/status/results topics and subscribes to / receives only its own
``desired``. Mosquitto 2.0's plugin has no ``%u`` substitution in role ACLs, so each device has
its own role (``edgefleet-device-<id>``) with literal topics; the device's client is bound to
its client id (``clientid`` = device id), which does on one listener what
``use_username_as_clientid`` did on the devices' static listener: no device can take over
another's session or the server's.

Passwords: the plugin stores PBKDF2-SHA512 with a base64 salt and iteration count, which is
what the server already keeps per device (``mqtt_password_hash``, ``$7$<it>$<salt>$<hash>``),
so the initial file carries every registered device without ever holding a token.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from edgefleet.contract import PREFIX, topic
from fleet_server.broker.access import DEVICE_PUBLISH_CHANNELS, DEVICE_SUBSCRIBE_CHANNELS
from fleet_server.services.broker_credentials.base import CredentialsError
from fleet_server.services.mosquitto import MAX_QUEUED_MESSAGES, mosquitto_hash

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = f"{CONTROL_TOPIC}/response"
SERVER_ROLE = "edgefleet-server"
DEVICE_ROLE_PREFIX = "edgefleet-device-"
DYNSEC_FILE = "dynamic-security.json"
#: Debian's build of the plugin.
PLUGIN_PATH = Path("/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so")
#: Nothing is allowed unless a role allows it (unsubscribing is harmless).
DEFAULT_ACL_ACCESS = {
    "publishClientSend": False,
    "publishClientReceive": False,
    "subscribe": False,
    "unsubscribe": True,
}


def device_role(device_id: str) -> str:
    return f"{DEVICE_ROLE_PREFIX}{device_id}"


def device_acls(device_id: str) -> list[dict[str, Any]]:
    """The device's own topics, literal (a device id is one topic level; the contract checks)."""
    acls: list[dict[str, Any]] = [
        {"acltype": "publishClientSend", "topic": topic(device_id, c), "allow": True}
        for c in DEVICE_PUBLISH_CHANNELS
    ]
    for channel in DEVICE_SUBSCRIBE_CHANNELS:
        name = topic(device_id, channel)
        acls.append({"acltype": "subscribeLiteral", "topic": name, "allow": True})
        acls.append({"acltype": "publishClientReceive", "topic": name, "allow": True})
    return acls


def server_acls() -> list[dict[str, Any]]:
    """The server reads and writes every EdgeFleet topic (shared subscriptions included) and
    administers the plugin."""
    root = f"{PREFIX.split('/')[0]}/#"
    acls: list[dict[str, Any]] = []
    for pattern in (root, "$share/+/" + root, f"{CONTROL_TOPIC.rsplit('/', 1)[0]}/#"):
        acls += [
            {"acltype": "publishClientSend", "topic": pattern, "allow": True},
            {"acltype": "publishClientReceive", "topic": pattern, "allow": True},
            {"acltype": "subscribePattern", "topic": pattern, "allow": True},
            {"acltype": "unsubscribePattern", "topic": pattern, "allow": True},
        ]
    return acls


def split_hash(hashed: str) -> tuple[int, str, str]:
    """(iterations, salt, hash) of a stored ``$7$`` hash; :class:`CredentialsError` if malformed."""
    parts = hashed.split("$")
    if len(parts) != 5 or parts[0] or parts[1] != "7" or not parts[2].isdigit():
        raise CredentialsError("a stored MQTT hash is malformed")
    return int(parts[2]), parts[3], parts[4]


def _client(
    username: str, hashed: str, *, roles: list[str], clientid: str | None
) -> dict[str, Any]:
    iterations, salt, digest = split_hash(hashed)
    client: dict[str, Any] = {
        "username": username,
        "password": digest,
        "salt": salt,
        "iterations": iterations,
        "roles": [{"rolename": role} for role in roles],
    }
    if clientid is not None:
        client["clientid"] = clientid
    return client


def initial_config(
    *, server: tuple[str, str], devices: Iterable[tuple[str, str | None]]
) -> dict[str, Any]:
    """The plugin's file (as ``mosquitto_ctrl dynsec init`` writes it) holding the server as
    its admin and every device registered so far; devices without a stored hash (registered
    before migration 0002) are left out until their token is rotated."""
    username, password = server
    clients = [_client(username, mosquitto_hash(password), roles=[SERVER_ROLE], clientid=None)]
    roles: list[dict[str, Any]] = [{"rolename": SERVER_ROLE, "acls": server_acls()}]
    for device_id, hashed in devices:
        if hashed is None:
            continue
        role = device_role(device_id)
        roles.append({"rolename": role, "acls": device_acls(device_id)})
        clients.append(_client(device_id, hashed, roles=[role], clientid=device_id))
    return {
        "clients": clients,
        "roles": roles,
        "groups": [],
        "defaultACLAccess": dict(DEFAULT_ACL_ACCESS),
    }


def initial_json(*, server: tuple[str, str], devices: Iterable[tuple[str, str | None]]) -> str:
    return json.dumps(initial_config(server=server, devices=devices), indent=2) + "\n"


def dynsec_conf_lines(
    *,
    config_file: Path,
    port: int = 1883,
    host: str = "0.0.0.0",  # noqa: S104 - written into a sample config
    server_port: int = 1885,
    server_host: str = "127.0.0.1",
    plugin: Path = PLUGIN_PATH,
    persistence_location: Path = Path("/var/lib/mosquitto"),
) -> str:
    """``mosquitto.conf`` lines for the plugin: one security setting for both listeners (the
    plugin is global), client ids bound per client inside the plugin instead of per listener."""
    return "\n".join(
        [
            "# Generated by `edgefleet server acl --dynsec`: merge into your mosquitto.conf.",
            "# Devices and the server are clients of the dynamic-security plugin; the server",
            "# adds, rotates and removes devices over $CONTROL/dynamic-security/v1 as it goes.",
            "per_listener_settings false",
            f"max_queued_messages {MAX_QUEUED_MESSAGES}",
            "persistence true",
            f"persistence_location {persistence_location.resolve()}/",
            "autosave_interval 30",
            "allow_anonymous false",
            f"plugin {plugin}",
            "# Writable by Mosquitto's user: the plugin saves every change into it.",
            f"plugin_opt_config_file {config_file}",
            "",
            "# Devices (user name = client id = device id, password = device token).",
            f"listener {port} {host}",
            "",
            "# The fleet server (EDGEFLEET_BROKER_URL; EDGEFLEET_BROKER_DYNSEC=1).",
            f"listener {server_port} {server_host}",
            "",
        ]
    )
