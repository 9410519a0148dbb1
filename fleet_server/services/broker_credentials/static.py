"""The static files (``edgefleet server acl``): the database is the truth, so a change needs no
call here; an external Mosquitto with static files learns at the next ``edgefleet server acl``
and SIGHUP. (The embedded broker has its own: :mod:`.embedded`.)"""

from __future__ import annotations

from fleet_server.services.broker_credentials.base import Applied, SyncReport


class StaticFileCredentials:
    kind = "static"

    def add(self, *, device_id: str, token: str) -> Applied:
        return Applied.ON_EXPORT

    def rotate(self, *, device_id: str, token: str) -> Applied:
        return Applied.ON_EXPORT

    def remove(self, *, device_id: str) -> Applied:
        return Applied.ON_EXPORT

    def disable(self, *, device_id: str) -> Applied:
        return Applied.ON_EXPORT

    def sync(self, *, live: set[str], decommissioned: set[str]) -> SyncReport:
        """Nothing to bring in line: the files and the embedded broker read the database."""
        return SyncReport()

    def close(self) -> None:
        """Nothing held."""
