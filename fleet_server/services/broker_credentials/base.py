"""The boundary between device lifecycles and the broker's idea of who may log in.

Enrolment, token rotation, decommissioning and revocation go through one
:class:`BrokerCredentials` chosen at start (:mod:`.registry`): the static files (the default:
the database is the truth and ``edgefleet server acl`` writes it out; the broker learns on
reload), Mosquitto's dynamic-security plugin (the broker learns at once) or the embedded broker
(reads the database at CONNECT; closes a removed or rotated device's connection at once).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


class CredentialsError(Exception):
    """The broker did not take a credential change (one line, says which and why)."""


class Applied(StrEnum):
    """When a credential change reaches the broker."""

    NOW = "now"
    #: At the next ``edgefleet server acl`` and broker reload (static files), or at the next
    #: CONNECT (an enrolment on the embedded broker, which asks the database on every one).
    ON_EXPORT = "on_export"


@dataclass(frozen=True)
class SyncReport:
    """What :meth:`BrokerCredentials.sync` did and could not do."""

    removed: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()


class BrokerCredentials(Protocol):
    """Who may log in to the broker as a device. Implementations raise :class:`CredentialsError`
    (never a library exception); every method is idempotent so a failed call can be retried."""

    kind: str

    def add(self, *, device_id: str, token: str) -> Applied:
        """Let ``device_id`` log in with ``token``, confined to its own topics."""
        ...

    def rotate(self, *, device_id: str, token: str) -> Applied:
        """Replace the device's password; connections with the old one are closed."""
        ...

    def remove(self, *, device_id: str) -> Applied:
        """Forget the device; its connection is closed and it cannot log in again."""
        ...

    def disable(self, *, device_id: str) -> Applied:
        """Refuse the device's logins (and close its connection) but keep its entry."""
        ...

    def sync(self, *, live: set[str], decommissioned: set[str]) -> SyncReport:
        """Bring the broker in line with the database at start: remove decommissioned devices
        it still admits (a DELETE whose broker call failed and was never repeated) and report
        live devices it lacks (their token is stored hashed only: rotate it to add them)."""
        ...

    def close(self) -> None: ...
