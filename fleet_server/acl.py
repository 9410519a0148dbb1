"""``edgefleet server acl``: Mosquitto files from the database (see services/mosquitto.py), or
with ``--dynsec`` the dynamic-security plugin's initial file and config lines
(services/broker_credentials/dynsec_config.py)."""

from __future__ import annotations

from pathlib import Path

from sqlmodel import Session

from fleet_server.db import DatabaseError, make_engine, migrate
from fleet_server.services.broker_credentials import CredentialsError
from fleet_server.services.broker_credentials.dynsec_config import (
    DYNSEC_FILE,
    dynsec_conf_lines,
    initial_json,
)
from fleet_server.services.devices import mqtt_password_hashes
from fleet_server.services.mosquitto import (
    CONF_FILE,
    PERSISTENCE_LOCATION,
    SERVER_HOST,
    SERVER_PORT,
    MosquittoError,
    MosquittoFiles,
    write_file,
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


def export_dynsec(
    *,
    settings: ServerSettings,
    out: Path,
    port: int = 1883,
    host: str = "0.0.0.0",  # noqa: S104 - the sample listener; the operator edits it
    server_port: int = SERVER_PORT,
    server_host: str = SERVER_HOST,
    persistence_location: Path = PERSISTENCE_LOCATION,
) -> tuple[Path, str, int]:
    """Write ``<out>/dynamic-security.json`` (the plugin's initial file: the server as its
    admin, every registered device with its role) and ``<out>/mosquitto.conf``; return the JSON
    file, the conf lines and how many devices it holds. Once the broker runs, the server keeps
    the plugin up to date itself: run this once, not after every change."""
    if port == server_port:
        raise AclError(
            f"the devices' and the server's listeners need different ports (both {port})"
        )
    try:
        credential = resolve_server_credential(settings=settings)
        engine = make_engine(settings.resolved_database_url)
    except (OSError, ValueError, DatabaseError) as err:
        raise AclError(str(err)) from err
    try:
        migrate(engine)
        with Session(engine) as session:
            devices = mqtt_password_hashes(session=session)
        text = initial_json(server=(credential.username, credential.password), devices=devices)
        out.mkdir(parents=True, exist_ok=True)
        path = out / DYNSEC_FILE
        conf = dynsec_conf_lines(
            config_file=path.resolve(),
            port=port,
            host=host,
            server_port=server_port,
            server_host=server_host,
            persistence_location=persistence_location,
        )
        write_file(path, text, mode=0o640)
        write_file(out / CONF_FILE, conf, mode=0o644)
        return path, conf, sum(1 for _id, hashed in devices if hashed is not None)
    except (OSError, DatabaseError, MosquittoError, CredentialsError) as err:
        raise AclError(str(err)) from err
    finally:
        engine.dispose()
