"""Mosquitto's dynamic-security plugin, driven over MQTT: the server logs in as
``mqtt_username`` (the plugin's admin), publishes commands on ``$CONTROL/dynamic-security/v1``
and waits for the answer on ``.../response`` (matched by ``correlationData``).

Every change is one message holding all its commands, which the plugin applies in order and
answers together: enrolment is ``createRole`` + ``createClient`` (client id bound to the device
id); rotation ``setClientPassword``; decommissioning ``deleteClient`` + ``deleteRole``;
revocation ``disableClient``. The plugin closes the connection of a client it deletes, disables
or re-passwords, so the change takes effect at once (measured in
tests/fleet_server/services/broker_credentials/test_dynsec_mosquitto.py).
"""

from __future__ import annotations

import json
import logging
import secrets
import ssl
import threading
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from edgefleet.mqtt_tls import TlsError, TlsFiles, client_context
from fleet_server.services.broker_credentials.base import Applied, CredentialsError, SyncReport
from fleet_server.services.broker_credentials.dynsec_config import (
    CONTROL_TOPIC,
    DEFAULT_ACL_ACCESS,
    RESPONSE_TOPIC,
    SERVER_ROLE,
    device_acls,
    device_role,
    server_acls,
)

if TYPE_CHECKING:
    import paho.mqtt.client as paho

log = logging.getLogger(__name__)

#: Errors that mean "already so": an idempotent retry succeeds.
_ALREADY = {
    "createRole": "Role already exists",
    "createClient": "Client already exists",
    "addRoleACL": "ACL with this topic already exists",
    "deleteClient": "Client not found",
    "deleteRole": "Role not found",
}
#: How long :meth:`DynsecCredentials.ensure_server` waits for its role to show.
ENSURE_TIMEOUT_S = 10.0
#: A response larger than this is not the plugin's (ours are a few hundred bytes).
_MAX_RESPONSE = 1 << 20


class DynsecClient:
    """One admin connection to the plugin; :meth:`call` is thread-safe and synchronous."""

    def __init__(
        self,
        *,
        broker_url: str,
        username: str,
        password: str,
        client_id: str,
        timeout_s: float = 5.0,
        tls: TlsFiles | None = None,
    ) -> None:
        parts = urlsplit(broker_url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise CredentialsError(
                f"dynamic security needs an mqtt[s]:// broker URL, not {broker_url[:80]!r}"
            )
        self._host = parts.hostname
        self._port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
        self._timeout = timeout_s
        self._lock = threading.Lock()
        self._pending: dict[str, tuple[threading.Event, list[Any]]] = {}
        self._subscribed = threading.Event()
        context = None
        if parts.scheme == "mqtts":  # verified TLS only, as the bus (edgefleet.mqtt_tls)
            try:
                context = client_context(tls or TlsFiles())
            except TlsError as err:
                raise CredentialsError(f"dynamic security: {err}") from err
        self._client = self._make_client(username, password, client_id, context)

    def _make_client(
        self, username: str, password: str, client_id: str, tls_context: ssl.SSLContext | None
    ) -> paho.Client:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
        client.username_pw_set(username, password)
        if tls_context is not None:
            client.tls_set_context(tls_context)
        client.reconnect_delay_set(min_delay=1, max_delay=10)
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        client.on_subscribe = lambda *_args: self._subscribed.set()
        return client

    def start(self) -> None:
        """Connect and subscribe to the responses; :class:`CredentialsError` if that fails
        within the timeout (wrong admin password, plugin not loaded, broker down)."""
        try:
            self._client.connect_async(self._host, self._port, keepalive=30)
        except (OSError, ValueError) as err:
            raise CredentialsError(f"dynamic security: cannot connect: {err}") from err
        self._client.loop_start()
        if not self._subscribed.wait(self._timeout):
            self.close()
            raise CredentialsError(
                f"dynamic security: no admin session on {self._host}:{self._port} within "
                f"{self._timeout:g} s (check the broker runs the plugin and that mqtt_username/"
                "mqtt_password are its admin)"
            )

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(self, client: paho.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            log.warning("dynamic security: connect refused", extra={"reason": str(reason)})
            return
        self._subscribed.clear()
        result, mid = client.subscribe(RESPONSE_TOPIC, qos=1)
        if result != 0:
            log.warning("dynamic security: subscribe failed", extra={"rc": result})
            return

    def _on_message(self, _c: paho.Client, _u: Any, message: paho.MQTTMessage) -> None:
        if len(message.payload) > _MAX_RESPONSE:
            return
        try:
            body = json.loads(message.payload)
            responses = body["responses"]
        except (ValueError, KeyError, TypeError):
            log.warning("dynamic security: unreadable response ignored")
            return
        if not isinstance(responses, list):
            return
        for response in responses:
            key = response.get("correlationData") if isinstance(response, dict) else None
            with self._lock:
                waiter = self._pending.get(key) if isinstance(key, str) else None
            if waiter is not None:
                waiter[1].append(response)
                waiter[0].set()

    def call(self, commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Send the commands in one message; their responses in order. Raises
        :class:`CredentialsError` on a timeout or on an error the command did not expect."""
        batch = secrets.token_hex(8)
        keys = [f"{batch}-{i}" for i in range(len(commands))]
        waiters: dict[str, tuple[threading.Event, list[Any]]] = {
            key: (threading.Event(), []) for key in keys
        }
        with self._lock:
            self._pending.update(waiters)
        try:
            payload = json.dumps(
                {
                    "commands": [
                        dict(c, correlationData=k) for c, k in zip(commands, keys, strict=True)
                    ]
                }
            )
            info = self._client.publish(CONTROL_TOPIC, payload, qos=1)
            if info.rc != 0:
                raise CredentialsError(f"dynamic security: publish failed (rc {info.rc})")
            out = []
            for command, key in zip(commands, keys, strict=True):
                event, box = waiters[key]
                if not event.wait(self._timeout):
                    raise CredentialsError(
                        f"dynamic security: no answer to {command['command']} within "
                        f"{self._timeout:g} s"
                    )
                response = box[0]
                error = response.get("error")
                if error and _ALREADY.get(command["command"]) != error:
                    raise CredentialsError(f"dynamic security: {command['command']}: {error}")
                out.append(response)
            return out
        finally:
            with self._lock:
                for key in keys:
                    self._pending.pop(key, None)


class DynsecCredentials:
    """:class:`~fleet_server.services.broker_credentials.base.BrokerCredentials` on the plugin."""

    kind = "dynsec"

    def __init__(self, client: DynsecClient) -> None:
        self._client = client

    def ensure_server(self, username: str) -> None:
        """Give the server's own login (``username``, the plugin's admin) the server role and
        the plugin EdgeFleet's default access. Idempotent; run at start. So a plugin file made
        by Mosquitto's own ``mosquitto_ctrl dynsec init FILE USER PASSWORD`` (whose admin may
        only administer the plugin and read) is all a broker needs, as well as one written by
        ``edgefleet server acl --dynsec``."""
        commands: list[dict[str, Any]] = [{"command": "createRole", "rolename": SERVER_ROLE}]
        commands += [
            {"command": "addRoleACL", "rolename": SERVER_ROLE, **acl} for acl in server_acls()
        ]
        commands.append(
            {
                "command": "setDefaultACLAccess",
                "acls": [{"acltype": k, "allow": v} for k, v in DEFAULT_ACL_ACCESS.items()],
            }
        )
        self._client.call(commands)
        if SERVER_ROLE in self._client_roles(username):
            return
        try:
            self._client.call(
                [{"command": "addClientRole", "username": username, "rolename": SERVER_ROLE}]
            )
        except CredentialsError as err:
            # Mosquitto 2.0.11 answers "Internal error" when the client it changed is the one
            # asking (it disconnects it so the new role applies) although the role was added.
            if "Internal error" not in str(err):
                raise
        deadline = time.monotonic() + ENSURE_TIMEOUT_S
        while not self._has_role(username, SERVER_ROLE):
            if time.monotonic() > deadline:
                raise CredentialsError(
                    f"dynamic security: could not give {username!r} the role {SERVER_ROLE}"
                )
            time.sleep(0.1)
        log.info("dynamic security: gave %s the role %s", username, SERVER_ROLE)

    def _has_role(self, username: str, role: str) -> bool:
        """Whether ``username`` holds ``role``; False while the admin connection is down (the
        plugin disconnects a client whose roles it changed)."""
        try:
            return role in self._client_roles(username)
        except CredentialsError:
            return False

    def _client_roles(self, username: str) -> set[str]:
        [answer] = self._client.call([{"command": "getClient", "username": username}])
        data = answer.get("data")
        info = data.get("client") if isinstance(data, dict) else None
        roles = info.get("roles") if isinstance(info, dict) else None
        if not isinstance(roles, list):
            raise CredentialsError(f"dynamic security: getClient {username!r} answered no roles")
        return {str(r.get("rolename")) for r in roles if isinstance(r, dict)}

    def add(self, *, device_id: str, token: str) -> Applied:
        role = device_role(device_id)
        self._client.call(
            [
                {"command": "createRole", "rolename": role, "acls": device_acls(device_id)},
                {
                    "command": "createClient",
                    "username": device_id,
                    "password": token,
                    "clientid": device_id,
                    "roles": [{"rolename": role}],
                },
                # An existing client (a retry, or one re-added after removal failed half-way)
                # gets this password and is enabled.
                {"command": "setClientPassword", "username": device_id, "password": token},
                {"command": "enableClient", "username": device_id},
            ]
        )
        return Applied.NOW

    def rotate(self, *, device_id: str, token: str) -> Applied:
        try:
            self._client.call(
                [{"command": "setClientPassword", "username": device_id, "password": token}]
            )
        except CredentialsError as err:
            if "Client not found" not in str(err):
                raise
            return self.add(device_id=device_id, token=token)
        return Applied.NOW

    def remove(self, *, device_id: str) -> Applied:
        self._client.call(
            [
                {"command": "deleteClient", "username": device_id},
                {"command": "deleteRole", "rolename": device_role(device_id)},
            ]
        )
        return Applied.NOW

    def disable(self, *, device_id: str) -> Applied:
        self._client.call([{"command": "disableClient", "username": device_id}])
        return Applied.NOW

    def sync(self, *, live: set[str], decommissioned: set[str]) -> SyncReport:
        """One ``listClients``, then a removal per decommissioned device still listed. Clients
        the database does not know are left alone (the operator's own, e.g. a dashboard)."""
        [listing] = self._client.call([{"command": "listClients", "count": -1, "offset": 0}])
        data = listing.get("data")
        names = data.get("clients") if isinstance(data, dict) else None
        if not isinstance(names, list):
            raise CredentialsError("dynamic security: listClients answered without clients")
        present = {name for name in names if isinstance(name, str)}
        removed = sorted(present & decommissioned)
        for device_id in removed:
            self.remove(device_id=device_id)
        return SyncReport(removed=tuple(removed), missing=tuple(sorted(live - present)))

    def close(self) -> None:
        self._client.close()
