"""A small typed client for the fleet server's HTTP API v1 (httpx).

Every method returns the parsed JSON and raises :class:`FleetClientError` (HTTP status and the
server's one-line ``detail``) or :class:`FleetUnreachableError` (no answer from that URL).
Responses are treated as untrusted: bounded in size, checked to be JSON of the expected shape.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from edgefleet.artifact import ArtifactError, pack_bundle

#: Larger responses are cut off: nothing in the API is legitimately this big.
MAX_RESPONSE_BYTES = 32 * 1024 * 1024
#: Longest ``detail`` kept from an error response (it is printed on one line).
MAX_DETAIL_CHARS = 300

JsonObject = dict[str, Any]


class FleetClientError(Exception):
    """The server answered with an error, or the request could not be made (``status`` 0)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status}: {detail}" if status else detail)
        self.status = status
        self.detail = detail


class FleetUnreachableError(FleetClientError):
    """No HTTP answer at all: bad URL, connection refused, DNS failure, timeout."""

    def __init__(self, detail: str) -> None:
        super().__init__(0, detail)


def one_line(text: str, limit: int = MAX_DETAIL_CHARS) -> str:
    """Collapse whitespace and control characters so a message stays one printable line."""
    cleaned = "".join(ch if ch.isprintable() else " " for ch in text)
    flat = " ".join(cleaned.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class FleetClient:
    """``FleetClient(base_url, token)``: one method per endpoint of the v1 API."""

    def __init__(
        self,
        base_url: str,
        token: str | None,
        *,
        timeout: float = 10.0,
        upload_timeout: float = 300.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = _check_base_url(base_url)
        # The server hashes and verifies a bundle before it answers: give uploads longer.
        self._upload_timeout = httpx.Timeout(timeout, read=max(timeout, upload_timeout))
        headers = {"Accept": "application/json", "User-Agent": "edgefleet-cli"}
        if token:
            if not token.isascii() or not token.isprintable() or " " in token:
                raise FleetClientError(0, "the token must be printable ASCII without spaces")
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=timeout,
            transport=transport,
            follow_redirects=False,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> FleetClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- endpoints -------------------------------------------------------------------------

    def health(self) -> JsonObject:
        return _object(self._request("GET", "/healthz"))

    def list_devices(self, *, decommissioned: bool = False) -> list[JsonObject]:
        params = {"decommissioned": "true"} if decommissioned else None
        return _objects(self._request("GET", "/api/v1/devices", params=params))

    def remove_device(self, device_id: str) -> JsonObject:
        return _object(self._request("DELETE", f"/api/v1/devices/{_segment(device_id)}"))

    def get_device(self, device_id: str) -> JsonObject:
        return _object(self._request("GET", f"/api/v1/devices/{_segment(device_id)}"))

    def add_device(
        self, device_id: str, *, device_class: str | None = None, tags: Iterable[str] = ()
    ) -> JsonObject:
        body = {"device_id": device_id, "device_class": device_class, "tags": list(tags)}
        return _object(self._request("POST", "/api/v1/devices", json_body=body))

    def tag_device(
        self, device_id: str, *, add: Iterable[str] = (), remove: Iterable[str] = ()
    ) -> JsonObject:
        path = f"/api/v1/devices/{_segment(device_id)}/tags"
        body = {"add": list(add), "remove": list(remove)}
        return _object(self._request("PATCH", path, json_body=body))

    def pin_device(self, device_id: str, name: str, version: str) -> JsonObject:
        path = f"/api/v1/devices/{_segment(device_id)}/pin"
        body = {"model": name, "version": version}
        return _object(self._request("PUT", path, json_body=body))

    def unpin_device(self, device_id: str) -> JsonObject:
        return _object(self._request("DELETE", f"/api/v1/devices/{_segment(device_id)}/pin"))

    def device_telemetry(self, device_id: str, *, limit: int = 100) -> list[JsonObject]:
        path = f"/api/v1/devices/{_segment(device_id)}/telemetry"
        return _objects(self._request("GET", path, params={"limit": limit}))

    def list_models(self) -> list[JsonObject]:
        return _objects(self._request("GET", "/api/v1/models"))

    def get_model(self, name: str, version: str) -> JsonObject:
        path = f"/api/v1/models/{_segment(name)}/{_segment(version)}"
        return _object(self._request("GET", path))

    def model_lineage(self, name: str, version: str) -> JsonObject:
        path = f"/api/v1/models/{_segment(name)}/{_segment(version)}/lineage"
        return _object(self._request("GET", path))

    def push_model(self, path: Path, *, lineage: dict[str, str] | None = None) -> JsonObject:
        """Upload a bundle file, or pack an artifact directory into one first. ``lineage``:
        optional ``parent``, ``dataset_sha256``, ``training_ref`` (sent as query parameters)."""
        path = Path(path)
        if path.is_dir():
            with tempfile.TemporaryDirectory(prefix="edgefleet-push-") as tmp:
                bundle = Path(tmp) / f"{path.name or 'artifact'}.tar.gz"
                try:
                    pack_bundle(path, bundle)
                except (ArtifactError, OSError) as err:
                    raise FleetClientError(0, f"cannot pack {path}: {one_line(str(err))}") from err
                return self.push_bundle(bundle, lineage=lineage)
        return self.push_bundle(path, lineage=lineage)

    def push_bundle(self, bundle: Path, *, lineage: dict[str, str] | None = None) -> JsonObject:
        if not bundle.is_file():
            raise FleetClientError(0, f"{bundle} is not a bundle file or an artifact directory")
        try:
            with bundle.open("rb") as fh:
                files = {"bundle": (bundle.name, fh, "application/gzip")}
                return _object(
                    self._request(
                        "POST",
                        "/api/v1/models",
                        files=files,
                        params=lineage or None,
                        timeout=self._upload_timeout,
                    )
                )
        except OSError as err:
            raise FleetClientError(0, f"cannot read {bundle}: {err.strerror or err}") from err

    def assign(
        self,
        name: str,
        version: str,
        *,
        device_ids: Iterable[str] = (),
        tag: str | None = None,
    ) -> JsonObject:
        body = {"model": name, "version": version, "device_ids": list(device_ids), "tag": tag}
        return _object(self._request("POST", "/api/v1/assignments", json_body=body))

    def ingest_stats(self) -> JsonObject:
        return _object(self._request("GET", "/api/v1/ingest/stats"))

    # -- rollouts ------------------------------------------------------------------------------
    def create_rollout(self, spec: JsonObject) -> JsonObject:
        return _object(self._request("POST", "/api/v1/rollouts", json_body=spec))

    def list_rollouts(self, *, state: str | None = None, limit: int = 50) -> list[JsonObject]:
        params: dict[str, Any] = {"limit": limit}
        if state is not None:
            params["state"] = state
        return _objects(self._request("GET", "/api/v1/rollouts", params=params))

    def get_rollout(self, rollout_id: int) -> JsonObject:
        return _object(self._request("GET", f"/api/v1/rollouts/{int(rollout_id)}"))

    def rollout_report(self, rollout_id: int) -> JsonObject:
        return _object(self._request("GET", f"/api/v1/rollouts/{int(rollout_id)}/report"))

    def rollout_action(self, rollout_id: int, action: str, *, reason: str = "") -> JsonObject:
        if action not in ("pause", "resume", "approve", "abort"):
            raise ValueError(f"unknown rollout action {action!r}")
        path = f"/api/v1/rollouts/{int(rollout_id)}/{action}"
        return _object(self._request("POST", path, json_body={"reason": reason}))

    def create_token(self, name: str, role: str, *, expires_in_s: int | None = None) -> JsonObject:
        body: JsonObject = {"name": name, "role": role}
        if expires_in_s is not None:
            body["expires_in_s"] = expires_in_s
        return _object(self._request("POST", "/api/v1/tokens", json_body=body))

    def rotate_token(self, token_id: int, *, expires_in_s: int | None = None) -> JsonObject:
        body: JsonObject = {} if expires_in_s is None else {"expires_in_s": expires_in_s}
        path = f"/api/v1/tokens/{int(token_id)}/rotate"
        return _object(self._request("POST", path, json_body=body))

    def list_tokens(self) -> list[JsonObject]:
        return _objects(self._request("GET", "/api/v1/tokens"))

    def revoke_token(self, token_id: int) -> JsonObject:
        return _object(self._request("DELETE", f"/api/v1/tokens/{int(token_id)}"))

    def create_enrollment_token(
        self,
        *,
        expires_in_s: int,
        uses: int = 1,
        device_class: str | None = None,
        tags: Iterable[str] = (),
    ) -> JsonObject:
        body = {
            "expires_in_s": expires_in_s,
            "uses": uses,
            "device_class": device_class,
            "tags": list(tags),
        }
        return _object(self._request("POST", "/api/v1/enrollment-tokens", json_body=body))

    def list_enrollment_tokens(self, *, active: bool = False) -> list[JsonObject]:
        params = {"active": "true" if active else "false"}
        return _objects(self._request("GET", "/api/v1/enrollment-tokens", params=params))

    def revoke_enrollment_token(self, token_id: int) -> JsonObject:
        return _object(self._request("DELETE", f"/api/v1/enrollment-tokens/{int(token_id)}"))

    def drift(self, *, limit: int = 100) -> JsonObject:
        return _object(self._request("GET", "/api/v1/drift", params={"limit": limit}))

    def quality(self, name: str, version: str) -> JsonObject:
        path = f"/api/v1/models/{_segment(name)}/{_segment(version)}/quality"
        return _object(self._request("GET", path))

    def audit(
        self, *, actor: str | None = None, since: str | None = None, limit: int = 100
    ) -> list[JsonObject]:
        params: dict[str, Any] = {"limit": limit}
        if actor is not None:
            params["actor"] = actor
        if since is not None:
            params["since"] = since
        return _objects(self._request("GET", "/api/v1/audit", params=params))

    # -- retraining pipeline runs ----------------------------------------------------------

    def pipeline_runs(
        self, *, model: str | None = None, state: str | None = None, limit: int = 100
    ) -> list[JsonObject]:
        params: dict[str, Any] = {"limit": limit}
        if model is not None:
            params["model"] = model
        if state is not None:
            params["state"] = state
        return _objects(self._request("GET", "/api/v1/pipelines/runs", params=params))

    def pipeline_run(self, run_id: int) -> JsonObject:
        return _object(self._request("GET", f"/api/v1/pipelines/runs/{int(run_id)}"))

    def start_pipeline_run(self, model: str, *, reason: str = "") -> JsonObject:
        body = {"model": model, "reason": reason}
        return _object(self._request("POST", "/api/v1/pipelines/runs", json_body=body))

    def cancel_pipeline_run(self, run_id: int, *, reason: str = "") -> JsonObject:
        path = f"/api/v1/pipelines/runs/{int(run_id)}/cancel"
        return _object(self._request("POST", path, json_body={"reason": reason}))

    # -- capture policies and samples ------------------------------------------------------

    def capture_path(self, name: str, version: str | None) -> str:
        tail = f"/{_segment(version)}" if version else ""
        return f"/api/v1/models/{_segment(name)}{tail}/capture"

    def set_capture(self, name: str, version: str | None, policy: JsonObject) -> JsonObject:
        return _object(self._request("PUT", self.capture_path(name, version), json_body=policy))

    def get_capture(self, name: str, version: str | None) -> JsonObject:
        return _object(self._request("GET", self.capture_path(name, version)))

    def list_samples(self, **params: Any) -> JsonObject:
        query = {k: v for k, v in params.items() if v is not None}
        return _object(self._request("GET", "/api/v1/samples", params=query))

    def get_sample(self, sample_id: int) -> JsonObject:
        return _object(self._request("GET", f"/api/v1/samples/{int(sample_id)}"))

    def label_sample(self, sample_id: int, body: JsonObject) -> JsonObject:
        path = f"/api/v1/samples/{int(sample_id)}/label"
        return _object(self._request("PUT", path, json_body=body))

    def label_samples(self, labels: list[JsonObject]) -> JsonObject:
        body = {"labels": labels}
        return _object(self._request("POST", "/api/v1/samples/labels", json_body=body))

    def snapshot(self, model: str, **params: Any) -> JsonObject:
        query = {k: v for k, v in params.items() if v is not None}
        path = f"/api/v1/datasets/{_segment(model)}/snapshot"
        return _object(self._request("GET", path, params=query))

    # -- comparisons ---------------------------------------------------------------------------

    def post_comparison(self, name: str, version: str, result: JsonObject) -> JsonObject:
        path = f"/api/v1/models/{_segment(name)}/{_segment(version)}/compare"
        return _object(self._request("POST", path, json_body=result))

    def comparisons(self, name: str, version: str) -> JsonObject:
        path = f"/api/v1/models/{_segment(name)}/{_segment(version)}/compare"
        return _object(self._request("GET", path))

    def download_bundle(self, name: str, version: str, dest: Path) -> int:
        """Stream a version's bundle into ``dest`` (an operator may download any); the bytes."""
        path = f"/api/v1/models/{_segment(name)}/{_segment(version)}/bundle"
        return self._download(path, dest, timeout=self._upload_timeout)

    def sample_content(self, sample_id: int, dest: Path) -> int:
        """Stream the sample's content into ``dest``; the bytes written."""
        return self._download(f"/api/v1/samples/{int(sample_id)}/content", dest)

    def _download(self, path: str, dest: Path, *, timeout: httpx.Timeout | None = None) -> int:
        try:
            with self._http.stream(
                "GET", path, timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT
            ) as response:
                if response.status_code >= 400:
                    raw = _read_bounded(response, self.base_url)
                    _decode(response, raw)
                written = 0
                with dest.open("wb") as out:
                    for chunk in response.iter_bytes():
                        out.write(chunk)
                        written += len(chunk)
                return written
        except httpx.TimeoutException as err:
            raise FleetUnreachableError(f"no answer from {self.base_url} (timed out)") from err
        except httpx.TransportError as err:
            raise FleetUnreachableError(
                f"cannot reach the fleet server at {self.base_url}: {one_line(str(err), 120)}"
            ) from err
        except OSError as err:
            raise FleetClientError(0, f"cannot write {dest}: {err.strerror or err}") from err

    # -- plumbing --------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        json_body: JsonObject | None = None,
        params: dict[str, Any] | None = None,
        files: dict[str, Any] | None = None,
        timeout: httpx.Timeout | None = None,
    ) -> Any:
        try:
            request = self._http.build_request(
                method,
                path,
                json=json_body,
                params=params,
                files=files,
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
            response = self._http.send(request, stream=True)
        except httpx.TimeoutException as err:
            raise FleetUnreachableError(f"no answer from {self.base_url} (timed out)") from err
        except httpx.TransportError as err:
            raise FleetUnreachableError(
                f"cannot reach the fleet server at {self.base_url}: {one_line(str(err), 120)}"
            ) from err
        try:
            raw = _read_bounded(response, self.base_url)
        finally:
            response.close()
        return _decode(response, raw)


def _check_base_url(url: str) -> str:
    try:
        parts = urlsplit(url.strip())
    except ValueError as err:
        raise FleetUnreachableError(f"invalid server URL {one_line(url, 80)!r}: {err}") from err
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FleetUnreachableError(
            f"invalid server URL {one_line(url, 80)!r}: expected http(s)://host[:port]"
        )
    try:
        _ = parts.port
    except ValueError as err:
        raise FleetUnreachableError(f"invalid port in server URL {one_line(url, 80)!r}") from err
    if parts.query or parts.fragment or parts.username or parts.password:
        raise FleetUnreachableError(
            "the server URL must not hold credentials, a query or a fragment: pass --token"
        )
    return url.strip().rstrip("/")


def _segment(value: str) -> str:
    """One path segment, never a path: '../x' or 'a/b' cannot reach another endpoint."""
    if not value or value in (".", ".."):
        raise FleetClientError(0, f"invalid identifier {value!r}")
    return quote(value, safe="")


def _read_bounded(response: httpx.Response, base_url: str) -> bytes:
    chunks: list[bytes] = []
    total = 0
    try:
        for chunk in response.iter_bytes():
            total += len(chunk)
            if total > MAX_RESPONSE_BYTES:
                raise FleetClientError(
                    response.status_code,
                    f"response larger than {MAX_RESPONSE_BYTES // (1024 * 1024)} MiB; refused",
                )
            chunks.append(chunk)
    except httpx.TimeoutException as err:
        raise FleetUnreachableError(f"{base_url} stopped answering (timed out)") from err
    except httpx.HTTPError as err:
        raise FleetUnreachableError(
            f"{base_url} broke off the response: {one_line(str(err), 120)}"
        ) from err
    return b"".join(chunks)


def _decode(response: httpx.Response, raw: bytes) -> Any:
    status = response.status_code
    try:
        data = json.loads(raw) if raw else None
    except (ValueError, RecursionError):
        data = _NOT_JSON
    if status >= 400:
        raise FleetClientError(status, _detail(data, response.reason_phrase))
    if data is _NOT_JSON or data is None:
        kind = response.headers.get("content-type", "no content type")
        raise FleetClientError(status, f"expected JSON from the server, got {one_line(kind, 60)}")
    return data


_NOT_JSON = object()


def _detail(data: object, reason: str) -> str:
    if isinstance(data, dict):
        detail = data.get("detail")
        if isinstance(detail, str) and detail.strip():
            return one_line(detail)
        if isinstance(detail, list) and detail and isinstance(detail[0], dict):
            first = detail[0]
            loc = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
            return one_line(f"{loc}: {first.get('msg', 'invalid')}" if loc else str(first))
    return one_line(reason or "error") or "error"


def _object(data: Any) -> JsonObject:
    if not isinstance(data, dict):
        raise FleetClientError(0, f"expected a JSON object from the server, got {_kind(data)}")
    return data


def _objects(data: Any) -> list[JsonObject]:
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise FleetClientError(
            0, f"expected a JSON list of objects from the server, got {_kind(data)}"
        )
    return data


def _kind(data: Any) -> str:
    return "a list" if isinstance(data, list) else type(data).__name__
