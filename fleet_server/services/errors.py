"""Service errors; the API turns each into one HTTP status with a one-line ``detail``."""

from __future__ import annotations


class ServiceError(Exception):
    """Base class: a request the server refuses, with a one-line reason."""

    status_code = 400

    @property
    def headers(self) -> dict[str, str] | None:
        """HTTP headers the refusal carries (e.g. ``WWW-Authenticate``, ``Retry-After``)."""
        return None


class BadRequest(ServiceError):
    status_code = 400


class Unauthorized(ServiceError):
    status_code = 401

    @property
    def headers(self) -> dict[str, str] | None:
        return {"WWW-Authenticate": "Bearer"}


class Forbidden(ServiceError):
    status_code = 403


class NotFound(ServiceError):
    status_code = 404


class Conflict(ServiceError):
    status_code = 409


class Gone(ServiceError):
    """The thing existed but can no longer be used (an expired or used-up enrollment token)."""

    status_code = 410


class TooLarge(ServiceError):
    status_code = 413


class UnsupportedMediaType(ServiceError):
    """The body's media type is not one the route takes (the bundle upload: multipart only)."""

    status_code = 415


class Unprocessable(ServiceError):
    status_code = 422


class TooManyRequests(ServiceError):
    """Too many wrong credentials from one client address; it may retry after a few seconds."""

    status_code = 429

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    @property
    def headers(self) -> dict[str, str] | None:
        return {"Retry-After": str(self.retry_after_s)}


class Unavailable(ServiceError):
    status_code = 503
