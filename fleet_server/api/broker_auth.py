"""/broker/v1: authentication and authorisation for brokers that call out, in each broker's
own request and response shapes (outside /api/: a broker calls these per CONNECT and per
publish, which the audit log must not record one row at a time).

EMQX 5 (HTTP authenticator and HTTP authorizer, POST with a JSON body; EMQX fills the
``${...}`` placeholders configured in its body template):

* ``POST /broker/v1/emqx/authn`` ``{"username", "password", "clientid"}`` →
  200 ``{"result": "allow" | "deny", "is_superuser": bool}``;
* ``POST /broker/v1/emqx/authz`` ``{"username", "clientid", "topic", "action"}`` (action
  ``publish`` or ``subscribe``) → 200 ``{"result": "allow" | "deny"}``.

mosquitto-go-auth's HTTP backend (``http_params_mode`` json or form, ``http_response_mode``
status or json):

* ``POST /broker/v1/go-auth/user`` ``{"username", "password", "clientid"}``;
* ``POST /broker/v1/go-auth/superuser`` ``{"username"}``;
* ``POST /broker/v1/go-auth/acl`` ``{"username", "clientid", "topic", "acc"}`` (acc 1 read,
  2 write, 3 read and write, 4 subscribe) → 200 ``{"ok": true, "error": ""}`` or
  403 ``{"ok": false, "error": "..."}``.

A malformed body is a 422 (EMQX then ignores the answer and its default denies; go-auth denies
on any status outside 2xx). Callers outside ``broker_http_auth_sources`` get 403; with
``broker_http_auth`` off every route is a 404.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fleet_server.api.deps import RuntimeDep, SettingsDep
from fleet_server.services.broker_http_auth import MAX_FIELD, MAX_TOPIC, Access, BrokerAuth
from fleet_server.services.errors import Forbidden, NotFound, TooLarge, Unavailable, Unprocessable

#: Not in the OpenAPI schema: its callers are brokers, whose shapes are documented above and in
#: docs/broker.md (not the API's error model: EMQX and go-auth read their own fields).
router = APIRouter(prefix="/broker/v1", tags=["broker auth"], include_in_schema=False)

#: A broker's call is a few hundred bytes.
MAX_BODY = 4096

Short = Annotated[str, Field(max_length=MAX_FIELD)]


class _Body(BaseModel):
    # Brokers may send more placeholders than we read (peerhost, protocol, ...): ignored.
    model_config = ConfigDict(extra="ignore")


class EmqxAuthn(_Body):
    username: Short = ""
    password: Short = ""
    clientid: Short | None = None


class EmqxAuthz(_Body):
    username: Short = ""
    clientid: Short | None = None
    topic: Annotated[str, Field(min_length=1, max_length=MAX_TOPIC)]
    action: Literal["publish", "subscribe"]


class GoAuthUser(_Body):
    username: Short = ""
    password: Short = ""
    clientid: Short | None = None


class GoAuthSuperuser(_Body):
    username: Short = ""


class GoAuthAcl(_Body):
    username: Short = ""
    clientid: Short | None = None
    topic: Annotated[str, Field(min_length=1, max_length=MAX_TOPIC)]
    acc: Literal[1, 2, 3, 4]


def broker_auth(request: Request, runtime: RuntimeDep, settings: SettingsDep) -> BrokerAuth:
    """The decisions, for an enabled feature and a caller among the broker's addresses."""
    if not settings.broker_http_auth:
        raise NotFound("broker HTTP authentication is off (broker_http_auth)")
    host = request.client.host if request.client is not None else None
    if not _from_broker(host, settings.broker_http_auth_sources):
        raise Forbidden("this address is not one of broker_http_auth_sources")
    if runtime.engine is None or runtime.mqtt_credential is None:
        raise Unavailable("the server is not started")
    return BrokerAuth(engine=runtime.engine, server=runtime.mqtt_credential)


AuthDep = Annotated[BrokerAuth, Depends(broker_auth)]


def _from_broker(host: str | None, sources: list[str]) -> bool:
    if host is None:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(s, strict=False) for s in sources)


async def _body(request: Request, model: type[Any]) -> Any:
    """The body as JSON or as a form (go-auth's ``http_params_mode form``), validated."""
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise TooLarge(f"body over {MAX_BODY} bytes")
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        if kind == "application/x-www-form-urlencoded":
            fields = parse_qs(raw.decode("utf-8"), keep_blank_values=True, max_num_fields=16)
            data: Any = {key: values[-1] for key, values in fields.items()}
            if "acc" in data and data["acc"].isdigit():
                data["acc"] = int(data["acc"])
        else:
            data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as err:
        raise Unprocessable("the body is neither JSON nor a form") from err
    if not isinstance(data, dict):
        raise Unprocessable("the body must be an object")
    try:
        return model.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise Unprocessable(f"{where}: {first['msg']}") from err


@router.post("/emqx/authn")
async def emqx_authn(request: Request, auth: AuthDep) -> dict[str, Any]:
    body: EmqxAuthn = await _body(request, EmqxAuthn)
    identity = auth.authenticate(
        username=body.username, password=body.password, clientid=body.clientid
    )
    if identity is None:
        return {"result": "deny", "is_superuser": False}
    return {"result": "allow", "is_superuser": identity.is_server}


@router.post("/emqx/authz")
async def emqx_authz(request: Request, auth: AuthDep) -> dict[str, Any]:
    body: EmqxAuthz = await _body(request, EmqxAuthz)
    access = Access.PUBLISH if body.action == "publish" else Access.SUBSCRIBE
    allowed = auth.allowed(username=body.username, topic=body.topic, access=access)
    return {"result": "allow" if allowed else "deny"}


def _go_auth(ok: bool, error: str) -> JSONResponse:
    if ok:
        return JSONResponse({"ok": True, "error": ""})
    return JSONResponse({"ok": False, "error": error}, status_code=403)


@router.post("/go-auth/user")
async def go_auth_user(request: Request, auth: AuthDep) -> JSONResponse:
    body: GoAuthUser = await _body(request, GoAuthUser)
    identity = auth.authenticate(
        username=body.username, password=body.password, clientid=body.clientid
    )
    return _go_auth(identity is not None, "wrong user name, password or client id")


@router.post("/go-auth/superuser")
async def go_auth_superuser(request: Request, auth: AuthDep) -> JSONResponse:
    body: GoAuthSuperuser = await _body(request, GoAuthSuperuser)
    return _go_auth(auth.is_superuser(username=body.username), "not a superuser")


@router.post("/go-auth/acl")
async def go_auth_acl(request: Request, auth: AuthDep) -> JSONResponse:
    body: GoAuthAcl = await _body(request, GoAuthAcl)
    wanted = {
        1: (Access.RECEIVE,),
        2: (Access.PUBLISH,),
        3: (Access.RECEIVE, Access.PUBLISH),
        4: (Access.SUBSCRIBE,),
    }[body.acc]
    ok = all(auth.allowed(username=body.username, topic=body.topic, access=a) for a in wanted)
    return _go_auth(ok, "not allowed on this topic")
