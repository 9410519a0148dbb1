"""The MQTT transport the agent and the server share: publish, subscribe, close.

A thin layer over paho-mqtt (callback API v2) that owns what every EdgeFleet client needs:
a Last Will, automatic reconnect with back-off, subscriptions restored after a reconnect, every
``MQTTMessageInfo.rc`` checked, and a way to wait until QoS 1 publishes are acknowledged.
``mqtts://`` connects over verified TLS only (:mod:`edgefleet.mqtt_tls`; no plaintext fallback,
no "insecure" switch), optionally with a client certificate. With ``session_expiry_s`` the broker
keeps the client's session (subscriptions, queued QoS 1 messages) while it is away, and, with
broker persistence, across a broker restart. paho is imported when a transport is created, so
importing this module costs nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import unquote, urlsplit

from edgefleet.mqtt_subs import (
    AckedHandler,
    MessageHandler,
    PendingAck,
    Subscription,
    filter_levels,
    topic_matches,
)
from edgefleet.tls_files import TlsError, TlsFiles

if TYPE_CHECKING:
    import paho.mqtt.client as paho

    from edgefleet.mqtt_tls import RecordingContext

log = logging.getLogger(__name__)


class MqttError(Exception):
    """The broker could not be reached, refused us, or refused a message."""


#: Refusals that mean the login is wrong, and what to check (CONNACK reason strings from paho).
_LOGIN_REFUSALS = ("Bad user name or password", "Not authorized")


def refusal(reason: str, *, username: str | None) -> str:
    """The broker's CONNACK reason, with what to check when the login is what it refused."""
    if not any(r.lower() in reason.lower() for r in _LOGIN_REFUSALS):
        return reason
    if username is None:
        return f"{reason} (no user name was sent; set mqtt.username)"
    return (
        f"{reason} (user {username!r}: check mqtt.username and mqtt.password; an agent's "
        "password defaults to its device token)"
    )


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int = 1883
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    def __post_init__(self) -> None:
        if not self.tls and (self.ca_file or self.cert_file or self.key_file):
            raise MqttError("ca_file, cert_file and key_file need an mqtts:// broker URL")
        if (self.cert_file is None) != (self.key_file is None):
            raise MqttError("a client certificate needs both cert_file and key_file")

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
    ) -> BrokerAddress:
        """Parse ``mqtt://[user[:password]@]host[:port]`` or ``mqtts://...`` (TLS, port 8883);
        the TLS files apply to ``mqtts://`` only (MqttError otherwise)."""
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts"):
            raise MqttError(f"broker URL must start with mqtt:// or mqtts://, got {url[:80]!r}")
        if not parts.hostname:
            raise MqttError(f"broker URL has no host: {url[:80]!r}")
        try:
            port = parts.port
        except ValueError as err:
            raise MqttError(f"broker URL has an invalid port: {url[:80]!r}") from err
        tls = parts.scheme == "mqtts"
        return cls(
            host=parts.hostname,
            port=port or (8883 if tls else 1883),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=tls,
            ca_file=ca_file,
            cert_file=cert_file,
            key_file=key_file,
        )

    @property
    def tls_files(self) -> TlsFiles:
        return TlsFiles(ca_file=self.ca_file, cert_file=self.cert_file, key_file=self.key_file)

    @property
    def url(self) -> str:
        """The URL without credentials (safe to log)."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


class MqttTransport:
    """One MQTT connection with a background network thread and automatic reconnect.

    ``session_expiry_s`` None: a clean session on every connect. A number: the broker keeps
    this client id's session while it is disconnected (MQTT v5: for that many seconds; 3.1.1:
    as long as the broker's own policy allows). ``on_subscribed`` runs (network thread) once
    the broker has acknowledged every subscription sent on a (re)connect.
    """

    def __init__(
        self,
        address: BrokerAddress,
        *,
        client_id: str,
        will: tuple[str, bytes] | None = None,
        on_connect: Callable[[], None] | None = None,
        protocol: Literal[3, 5] = 3,
        keepalive: int = 30,
        max_queued: int = 0,
        session_expiry_s: int | None = None,
        on_subscribed: Callable[[], None] | None = None,
        manual_ack: bool = False,
        receive_maximum: int | None = None,
    ) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.address = address
        self._protocol = protocol
        self._keepalive = keepalive
        self._on_connect_cb = on_connect
        self._on_subscribed_cb = on_subscribed
        self._sub_mids: set[int] = set()
        self._subs: dict[str, Subscription] = {}
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._refused: str | None = None
        # Message ids of QoS>0 publishes not yet acknowledged. paho may report an ack before
        # publish() has returned the id to us: such ids wait briefly in _early (id → time).
        self._pending: set[int] = set()
        self._early: dict[int, float] = {}
        self._started = False
        self._closing = False
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5 if protocol == 5 else mqtt.MQTTv311,
            clean_session=None if protocol == 5 else session_expiry_s is None,
            manual_ack=manual_ack,
        )
        self._manual_ack = manual_ack
        self._client.enable_logger(logging.getLogger("paho"))
        self._client.reconnect_delay_set(min_delay=1, max_delay=30)
        self._client.max_queued_messages_set(max_queued)
        self._client.max_inflight_messages_set(100)
        if address.username is not None:
            self._client.username_pw_set(address.username, address.password)
        self._tls: RecordingContext | None = None
        if address.tls:
            from edgefleet.mqtt_tls import client_context  # ssl: only for mqtts://

            try:
                self._tls = client_context(address.tls_files)
            except TlsError as err:
                raise MqttError(f"{address.url}: {err}") from err
            self._client.tls_set_context(self._tls)
        self._tls_logged = ""
        self._connect_properties: Any = None
        if session_expiry_s is not None and not 0 <= session_expiry_s <= 0xFFFFFFFF:
            raise MqttError(f"session_expiry_s must be 0..4294967295, got {session_expiry_s}")
        #: The Receive Maximum asked for in CONNECT (None: the broker's own window): how many
        #: QoS 1 messages the broker may send before our PUBACKs (with manual acks, the window
        #: between receiving and storing).
        self.receive_maximum = (
            max(1, min(receive_maximum, 65535))
            if protocol == 5 and receive_maximum is not None
            else None
        )
        if protocol == 5 and (session_expiry_s is not None or self.receive_maximum is not None):
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            self._connect_properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            if session_expiry_s is not None:
                self._connect_properties.SessionExpiryInterval = session_expiry_s
            if self.receive_maximum is not None:
                self._connect_properties.ReceiveMaximum = self.receive_maximum
        self._clean_start = session_expiry_s is None
        if will is not None:
            self._client.will_set(will[0], will[1], qos=1, retain=True)
        self._client.on_connect = self._handle_connect
        self._client.on_disconnect = self._handle_disconnect
        self._client.on_message = self._handle_message
        self._client.on_publish = self._handle_publish
        self._client.on_subscribe = self._handle_subscribe
        self._client.on_connect_fail = self._handle_connect_fail

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, *, wait: float | None = 10.0) -> None:
        """Connect in the background; with ``wait``, block until the broker accepts us."""
        if self._started:
            raise MqttError("transport already started")
        self._started = True
        try:
            if self._protocol == 5:
                self._client.connect_async(
                    self.address.host,
                    self.address.port,
                    self._keepalive,
                    clean_start=self._clean_start,
                    properties=self._connect_properties,
                )
            else:
                self._client.connect_async(self.address.host, self.address.port, self._keepalive)
        except (OSError, ValueError) as err:
            raise MqttError(f"cannot connect to {self.address.url}: {err}") from err
        self._client.loop_start()
        if wait is None:
            return
        deadline = time.monotonic() + wait
        while not self._connected.wait(timeout=0.05):
            if self._refused is not None:
                self.close()
                raise MqttError(f"{self.address.url} refused the connection: {self._refused}")
            tls_error = self._tls.errors.take() if self._tls is not None else None
            if tls_error is not None:
                self.close()
                from edgefleet.mqtt_tls import explain

                raise MqttError(f"TLS to {self.address.url} failed: {explain(tls_error)}")
            if time.monotonic() > deadline:
                self.close()
                raise MqttError(f"no connection to {self.address.url} within {wait:.0f} s")

    def close(self) -> None:
        """Disconnect cleanly (no Last Will) and stop the network thread."""
        if not self._started:
            return
        self._started = False
        self._closing = True
        try:
            self._client.disconnect()
        finally:
            self._client.loop_stop()
            self._connected.clear()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    # -- messages ----------------------------------------------------------------------------
    def subscribe(self, topic_filter: str, handler: MessageHandler, *, qos: int = 1) -> None:
        self._add(topic_filter, Subscription(qos, handler, filter_levels(topic_filter)))

    def subscribe_acked(self, topic_filter: str, handler: AckedHandler, *, qos: int = 1) -> None:
        """``handler`` acknowledges each message itself (``manual_ack`` transports): the broker
        keeps it, and sends it again after a reconnect, until then."""
        if not self._manual_ack:
            raise MqttError("subscribe_acked needs a transport created with manual_ack=True")
        self._add(topic_filter, Subscription(qos, handler, filter_levels(topic_filter), acked=True))

    def _add(self, topic_filter: str, sub: Subscription) -> None:
        qos = sub.qos
        with self._lock:
            self._subs[topic_filter] = sub
        if self.connected:
            rc, _mid = self._client.subscribe(topic_filter, qos=qos)
            self._check_rc(rc, f"subscribe to {topic_filter}")

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """Queue a message; QoS 1 messages wait in paho's queue while disconnected."""
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        self._check_rc(info.rc, f"publish to {topic}", allow_no_conn=True)
        if qos > 0:
            with self._lock:
                if self._early.pop(info.mid, None) is None:
                    self._pending.add(info.mid)

    def wait_published(self, timeout: float = 10.0) -> bool:
        """Block until every QoS > 0 publish so far is acknowledged; False on timeout."""
        deadline = time.monotonic() + timeout
        while self.unacknowledged:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    @property
    def unacknowledged(self) -> int:
        """QoS > 0 messages published but not yet acknowledged by the broker."""
        with self._lock:
            return len(self._pending)

    # -- paho callbacks (network thread) -----------------------------------------------------
    def _handle_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        if reason.is_failure:
            said = refusal(str(reason), username=self.address.username)
            if said != self._refused:  # the same refusal on every retry is logged once
                log.warning(f"mqtt connect refused: {said}", extra={"broker": self.address.url})
            self._refused = said
            return
        self._refused = None
        self._tls_logged = ""
        if self._tls is not None:
            self._tls.errors.take()
        with self._lock:
            subs = list(self._subs.items())
            self._sub_mids.clear()
        for topic_filter, sub in subs:
            rc, mid = client.subscribe(topic_filter, qos=sub.qos)
            if rc != 0:
                log.error("mqtt resubscribe failed", extra={"filter": topic_filter, "rc": rc})
            elif mid is not None:
                with self._lock:
                    self._sub_mids.add(mid)
        if not subs:
            self._subscribed()
        self._connected.set()
        log.info("mqtt connected", extra={"broker": self.address.url})
        if self._on_connect_cb is not None:
            try:
                self._on_connect_cb()
            except Exception:
                log.exception("on_connect callback failed")

    def _handle_disconnect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        was = self._connected.is_set()
        self._connected.clear()
        self._log_tls_error()
        if was and not self._closing:
            log.warning("mqtt disconnected", extra={"broker": self.address.url})

    def _handle_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        with self._lock:
            subs = [sub for sub in self._subs.values() if topic_matches(sub.levels, msg.topic)]
        acked = [sub for sub in subs if sub.acked]
        pending = PendingAck(client, msg.mid, msg.qos, len(acked)) if acked else None
        payload = bytes(msg.payload)
        for sub in subs:
            ack = pending.part() if sub.acked and pending is not None else None
            try:
                if ack is not None:
                    sub.handler(msg.topic, payload, bool(msg.retain), ack)  # type: ignore[call-arg]
                else:
                    sub.handler(msg.topic, payload, bool(msg.retain))  # type: ignore[call-arg]
            except Exception:
                log.exception("mqtt handler failed", extra={"topic": msg.topic[:200]})
                if ack is not None:
                    ack()  # it will not: do not hold the broker's window for it
        if self._manual_ack and pending is None:
            client.ack(msg.mid, msg.qos)  # no acked handler matched: nothing to wait for

    def _handle_subscribe(
        self, client: paho.Client, userdata: Any, mid: int, reasons: Any, props: Any
    ) -> None:
        refused = [r for r in reasons if getattr(r, "is_failure", False)]
        with self._lock:
            if mid not in self._sub_mids:
                return  # a subscribe() made while connected, not the on-connect set
            if refused:
                log.error("mqtt subscription refused", extra={"reason": str(refused[0])})
                return  # on_subscribed never runs for this connection
            self._sub_mids.discard(mid)
            done = not self._sub_mids
        if done:
            self._subscribed()

    def _subscribed(self) -> None:
        if self._on_subscribed_cb is None:
            return
        try:
            self._on_subscribed_cb()
        except Exception:
            log.exception("on_subscribed callback failed")

    def _handle_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        self._log_tls_error()

    def _log_tls_error(self) -> None:
        err = self._tls.errors.peek() if self._tls is not None else None
        if err is None:
            return
        from edgefleet.mqtt_tls import explain

        text = explain(err)
        if text != self._tls_logged:  # once per distinct cause, not on every retry
            self._tls_logged = text
            log.error("mqtt TLS failed", extra={"broker": self.address.url, "error": text})

    def _handle_publish(
        self, client: paho.Client, userdata: Any, mid: int, reason: Any, props: Any
    ) -> None:
        now = time.monotonic()
        with self._lock:
            if mid in self._pending:
                self._pending.discard(mid)
                return
            # An ack that raced ahead of publish() (or a QoS 0 send): remember it briefly.
            self._early[mid] = now
            while self._early:
                oldest_mid, seen = next(iter(self._early.items()))
                if now - seen < 5.0:
                    break
                del self._early[oldest_mid]

    # -- helpers -----------------------------------------------------------------------------
    def _check_rc(self, rc: int, what: str, *, allow_no_conn: bool = False) -> None:
        import paho.mqtt.client as mqtt

        if rc == mqtt.MQTT_ERR_SUCCESS:
            return
        if allow_no_conn and rc == mqtt.MQTT_ERR_NO_CONN:
            return
        raise MqttError(f"{what} failed: {mqtt.error_string(rc)}")
