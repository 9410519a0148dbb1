"""Service errors; the API turns each into one HTTP status with a one-line ``detail``."""

from __future__ import annotations


class ServiceError(Exception):
    """Base class: a request the server refuses, with a one-line reason."""

    status_code = 400


class BadRequest(ServiceError):
    status_code = 400


class Unauthorized(ServiceError):
    status_code = 401


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


class Unavailable(ServiceError):
    status_code = 503
