"""One GET-JSON helper that turns HTTP outcomes into :mod:`wattplane.carbon.errors`.

All providers go through :func:`get_json` so that status handling, ``Retry-After`` parsing,
JSON decoding and secret redaction are written once. Every request carries an explicit
``aiohttp.ClientTimeout``: a carbon API that hangs must not hang the operator.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
from wattplane.carbon.errors import (
    CarbonAuthError,
    CarbonForbiddenError,
    CarbonHTTPError,
    CarbonNotSupportedError,
    CarbonRateLimitedError,
    CarbonResponseError,
    CarbonServerError,
    CarbonTimeoutError,
    CarbonTransportError,
    CarbonZoneError,
)
from yarl import URL

log = logging.getLogger(__name__)

#: Longest server text quoted in an error message.
_DETAIL_CHARS = 200


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Parse an HTTP ``Retry-After`` header (delta-seconds or HTTP-date) into seconds (≥ 0).

    Returns ``None`` when the header is absent or unreadable, so the caller falls back to its
    own backoff rather than trusting garbage.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def redact(text: str, secrets: Iterable[str]) -> str:
    """Replace every occurrence of each (non-empty) secret in ``text`` with ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def _detail(body: bytes) -> str:
    """Short human-readable server message from an error body (JSON ``error``/``message`` or text)."""
    text = body.decode("utf-8", errors="replace").strip()
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        error = parsed.get("error")
        if isinstance(error, dict):  # UK API: {"error": {"code": ..., "message": ...}}
            error = error.get("message")
        # RFC 7807 problem details (ASP.NET, e.g. the Carbon Aware SDK): "title: detail".
        problem = ": ".join(str(parsed[k]) for k in ("title", "detail") if isinstance(parsed.get(k), str))
        for candidate in (error, parsed.get("message"), problem):
            if isinstance(candidate, str) and candidate:
                text = candidate
                break
    text = " ".join(text.split())
    return text[:_DETAIL_CHARS] + ("…" if len(text) > _DETAIL_CHARS else "")


def _status_error(status: int, what: str, detail: str, retry_after: float | None) -> CarbonHTTPError:
    """Map a non-2xx status onto the error tree."""
    message = f"{what}: HTTP {status}" + (f": {detail}" if detail else "")
    if status == 401:
        return CarbonAuthError(message, status=status)
    if status == 403:
        return CarbonForbiddenError(message, status=status)
    if status == 404:
        return CarbonZoneError(message, status=status)
    if status == 429:
        return CarbonRateLimitedError(message, status=status, retry_after_s=retry_after)
    if status == 501:
        return CarbonNotSupportedError(message, status=status)
    if status >= 500:
        return CarbonServerError(message, status=status)
    return CarbonHTTPError(message, status=status)


async def get_json(
    session: aiohttp.ClientSession,
    url: str,
    *,
    client_timeout: aiohttp.ClientTimeout,
    params: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    secrets: Iterable[str] = (),
) -> Any:
    """GET ``url`` and return the decoded JSON body (``None`` for 204 No Content).

    Args:
        session: Shared session (owned by the service).
        url: Absolute URL without query string.
        client_timeout: Per-request timeout; required so no call can hang forever.
        params: Query parameters (never secrets).
        headers: Extra headers (may carry secrets; they are never logged).
        secrets: Secret values to redact from any error text built from the response.

    Raises:
        CarbonTimeoutError, CarbonTransportError: No (complete) answer.
        CarbonHTTPError: Non-2xx status (subclass by status).
        CarbonResponseError: The body is not JSON.
    """
    secret_list = [s for s in secrets if s]
    what = f"GET {URL(url).with_query(None)}"
    try:
        async with session.get(url, params=params, headers=headers, timeout=client_timeout) as resp:
            body = await resp.read()
            status = resp.status
            retry_after = parse_retry_after(resp.headers.get("Retry-After"))
    except TimeoutError:
        raise CarbonTimeoutError(f"{what}: no answer within {client_timeout.total}s") from None
    except aiohttp.ClientPayloadError:
        raise CarbonTransportError(f"{what}: truncated response body") from None
    except aiohttp.ClientError as exc:
        detail = redact(f"{type(exc).__name__}: {exc}", secret_list)
        raise CarbonTransportError(f"{what}: {detail}") from None
    log.debug("%s -> HTTP %d (%d bytes)", what, status, len(body))
    if status == 204:
        return None
    if not 200 <= status < 300:
        raise _status_error(status, what, redact(_detail(body), secret_list), retry_after)
    try:
        return json.loads(body)
    except ValueError:
        snippet = redact(body[:80].decode("utf-8", errors="replace"), secret_list)
        raise CarbonResponseError(f"{what}: body is not valid JSON (starts {snippet!r})") from None
