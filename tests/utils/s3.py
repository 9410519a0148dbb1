"""A real S3-compatible server for tests: moto's server on a free loopback port, in-process.

Tests talk to it over HTTP through boto3, exactly as the fleet server talks to MinIO or AWS.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from tests.utils.net import free_port, wait_for_port

#: moto accepts any credentials unless IAM authentication is switched on.
ACCESS_KEY_ID = "edgefleet-test-key"
SECRET_ACCESS_KEY = "edgefleet-test-secret-0123456789"  # noqa: S105 - test-only
REGION = "us-east-1"


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str

    def client(self, **credentials: str) -> Any:
        import boto3

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=credentials.get("key_id", ACCESS_KEY_ID),
            aws_secret_access_key=credentials.get("secret", SECRET_ACCESS_KEY),
        )

    def new_bucket(self) -> str:
        name = f"edgefleet-test-{secrets.token_hex(4)}"
        self.client().create_bucket(Bucket=name)
        return name

    def store_config(self, bucket: str, **overrides: Any) -> dict[str, Any]:
        """The ``artifact_store`` settings value for ``bucket`` on this server."""
        values: dict[str, Any] = {
            "kind": "s3",
            "bucket": bucket,
            "endpoint_url": self.endpoint_url,
            "region": REGION,
            "access_key_id": ACCESS_KEY_ID,
            "secret_access_key": SECRET_ACCESS_KEY,
            "addressing_style": "path",
            "timeout_s": 5.0,
        }
        values.update(overrides)
        return values


@contextmanager
def moto_s3_server() -> Iterator[S3Server]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        wait_for_port("127.0.0.1", port)
        yield S3Server(endpoint_url=f"http://127.0.0.1:{port}")
    finally:
        server.stop()
