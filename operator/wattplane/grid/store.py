"""Where a VEN's event book survives the operator: a ConfigMap per policy, or memory in tests.

The VEN saves its :class:`~wattplane.grid.events.EventBook` *before* it answers the VTN, so an event the
grid operator counts on is never only in a process that may be SIGKILLed; the next operator reads it
back at start. One ConfigMap per policy (``wattplane-grid-<policy>`` in the operator's namespace, key
``events.json``) keeps every write small and independent of the other policies.

Errors: :class:`StoreError` for anything the backend could not do (the VEN then opts out of the event
rather than promise what it could not write down).
"""

from __future__ import annotations

import hashlib
from typing import Protocol

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from wattplane.grid.events import EventBook

#: ConfigMap key holding the book.
KEY = "events.json"
_PREFIX = "wattplane-grid-"
_MAX_NAME = 253


class StoreError(Exception):
    """The event book could not be read or written."""


class Backend(Protocol):
    """Reads and writes one text blob per policy."""

    async def read(self, policy: str) -> str | None:
        """The stored text, or None when nothing was stored."""

    async def write(self, policy: str, text: str) -> None:
        """Store ``text`` (replacing what was there)."""


def configmap_name(policy: str) -> str:
    """``wattplane-grid-<policy>``, shortened with a hash suffix when the name would be too long."""
    name = f"{_PREFIX}{policy}"
    if len(name) <= _MAX_NAME:
        return name
    digest = hashlib.sha256(policy.encode()).hexdigest()[:10]
    return f"{name[: _MAX_NAME - 11].rstrip('-.')}-{digest}"


class MemoryBackend:
    """In-process backend: for tests and ``wattplane run`` without a cluster (lost with the process)."""

    def __init__(self) -> None:
        self.texts: dict[str, str] = {}

    async def read(self, policy: str) -> str | None:
        """The stored text, or None."""
        return self.texts.get(policy)

    async def write(self, policy: str, text: str) -> None:
        """Replace the stored text."""
        self.texts[policy] = text


class ConfigMapBackend:
    """One ConfigMap per policy in ``namespace`` (the operator needs get/create/patch on configmaps there)."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self._core = client.CoreV1Api(api)
        self._namespace = namespace

    async def read(self, policy: str) -> str | None:
        """The book's text, or None when the ConfigMap does not exist."""
        try:
            cm = await self._core.read_namespaced_config_map(configmap_name(policy), self._namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            where = f"{self._namespace}/{configmap_name(policy)}"
            raise StoreError(f"reading ConfigMap {where}: HTTP {exc.status}") from None
        data = cm.data or {}
        text = data.get(KEY)
        return str(text) if text is not None else None

    async def _patch(self, name: str, text: str) -> None:
        await self._core.patch_namespaced_config_map(
            name, self._namespace, {"data": {KEY: text}}, _content_type="application/merge-patch+json"
        )

    async def write(self, policy: str, text: str) -> None:
        """Patch the ConfigMap's key, creating the ConfigMap on first use."""
        name = configmap_name(policy)
        try:
            await self._patch(name, text)
            return
        except ApiException as exc:
            if exc.status != 404:
                raise StoreError(f"writing ConfigMap {self._namespace}/{name}: HTTP {exc.status}") from None
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": name,
                "namespace": self._namespace,
                "labels": {"app.kubernetes.io/managed-by": "wattplane", "wattplane.io/component": "grid"},
                "annotations": {"wattplane.io/policy": policy},
            },
            "data": {KEY: text},
        }
        try:
            await self._core.create_namespaced_config_map(self._namespace, body)
        except ApiException as exc:
            if exc.status == 409:  # created meanwhile: patch once more
                await self._patch(name, text)
                return
            raise StoreError(f"creating ConfigMap {self._namespace}/{name}: HTTP {exc.status}") from None


class EventStore:
    """Loads and saves one policy's event book through a backend."""

    def __init__(self, backend: Backend, policy: str) -> None:
        self._backend = backend
        self.policy = policy

    async def load(self) -> EventBook:
        """The saved book; an empty one when none was saved (or what was saved is unreadable)."""
        try:
            text = await self._backend.read(self.policy)
        except StoreError:
            raise
        except Exception as exc:  # transport errors of the backend
            raise StoreError(f"reading the event book of {self.policy}: {type(exc).__name__}") from exc
        if text is None:
            return EventBook()
        try:
            return EventBook.from_json(text)
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"the saved event book of {self.policy} is unreadable: {exc}") from None

    async def save(self, book: EventBook) -> None:
        """Write the whole book (it is small: the live events of one policy)."""
        try:
            await self._backend.write(self.policy, book.to_json())
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f"saving the event book of {self.policy}: {type(exc).__name__}") from exc
