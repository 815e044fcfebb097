"""API failures become typed errors carrying the HTTP status and the server's own explanation."""

from __future__ import annotations

import json

import pytest
from wattplane.agent.apiserver.errors import (
    ApiError,
    BadRequest,
    Conflict,
    Forbidden,
    Gone,
    Invalid,
    KubeError,
    NotFound,
    ServerError,
    TooManyRequests,
    Unauthorized,
    error_from_response,
)
from wattplane.agent.apiserver.watch import parse_event


def status_body(code: int, reason: str, message: str) -> bytes:
    return json.dumps(
        {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "reason": reason, "code": code}
    ).encode()


@pytest.mark.parametrize(
    ("status", "reason", "kind"),
    [
        (400, "BadRequest", BadRequest),
        (401, "Unauthorized", Unauthorized),
        (403, "Forbidden", Forbidden),
        (404, "NotFound", NotFound),
        (409, "AlreadyExists", Conflict),
        (410, "Expired", Gone),
        (422, "Invalid", Invalid),
        (429, "TooManyRequests", TooManyRequests),
        (500, "InternalError", ServerError),
        (504, "Timeout", ServerError),
    ],
)
def test_each_status_a_caller_branches_on_has_its_own_class(status: int, reason: str, kind: type[ApiError]) -> None:
    error = error_from_response(status, status_body(status, reason, f"the {reason} message"))
    assert type(error) is kind
    assert (error.status, error.reason, error.message) == (status, reason, f"the {reason} message")
    assert str(error) == f"{status} {reason}: the {reason} message"


def test_the_classes_are_told_apart_by_except_clauses() -> None:
    forbidden = error_from_response(403, status_body(403, "Forbidden", 'gpunodes "n2" is forbidden: not your node'))
    assert isinstance(forbidden, ApiError) and isinstance(forbidden, KubeError)
    assert not isinstance(forbidden, NotFound | Conflict)
    assert "not your node" in str(forbidden)


def test_a_status_the_client_does_not_name_is_a_plain_api_error() -> None:
    error = error_from_response(418, status_body(418, "Teapot", "short and stout"))
    assert type(error) is ApiError
    assert error.status == 418


def test_the_http_status_wins_over_a_code_in_the_body() -> None:
    assert type(error_from_response(404, status_body(500, "NotFound", "x"))) is NotFound


def test_a_body_that_is_not_a_status_is_quoted_shortly() -> None:
    error = error_from_response(
        502, b"<html>\n  bad gateway from the load balancer\n</html>" + b" pad" * 500, "Bad Gateway"
    )
    assert type(error) is ServerError
    assert error.reason == "Bad Gateway"
    assert error.message.startswith("<html> bad gateway from the load balancer </html>")
    assert len(error.message) <= 300


def test_an_empty_body_gets_the_http_phrase() -> None:
    error = error_from_response(503, b"")
    assert (error.reason, error.message, str(error)) == ("Service Unavailable", "", "503 Service Unavailable")


def test_a_watch_error_event_becomes_the_same_typed_error() -> None:
    line = json.dumps(
        {
            "type": "ERROR",
            "object": {
                "kind": "Status",
                "code": 410,
                "reason": "Expired",
                "message": "too old resource version: 5 (9)",
            },
        }
    )
    with pytest.raises(Gone, match="too old resource version") as caught:
        parse_event(line)
    assert caught.value.status == 410


def test_a_watch_event_is_returned_as_is() -> None:
    event = {"type": "MODIFIED", "object": {"metadata": {"name": "n1", "resourceVersion": "7"}, "spec": {}}}
    assert parse_event(json.dumps(event).encode()) == event


@pytest.mark.parametrize("line", [b"not json", b"[]", b'{"type": "ADDED"}', b'{"object": {}}'])
def test_a_line_that_is_not_a_watch_event_is_an_error(line: bytes) -> None:
    with pytest.raises(KubeError):
        parse_event(line)
