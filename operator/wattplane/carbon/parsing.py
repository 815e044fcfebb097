"""Small, strict readers for JSON bodies and timestamps shared by the providers.

Each raises :class:`~wattplane.carbon.errors.CarbonResponseError` with a message that names the
field, so a changed upstream schema is diagnosed from the signal's ``error_message`` alone.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from wattplane.carbon.errors import CarbonResponseError


def as_dict(value: Any, *, what: str) -> dict[str, Any]:
    """Return ``value`` if it is a JSON object, else raise."""
    if not isinstance(value, dict):
        raise CarbonResponseError(f"{what}: expected a JSON object, got {type(value).__name__}")
    return value


def as_list(value: Any, *, what: str) -> list[Any]:
    """Return ``value`` if it is a JSON array, else raise."""
    if not isinstance(value, list):
        raise CarbonResponseError(f"{what}: expected a JSON array, got {type(value).__name__}")
    return value


def field(obj: dict[str, Any], key: str, *, what: str) -> Any:
    """Return ``obj[key]``, raising a readable error when the key is missing."""
    if key not in obj:
        raise CarbonResponseError(f"{what}: missing field {key!r}")
    return obj[key]


def parse_time(value: Any, *, what: str) -> datetime:
    """Parse an ISO-8601 timestamp into an aware UTC datetime.

    Accepts the spellings the APIs use (``2024-11-30T06:00:00.000Z``, ``2018-01-20T12:00Z``,
    ``+00:00`` offsets). A timestamp without an offset is taken as UTC: every source here
    documents UTC, and guessing the host's local zone would be worse.
    """
    if not isinstance(value, str):
        raise CarbonResponseError(f"{what}: timestamp is not a string (got {type(value).__name__})")
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise CarbonResponseError(f"{what}: unreadable timestamp {value[:40]!r}") from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def parse_duration(value: Any, *, what: str) -> timedelta | None:
    """Parse a duration: a number of seconds, or a .NET TimeSpan string ``[d.]hh:mm:ss[.fff]``.

    Returns ``None`` for ``null``; the Carbon Aware SDK writes TimeSpans as strings.
    """
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=float(value))
    if isinstance(value, str):
        text = value.strip()
        days = 0
        if "." in text.split(":")[0]:
            day_text, text = text.split(".", 1)
            days = int(day_text) if day_text.isdigit() else -1
        parts = text.split(":")
        try:
            if days >= 0 and len(parts) == 3:
                hours, minutes, seconds = int(parts[0]), int(parts[1]), float(parts[2])
                return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
        except ValueError:
            pass
    raise CarbonResponseError(f"{what}: unreadable duration {value!r}")
