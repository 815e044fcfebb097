"""Watching a collection without missing or replaying changes: resource versions, bookmarks, 410 Gone.

A watch is one long GET that the server ends after ``timeoutSeconds`` (or when it restarts). Each
event carries the object's ``resourceVersion``; the next watch starts from the last one seen, so
changes made between two watches arrive exactly once, and an unchanged object is not sent again.
Bookmarks (``allowWatchBookmarks``) move that position forward while nothing changes, so it does not
fall out of the server's window. When it has fallen out anyway (an ``ERROR`` event or HTTP status
410, "too old resource version", typically after an API server restart), the watch starts over with
no resource version: the server then sends the current objects as ``ADDED`` events, which is the
relist. Watching from "now" needs only the ``watch`` verb, which a by-name field selector keeps
narrow; a real LIST would need ``list`` on the whole kind.

:func:`parse_event` is the pure part: one line in, one event out, ``ERROR`` events as typed errors.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from wattplane.agent.apiserver.client import ApiClient
from wattplane.agent.apiserver.errors import Gone, KubeError, error_from_status

logger = logging.getLogger(__name__)

#: Seconds of silence tolerated past the watch's own server-side timeout before the stream is dropped.
READ_SLACK_S = 30.0


def parse_event(line: bytes | str) -> dict[str, Any]:
    """One watch line as ``{"type": ..., "object": {...}}``.

    Raises:
        ApiError: The line is an ``ERROR`` event (a :class:`Gone` for an expired resource version).
        KubeError: The line is not a watch event.
    """
    try:
        event = json.loads(line)
    except ValueError as exc:
        raise KubeError(f"watch line is not JSON: {line[:200]!r}") from exc
    if (
        not isinstance(event, dict)
        or not isinstance(event.get("type"), str)
        or not isinstance(event.get("object"), dict)
    ):
        raise KubeError(f"watch line is not an event: {str(line)[:200]}")
    if event["type"] == "ERROR":
        raise error_from_status(event["object"])
    return event


def resource_version_of(obj: dict[str, Any]) -> str | None:
    """``metadata.resourceVersion`` of an object, if it has one."""
    metadata = obj.get("metadata")
    version = metadata.get("resourceVersion") if isinstance(metadata, dict) else None
    return str(version) if version else None


class ResumableWatch:
    """Watches of one collection, each resuming where the previous one stopped.

    Args:
        client: The API client.
        path: Collection path, e.g. ``/apis/wattplane.io/v1alpha1/gpunodes``.
        field_selector: Server-side filter (``metadata.name=...``), if any.
        timeout_s: Server-side length of one watch, seconds.
    """

    def __init__(
        self, client: ApiClient, path: str, *, field_selector: str | None = None, timeout_s: int = 300
    ) -> None:
        self._client = client
        self._path = path
        self._field_selector = field_selector
        self.timeout_s = timeout_s
        #: Where the next watch starts (``None``: from now, with the current objects sent as ``ADDED``).
        self.resource_version: str | None = None

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """Yield ``ADDED``/``MODIFIED``/``DELETED`` events until the server ends this watch.

        An expired resource version restarts the watch from now once (the relist); a second expiry,
        or any other failure, is raised for the caller to retry with backoff.
        """
        relisted = False
        while True:
            try:
                lines = self._client.stream_lines(
                    self._path, params=self._params(), read_timeout_s=self.timeout_s + READ_SLACK_S
                )
                async with contextlib.aclosing(lines):  # an error mid-stream closes the response at once
                    async for line in lines:
                        event = parse_event(line)
                        version = resource_version_of(event["object"])
                        if version:
                            self.resource_version = version
                        if event["type"] != "BOOKMARK":
                            yield event
                return
            except Gone as exc:
                if relisted or self.resource_version is None:
                    raise
                logger.info("watch of %s: %s; starting over from the current state", self._path, exc)
                self.resource_version = None
                relisted = True

    def _params(self) -> dict[str, str]:
        params = {"watch": "true", "allowWatchBookmarks": "true", "timeoutSeconds": str(self.timeout_s)}
        if self._field_selector:
            params["fieldSelector"] = self._field_selector
        if self.resource_version:
            params["resourceVersion"] = self.resource_version
        return params
