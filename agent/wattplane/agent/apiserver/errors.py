"""What can go wrong talking to the API server, as exceptions a caller can tell apart.

Two branches under :class:`KubeError`:

* :class:`ApiError`: the server answered with an error status. The HTTP status is kept, and the
  message is the one from the server's ``Status`` body (it says *which* object and *why*, where the
  status code alone says neither). The statuses a caller branches on have their own classes
  (:class:`NotFound` to create what is missing, :class:`Conflict` for a create that raced, :class:`Gone`
  to relist a watch, :class:`Forbidden`/:class:`Unauthorized` to tell RBAC from credentials).
* :class:`ApiUnreachable`: no answer at all (connection refused or reset, TLS failure, timeout). The
  transport's own exception is chained as the cause, so logs keep the detail while callers never
  depend on the HTTP library.

:func:`error_from_response` is the one mapping from an HTTP answer to an :class:`ApiError`: pure, so
it is tested without a server.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any


class KubeError(Exception):
    """Any failure of a request to the API server."""


class ApiUnreachable(KubeError):
    """The API server gave no answer: connection, TLS or timeout failure."""


class ConfigError(KubeError):
    """The kubeconfig or in-cluster environment cannot be turned into a connection."""


class ApiError(KubeError):
    """The API server answered with an error status.

    Attributes:
        status: HTTP status code (e.g. 404).
        reason: The ``Status`` reason (``NotFound``, ``AlreadyExists``, ``Expired``...) or the HTTP phrase.
        message: The ``Status`` message, or the start of the body when it was not a ``Status``.
    """

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}" if message else f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.message = message


class BadRequest(ApiError):
    """400: the request was malformed or invalid (e.g. a field selector the server does not support)."""


class Unauthorized(ApiError):
    """401: the credentials were refused (expired token, wrong certificate)."""


class Forbidden(ApiError):
    """403: authenticated, but RBAC or an admission policy refuses this request."""


class NotFound(ApiError):
    """404: no such object (or no such resource: the CRD is not installed)."""


class Conflict(ApiError):
    """409: the object already exists, or was changed since it was read."""


class Gone(ApiError):
    """410: the resource version a watch asked for is too old; list (or watch from now) again."""


class Invalid(ApiError):
    """422: the object failed validation (schema, CEL rules, admission)."""


class TooManyRequests(ApiError):
    """429: the server is throttling this client (API priority and fairness)."""


class ServerError(ApiError):
    """5xx: the API server (or etcd behind it) failed or timed out."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    410: Gone,
    422: Invalid,
    429: TooManyRequests,
}

#: How much of a body that is not a ``Status`` goes into the message.
_BODY_EXCERPT_CHARS = 300


def error_class(status: int) -> type[ApiError]:
    """The exception class for an HTTP error status."""
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    return ServerError if status >= 500 else ApiError


def error_from_status(status_object: dict[str, Any], http_status: int | None = None) -> ApiError:
    """An :class:`ApiError` from a ``Status`` object (an error response, or a watch ``ERROR`` event).

    The HTTP status of a response wins over the body's ``code``; a watch event has only the ``code``.
    """
    code = status_object.get("code")
    status = http_status or (code if isinstance(code, int) and code > 0 else 500)
    reason = str(status_object.get("reason") or "")
    message = str(status_object.get("message") or "")
    return error_class(status)(status, reason or _phrase(status), message)


def error_from_response(status: int, body: bytes | str, phrase: str = "") -> ApiError:
    """An :class:`ApiError` from an HTTP error response: the ``Status`` body when there is one."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and parsed.get("kind") == "Status":
        return error_from_status(parsed, status)
    return error_class(status)(status, phrase or _phrase(status), " ".join(text.split())[:_BODY_EXCERPT_CHARS])


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
