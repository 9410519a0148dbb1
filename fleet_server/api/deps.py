"""Request dependencies: settings, runtime, DB session and the two kinds of bearer auth."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlmodel import Session

from fleet_server.runtime import Runtime
from fleet_server.services.auth import tokens_equal
from fleet_server.services.devices import device_for_token
from fleet_server.services.errors import Unauthorized, Unavailable
from fleet_server.settings import ServerSettings
from fleet_server.storage import ArtifactStore


def get_settings(request: Request) -> ServerSettings:
    settings = request.app.state.settings
    assert isinstance(settings, ServerSettings)
    return settings


def get_runtime(request: Request) -> Runtime:
    runtime = getattr(request.app.state, "runtime", None)
    if not isinstance(runtime, Runtime):
        raise Unavailable("the server is not started")
    return runtime


SettingsDep = Annotated[ServerSettings, Depends(get_settings)]
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def get_session(runtime: RuntimeDep) -> Iterator[Session]:
    if runtime.engine is None:
        raise Unavailable("the database is not connected")
    with Session(runtime.engine) as session:
        yield session


def get_store(runtime: RuntimeDep) -> ArtifactStore:
    if runtime.store is None:
        raise Unavailable("the artifact store is not ready")
    return runtime.store


SessionDep = Annotated[Session, Depends(get_session)]
StoreDep = Annotated[ArtifactStore, Depends(get_store)]

_bearer = HTTPBearer(auto_error=False, description="Operator or device token.")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


@dataclass(frozen=True)
class Principal:
    """Who is calling: the operator, or one device."""

    operator: bool
    device_id: str | None = None

    @property
    def actor(self) -> str:
        """Who to name in rollout decisions and logs."""
        return "operator" if self.operator else f"device:{self.device_id}"


def _token(credentials: HTTPAuthorizationCredentials | None) -> str:
    if credentials is None or not credentials.credentials:
        raise Unauthorized("missing bearer token")
    return credentials.credentials


def require_operator(credentials: Credentials, runtime: RuntimeDep) -> Principal:
    if not tokens_equal(_token(credentials), runtime.operator_token):
        raise Unauthorized("invalid operator token")
    return Principal(operator=True)


def require_device_or_operator(
    credentials: Credentials, runtime: RuntimeDep, session: SessionDep
) -> Principal:
    token = _token(credentials)
    if tokens_equal(token, runtime.operator_token):
        return Principal(operator=True)
    device = device_for_token(session=session, token=token)
    if device is None:
        raise Unauthorized("invalid token")
    return Principal(operator=False, device_id=device.device_id)


Operator = Annotated[Principal, Depends(require_operator)]
DeviceAuth = Annotated[Principal, Depends(require_device_or_operator)]
