"""Bundles in an S3-compatible bucket, through boto3 (the ``s3`` extra; imported only when a
configuration picks ``kind = "s3"``).

Uploads stream from the finished temp file: one PUT below the multipart threshold, else a
multipart upload in parts of that size (aborted on any failure). Both are conditional
(``If-None-Match: *``) so a bundle is never overwritten. Downloads are ranged GETs streamed in
chunks, so the server stays in the path (devices authenticate to it) and Range works.
Every boto error becomes a one-line StoreError naming the operation, key and S3 error code;
credentials never appear in messages or logs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from fleet_server.storage import CHUNK, MissingBundle, StoreError, check_key
from fleet_server.storage.config import S3StoreConfig

log = logging.getLogger(__name__)

_MISSING = {"404", "NoSuchKey", "NotFound"}
_EXISTS = {"412", "PreconditionFailed", "ConditionalRequestConflict"}
_HINTS = {
    "InvalidAccessKeyId": "the server does not know this access key id",
    "SignatureDoesNotMatch": "the secret access key is wrong",
    "InvalidClientTokenId": "the server does not know this access key id",
    "AccessDenied": "these credentials may not use the bucket",
    "403": "a wrong access key id or secret, or no permission on the bucket",
    "NoSuchBucket": "the bucket does not exist",
}


class S3ArtifactStore:
    def __init__(self, config: S3StoreConfig) -> None:
        self.bucket = config.bucket
        self.prefix = config.prefix
        self.part_bytes = config.multipart_threshold_bytes
        where = config.endpoint_url or "AWS S3"
        self._where = f"S3 bucket {self.bucket!r} at {where}"
        credentials: dict[str, str] = {}
        if config.access_key_id is not None and config.secret_access_key is not None:
            credentials = {
                "aws_access_key_id": config.access_key_id.get_secret_value(),
                "aws_secret_access_key": config.secret_access_key.get_secret_value(),
            }
        client_config = Config(
            s3={"addressing_style": config.addressing_style},
            connect_timeout=config.timeout_s,
            read_timeout=config.timeout_s,
            retries={"max_attempts": 3, "mode": "standard"},
        )
        try:
            self._client: Any = boto3.session.Session().client(
                "s3",
                endpoint_url=config.endpoint_url,
                region_name=config.region,
                config=client_config,
                **credentials,
            )
        except (BotoCoreError, ValueError) as err:
            raise StoreError(
                f"cannot set up the S3 client for {self._where}: {_one_line(err)}"
            ) from err

    def _name(self, key: str) -> str:
        return self.prefix + check_key(key)

    def _error(self, action: str, key: str, err: Exception) -> StoreError:
        if isinstance(err, ClientError):
            code = str(err.response.get("Error", {}).get("Code", "unknown"))
            hint = _HINTS.get(code)
            what = f"{code} ({hint})" if hint else code
            if code in _MISSING:
                return MissingBundle(f"{key} is not in the store")
        else:
            what = _one_line(err)
        return StoreError(f"cannot {action} {key} in {self._where}: {what}")

    def check(self) -> None:
        """Fail at start-up, with the reason, if the bucket cannot be reached."""
        try:
            # Needs the same permission as HeadBucket (s3:ListBucket) but, unlike a HEAD,
            # the answer carries an error code (InvalidAccessKeyId, NoSuchBucket, ...).
            self._client.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix, MaxKeys=1)
        except ClientError as err:
            code = str(err.response.get("Error", {}).get("Code", "unknown"))
            hint = _HINTS.get(code) or ("the bucket does not exist" if code == "404" else None)
            what = f"{code} ({hint})" if hint else code
            raise StoreError(f"cannot use {self._where}: {what}") from err
        except BotoCoreError as err:
            raise StoreError(f"cannot use {self._where}: {_one_line(err)}") from err

    def put(self, key: str, source: Path) -> None:
        name = self._name(key)
        if self.exists(key):
            raise StoreError(f"{key} already exists in the store")
        try:
            size = source.stat().st_size
            with source.open("rb") as body:
                if size < self.part_bytes:
                    self._client.put_object(
                        Bucket=self.bucket,
                        Key=name,
                        Body=body,
                        ContentLength=size,
                        ContentType="application/gzip",
                        IfNoneMatch="*",
                    )
                else:
                    self._multipart(name, body)
        except ClientError as err:
            code = str(err.response.get("Error", {}).get("Code", ""))
            if code in _EXISTS:
                raise StoreError(f"{key} already exists in the store") from err
            raise self._error("store", key, err) from err
        except BotoCoreError as err:
            raise self._error("store", key, err) from err
        except OSError as err:
            raise StoreError(f"cannot store {key}: {err.strerror or err}") from err
        source.unlink(missing_ok=True)

    def _multipart(self, name: str, body: BinaryIO) -> None:
        upload = self._client.create_multipart_upload(
            Bucket=self.bucket, Key=name, ContentType="application/gzip"
        )["UploadId"]
        try:
            parts: list[dict[str, Any]] = []
            while data := body.read(self.part_bytes):
                number = len(parts) + 1
                sent = self._client.upload_part(
                    Bucket=self.bucket, Key=name, UploadId=upload, PartNumber=number, Body=data
                )
                parts.append({"ETag": sent["ETag"], "PartNumber": number})
            self._client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=name,
                UploadId=upload,
                MultipartUpload={"Parts": parts},
                IfNoneMatch="*",
            )
        except BaseException:
            try:
                self._client.abort_multipart_upload(Bucket=self.bucket, Key=name, UploadId=upload)
            except (BotoCoreError, ClientError) as err:
                log.warning(
                    "could not abort a failed multipart upload",
                    extra={"key": name, "error": _one_line(err)},
                )
            raise

    def _head(self, key: str) -> dict[str, Any] | None:
        try:
            head: dict[str, Any] = self._client.head_object(Bucket=self.bucket, Key=self._name(key))
        except (BotoCoreError, ClientError) as err:
            error = self._error("look up", key, err)
            if isinstance(error, MissingBundle):
                return None
            raise error from err
        return head

    def exists(self, key: str) -> bool:
        return self._head(key) is not None

    def size(self, key: str) -> int:
        head = self._head(key)
        if head is None:
            raise MissingBundle(f"{key} is not in the store")
        return int(head["ContentLength"])

    def read(self, key: str, start: int, end: int) -> Iterator[bytes]:
        name = self._name(key)
        if end <= start:
            return iter(())
        try:
            got = self._client.get_object(
                Bucket=self.bucket, Key=name, Range=f"bytes={start}-{end - 1}"
            )
        except (BotoCoreError, ClientError) as err:
            raise self._error("read", key, err) from err
        if int(got["ContentLength"]) != end - start:
            got["Body"].close()
            raise StoreError(
                f"cannot read {key} in {self._where}: asked for {end - start} bytes, "
                f"got {got['ContentLength']}"
            )
        return self._chunks(key, got["Body"])

    def _chunks(self, key: str, body: Any) -> Iterator[bytes]:
        try:
            yield from body.iter_chunks(CHUNK)
        except (BotoCoreError, ClientError, OSError) as err:
            raise StoreError(
                f"reading {key} from {self._where} broke off: {_one_line(err)}"
            ) from err
        finally:
            body.close()

    def delete(self, key: str) -> None:
        try:
            self._client.delete_object(Bucket=self.bucket, Key=self._name(key))
        except (BotoCoreError, ClientError) as err:
            raise self._error("delete", key, err) from err


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text[:200]
