"""Request dependencies: settings, runtime, DB session and bearer auth.

Operator tokens are the bootstrap token (settings or ``<data_dir>/operator_token``, role admin)
and API tokens from ``/api/v1/tokens`` with a role; ``Viewer`` < ``Operator`` < ``Admin``. A
missing, unknown or revoked token is 401; a valid one with too small a role is 403. Devices use
their own token (``DeviceAuth``). Every dependency names the caller in the request's audit entry.
Every presented token is checked through :func:`fleet_server.api.guard.guarded`: an address that
has presented too many wrong ones is refused with 429 for a few seconds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlmodel import Session

from fleet_server.api.guard import guarded
from fleet_server.models import Role
from fleet_server.runtime import Runtime
from fleet_server.services.audit import AuditEntry
from fleet_server.services.auth import tokens_equal
from fleet_server.services.devices import device_for_token
from fleet_server.services.errors import Forbidden, Unauthorized, Unavailable
from fleet_server.services.tokens import token_for_secret
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

_bearer = HTTPBearer(auto_error=False, description="Operator API token or device token.")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]

#: Where the audit middleware keeps this request's :class:`AuditEntry` in the ASGI scope.
AUDIT_SCOPE_KEY = "edgefleet.audit"
BOOTSTRAP_ACTOR = "bootstrap"


@dataclass(frozen=True)
class Principal:
    """Who is calling: a person's token (bootstrap or API token, with its role), or one device."""

    operator: bool
    device_id: str | None = None
    role: Role | None = None
    actor: str = "anonymous"


def audit_entry(request: Request) -> AuditEntry | None:
    """This request's audit entry (None for requests the audit log does not record)."""
    entry = request.scope.get(AUDIT_SCOPE_KEY)
    return entry if isinstance(entry, AuditEntry) else None


def note_target(request: Request, target: str, **detail: Any) -> None:
    """Name what a mutating call acted on (and a little detail, never secrets) for the audit."""
    entry = audit_entry(request)
    if entry is not None:
        entry.target = target
        entry.detail.update(detail)


def note_actor(request: Request, actor: str) -> None:
    """Name the caller of a route without operator auth (e.g. ``POST /enroll``) for the audit."""
    entry = audit_entry(request)
    if entry is not None:
        entry.actor = actor


def _identify(request: Request, principal: Principal) -> Principal:
    entry = audit_entry(request)
    if entry is not None:
        entry.actor = principal.actor
        entry.role = principal.role.value if principal.role is not None else None
    return principal


def _token(request: Request, credentials: HTTPAuthorizationCredentials | None) -> str:
    if credentials is None or not credentials.credentials:
        raise Unauthorized("missing bearer token")
    entry = audit_entry(request)
    if entry is not None:
        entry.actor = "unknown-token"
    return credentials.credentials


def _person(token: str, runtime: Runtime, session: Session) -> Principal | None:
    if runtime.operator_token and tokens_equal(token, runtime.operator_token):
        return Principal(operator=True, role=Role.ADMIN, actor=BOOTSTRAP_ACTOR)
    row = token_for_secret(session=session, token=token)
    if row is None:
        return None
    return Principal(operator=True, role=Role(row.role), actor=row.name)


def _require(needed: Role) -> Callable[..., Principal]:
    def dependency(
        request: Request, credentials: Credentials, runtime: RuntimeDep, session: SessionDep
    ) -> Principal:
        token = _token(request, credentials)

        def check() -> Principal:
            person = _person(token, runtime, session)
            if person is None:
                raise Unauthorized("invalid or revoked operator token")
            return person

        principal = guarded(request, runtime, kind="operator", secret=token, check=check)
        _identify(request, principal)
        assert principal.role is not None
        if not principal.role.allows(needed):
            raise Forbidden(
                f"this needs the {needed.value} role; token {principal.actor!r} has "
                f"{principal.role.value}"
            )
        return principal

    dependency.__name__ = f"require_{needed.value}"
    return dependency


require_viewer = _require(Role.VIEWER)
require_operator = _require(Role.OPERATOR)
require_admin = _require(Role.ADMIN)


def require_device_or_operator(
    request: Request, credentials: Credentials, runtime: RuntimeDep, session: SessionDep
) -> Principal:
    """Any operator token (viewer and up) or a device's own token. The device is looked up
    first: devices make nearly all of these calls (10,000 bundle downloads per fleet update),
    and each then costs one query, not a miss on the API tokens first."""
    token = _token(request, credentials)

    def check() -> Principal:
        device = device_for_token(session=session, token=token)
        if device is not None:
            return Principal(
                operator=False, device_id=device.device_id, actor=f"device:{device.device_id}"
            )
        person = _person(token, runtime, session)
        if person is None:
            raise Unauthorized("invalid token")
        return person

    return _identify(request, guarded(request, runtime, kind="device", secret=token, check=check))


#: What each caller dependency refuses with, for a route's ``responses=error_responses(...)``:
#: 401 no valid token, 403 a role too small, 429 too many failed authentications from this
#: client (``Retry-After``), 503 the database or runtime not ready. A viewer route cannot 403.
VIEWER_REFUSALS = (401, 429, 503)
OPERATOR_REFUSALS = (401, 403, 429, 503)
ADMIN_REFUSALS = OPERATOR_REFUSALS
DEVICE_REFUSALS = (401, 429, 503)

Viewer = Annotated[Principal, Depends(require_viewer)]
Operator = Annotated[Principal, Depends(require_operator)]
Admin = Annotated[Principal, Depends(require_admin)]
DeviceAuth = Annotated[Principal, Depends(require_device_or_operator)]
