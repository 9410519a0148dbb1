"""/broker/v1: the HTTP authentication and authorisation a broker calls out to, with requests
shaped exactly as EMQX 5 (HTTP authn/authz, JSON bodies from its default templates) and
mosquitto-go-auth's HTTP backend (JSON or form parameters) send them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from edgefleet.contract import Channel, topic
from fleet_server.app import create_app
from fleet_server.runtime import Runtime
from tests.fleet_server.helpers import make_settings, operator, unique_id

pytestmark = pytest.mark.integration

BROKER = ("127.0.0.1", 40000)
FORM = {"content-type": "application/x-www-form-urlencoded"}


@pytest.fixture
def broker_app(tmp_path: Path) -> Iterator[tuple[TestClient, Runtime]]:
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}", broker_http_auth=True)
    app = create_app(settings)
    with TestClient(app, client=BROKER) as client:
        runtime = app.state.runtime
        assert isinstance(runtime, Runtime)
        yield client, runtime


def _devices(client: TestClient) -> dict[str, str]:
    tokens = {}
    for name in ("a", "b"):
        device_id = unique_id(name)
        created = client.post("/api/v1/devices", json={"device_id": device_id}, headers=operator())
        tokens[device_id] = created.json()["token"]
    return tokens


def _server(runtime: Runtime) -> tuple[str, str]:
    assert runtime.mqtt_credential is not None
    return runtime.mqtt_credential.username, runtime.mqtt_credential.password


def test_emqx_authn_and_authz(broker_app: tuple[TestClient, Runtime]) -> None:
    client, runtime = broker_app
    (a, token_a), (b, token_b) = _devices(client).items()
    server_user, server_password = _server(runtime)

    def authn(username: str, password: str, clientid: str, **extra: Any) -> dict[str, Any]:
        body = {"username": username, "password": password, "clientid": clientid, **extra}
        answer = client.post("/broker/v1/emqx/authn", json=body)
        assert answer.status_code == 200, answer.text
        result: dict[str, Any] = answer.json()
        return result

    allow = {"result": "allow", "is_superuser": False}
    deny = {"result": "deny", "is_superuser": False}
    # EMQX sends whatever its template names; placeholders we do not read are ignored.
    assert authn(a, token_a, a, peerhost="10.0.0.7", protocol="mqtt") == allow
    assert authn(server_user, server_password, "edgefleet.server.x") == {
        "result": "allow",
        "is_superuser": True,
    }
    assert authn(a, token_b, a) == deny  # another device's password
    assert authn(a, "", a) == deny
    assert authn("nobody", token_a, "nobody") == deny  # unknown client
    assert authn(a, token_a, b) == deny  # a's login with b's client id
    assert authn(server_user, token_a, "edgefleet.server.x") == deny

    def authz(username: str, name: str, action: str) -> str:
        body = {"username": username, "clientid": username, "topic": name, "action": action}
        answer = client.post("/broker/v1/emqx/authz", json=body)
        assert answer.status_code == 200, answer.text
        result: str = answer.json()["result"]
        return result

    assert authz(a, topic(a, Channel.TELEMETRY), "publish") == "allow"
    assert authz(a, topic(a, Channel.DESIRED), "subscribe") == "allow"
    assert authz(a, topic(b, Channel.TELEMETRY), "publish") == "deny"  # another device's
    assert authz(a, topic(b, Channel.DESIRED), "subscribe") == "deny"
    assert authz(a, topic(a, Channel.DESIRED), "publish") == "deny"  # its own desired
    assert authz(a, "edgefleet/#", "subscribe") == "deny"
    assert authz(a, "edgefleet/v1/+/desired", "subscribe") == "deny"
    assert authz("nobody", topic("nobody", Channel.TELEMETRY), "publish") == "deny"
    assert authz(server_user, topic(a, Channel.DESIRED), "publish") == "allow"

    # Decommissioned: refused at once, both for a login and for its open connection's topics.
    assert client.delete(f"/api/v1/devices/{a}", headers=operator()).status_code == 200
    assert authn(a, token_a, a) == deny
    assert authz(a, topic(a, Channel.TELEMETRY), "publish") == "deny"


def test_mosquitto_go_auth_http_backend(broker_app: tuple[TestClient, Runtime]) -> None:
    client, runtime = broker_app
    (a, token_a), (b, _token_b) = _devices(client).items()
    server_user, _ = _server(runtime)

    def call(path: str, form: bool, **params: Any) -> tuple[int, Any]:
        if form:  # http_params_mode form: Go's PostForm
            answer = client.post(f"/broker/v1/go-auth/{path}", data=params, headers=FORM)
        else:  # http_params_mode json (the default)
            answer = client.post(f"/broker/v1/go-auth/{path}", json=params)
        return answer.status_code, answer.json()

    ok = (200, {"ok": True, "error": ""})
    for form in (False, True):
        assert call("user", form, username=a, password=token_a, clientid=a) == ok
        code, body = call("user", form, username=a, password=token_a[::-1], clientid=a)
        assert code == 403 and body["ok"] is False and body["error"]
        assert call("user", form, username="ghost", password=token_a, clientid="ghost")[0] == 403
        assert call("user", form, username=a, password=token_a, clientid=b)[0] == 403
        assert call("superuser", form, username=server_user) == ok
        assert call("superuser", form, username=a)[0] == 403
        own_desired, own_telemetry = topic(a, Channel.DESIRED), topic(a, Channel.TELEMETRY)
        acl = {"username": a, "clientid": a}
        assert call("acl", form, topic=own_desired, acc=1, **acl) == ok  # read
        assert call("acl", form, topic=own_desired, acc=4, **acl) == ok  # subscribe
        assert call("acl", form, topic=own_telemetry, acc=2, **acl) == ok  # write
        assert call("acl", form, topic=own_desired, acc=2, **acl)[0] == 403
        assert call("acl", form, topic=own_desired, acc=3, **acl)[0] == 403  # read yes, write no
        assert call("acl", form, topic=topic(b, Channel.DESIRED), acc=1, **acl)[0] == 403
        assert call("acl", form, topic=topic(b, Channel.TELEMETRY), acc=2, **acl)[0] == 403
        assert call("acl", form, topic="edgefleet/v1/+/desired", acc=4, **acl)[0] == 403


def test_malformed_and_hostile_calls(broker_app: tuple[TestClient, Runtime]) -> None:
    client, _ = broker_app
    authn = "/broker/v1/emqx/authn"
    assert (
        client.post(
            authn, content=b"not json", headers={"content-type": "application/json"}
        ).status_code
        == 422
    )
    assert client.post(authn, json=["a", "b"]).status_code == 422
    assert client.post(authn, json={"username": "x" * 300, "password": "p"}).status_code == 422
    assert client.post(authn, json={"username": 5, "password": "p"}).status_code == 422
    assert client.post(authn, content=b"{" + b" " * 5000 + b"}").status_code == 413
    assert client.post(authn, content=b"\xff\xfe", headers=FORM).status_code == 422
    authz = "/broker/v1/emqx/authz"
    body = {"username": "a", "topic": "t", "action": "all"}
    assert client.post(authz, json=body).status_code == 422
    assert client.post(authz, json={**body, "action": "publish", "topic": ""}).status_code == 422
    acl = "/broker/v1/go-auth/acl"
    for acc in (0, 5, "x"):
        form = client.post(acl, data={"username": "a", "topic": "t", "acc": acc}, headers=FORM)
        assert form.status_code == 422
    long_topic = {"username": "a", "topic": "t/" * 600, "acc": 1}
    assert client.post(acl, json=long_topic).status_code == 422
    # Nothing of that was audited (brokers call per publish).
    audit = client.get("/api/v1/audit", headers=operator()).json()
    assert not any(row["path"].startswith("/broker/") for row in audit)

    # A caller outside broker_http_auth_sources is refused before anything is read.
    outsider = TestClient(client.app, client=("192.0.2.7", 1234))
    refused = outsider.post(authn, json={"username": "a", "password": "b"})
    assert refused.status_code == 403


def test_off_by_default(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}")
    with TestClient(create_app(settings), client=BROKER) as client:
        answer = client.post("/broker/v1/emqx/authn", json={"username": "a", "password": "b"})
        assert answer.status_code == 404
