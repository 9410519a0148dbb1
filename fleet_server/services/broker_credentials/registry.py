"""The hand-written registry of :class:`BrokerCredentials` and the one place that decides which
is active (:func:`create_credentials`, called once by the runtime)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from edgefleet.mqtt_tls import TlsFiles
from fleet_server.services.broker_credentials.base import BrokerCredentials, CredentialsError
from fleet_server.services.broker_credentials.dynsec import DynsecClient, DynsecCredentials
from fleet_server.services.broker_credentials.embedded import DropsClients, EmbeddedCredentials
from fleet_server.services.broker_credentials.static import StaticFileCredentials


@dataclass(frozen=True)
class CredentialsContext:
    """What an implementation may need: where the broker is and who the server is on it."""

    broker_url: str
    username: str
    password: str
    client_id: str
    timeout_s: float
    #: For an mqtts:// broker: CA bundle, client certificate and key (None: system trust).
    tls: TlsFiles = field(default_factory=TlsFiles)
    #: The embedded broker this process runs (None with an external broker).
    embedded: DropsClients | None = None


def _static(_context: CredentialsContext) -> BrokerCredentials:
    return StaticFileCredentials()


def _dynsec(context: CredentialsContext) -> BrokerCredentials:
    client = DynsecClient(
        broker_url=context.broker_url,
        username=context.username,
        password=context.password,
        client_id=context.client_id,
        timeout_s=context.timeout_s,
        tls=context.tls,
    )
    client.start()
    credentials = DynsecCredentials(client)
    try:
        credentials.ensure_server(context.username)
    except CredentialsError:
        client.close()
        raise
    return credentials


def _embedded(context: CredentialsContext) -> BrokerCredentials:
    if context.embedded is None:
        raise CredentialsError("embedded broker credentials need the embedded broker")
    return EmbeddedCredentials(context.embedded)


#: kind → factory (started, ready to use).
CREDENTIALS: dict[str, Callable[[CredentialsContext], BrokerCredentials]] = {
    "static": _static,
    "dynsec": _dynsec,
    "embedded": _embedded,
}


def credentials_kind(*, dynsec: bool, external: bool) -> str:
    """``dynsec`` when the setting asks for it (an external broker only), ``embedded`` for
    the broker this process runs, else ``static``."""
    if dynsec and not external:
        raise CredentialsError("broker_dynsec needs an external Mosquitto (broker_url)")
    if dynsec:
        return "dynsec"
    return "static" if external else "embedded"


def create_credentials(kind: str, context: CredentialsContext) -> BrokerCredentials:
    factory = CREDENTIALS.get(kind)
    if factory is None:
        raise CredentialsError(f"unknown broker credentials {kind!r}; known: {sorted(CREDENTIALS)}")
    return factory(context)
