"""``edgefleet server acl``: Mosquitto files from the database (see services/mosquitto.py)."""

from __future__ import annotations

from pathlib import Path

from sqlmodel import Session

from fleet_server.db import DatabaseError, make_engine, migrate
from fleet_server.services.devices import mqtt_password_hashes
from fleet_server.services.mosquitto import (
    PERSISTENCE_LOCATION,
    SERVER_HOST,
    SERVER_PORT,
    MosquittoError,
    MosquittoFiles,
    write_mosquitto_files,
)
from fleet_server.services.mqtt_auth import resolve_server_credential
from fleet_server.settings import ServerSettings


class AclError(Exception):
    """The files could not be generated (one line)."""


def export_mosquitto(
    *,
    settings: ServerSettings,
    out: Path,
    port: int = 1883,
    host: str = "0.0.0.0",  # noqa: S104 - the sample listener; the operator edits it
    server_port: int = SERVER_PORT,
    server_host: str = SERVER_HOST,
    persistence_location: Path = PERSISTENCE_LOCATION,
) -> MosquittoFiles:
    """Write password_file, server_password_file, acl_file and mosquitto.conf for the server's
    database into ``out``.

    The server's credential is the one the server itself connects with (``mqtt_username`` and
    ``mqtt_password`` or ``<data_dir>/mqtt_password``, generated here if missing).
    """
    try:
        credential = resolve_server_credential(settings=settings)
        engine = make_engine(settings.resolved_database_url)
    except (OSError, ValueError, DatabaseError) as err:
        raise AclError(str(err)) from err
    try:
        migrate(engine)
        with Session(engine) as session:
            devices = mqtt_password_hashes(session=session)
        return write_mosquitto_files(
            out,
            server=(credential.username, credential.password),
            devices=devices,
            port=port,
            host=host,
            server_port=server_port,
            server_host=server_host,
            persistence_location=persistence_location,
        )
    except (OSError, DatabaseError, MosquittoError) as err:
        raise AclError(str(err)) from err
    finally:
        engine.dispose()
