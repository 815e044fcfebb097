"""A small asynchronous HTTP client for the Kubernetes API, on aiohttp.

The agent makes a handful of calls on plain JSON objects; a generated client would import a model
class for every kind in Kubernetes (tens of MiB resident in a DaemonSet on every GPU node) to
deserialise objects the agent reads as dicts anyway. This client sends JSON, returns JSON, and
streams watch lines; paths and semantics stay with the caller (:mod:`wattplane.agent.kube`).

Every request has a deadline: unary requests ``request_timeout_s`` in all, watches a connect deadline
and a read deadline a little past the server-side ``timeoutSeconds``, so a server that stops talking
can never hang a caller. Failures are the typed exceptions of :mod:`.errors`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
from wattplane.agent.apiserver.config import ClusterConfig
from wattplane.agent.apiserver.credentials import TokenSource, ssl_context
from wattplane.agent.apiserver.errors import ApiUnreachable, KubeError, error_from_response

#: Seconds before a unary request (GET, POST, PATCH, LIST) is abandoned. The agent's objects are small
#: and a healthy API server answers in milliseconds; longer than this is an outage, and the caller's
#: control tick should not wait it out.
REQUEST_TIMEOUT_S = 10.0
#: The largest watch line accepted, bytes: far above any object etcd stores (1.5 MiB by default).
MAX_LINE_BYTES = 16 * 2**20
JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"


class ApiClient:
    """JSON requests and watch streams to one API server, over one pooled aiohttp session.

    Create it where an event loop runs (the session is opened on first use) and :meth:`close` it, or
    use it as ``async with``. TLS settings are loaded at construction, so a bad CA or key fails at
    start-up rather than on the first request.
    """

    def __init__(
        self,
        config: ClusterConfig,
        *,
        request_timeout_s: float = REQUEST_TIMEOUT_S,
        user_agent: str = "wattplane-agent",
        tokens: TokenSource | None = None,
    ) -> None:
        self.config = config
        self.request_timeout_s = request_timeout_s
        self._base = config.server.rstrip("/")
        self._ssl = ssl_context(config)
        self._tokens = tokens or TokenSource(config.token, config.token_file)
        self._user_agent = user_agent
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close pooled connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: object = None,
        content_type: str = JSON,
    ) -> dict[str, Any]:
        """Send one request and return the decoded JSON answer.

        Raises:
            ApiError: The server answered with an error status (a subclass per status).
            ApiUnreachable: No answer within ``request_timeout_s``, or the connection failed.
        """
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        timeout = aiohttp.ClientTimeout(total=self.request_timeout_s)
        try:
            async with self._http().request(
                method,
                self._base + path,
                params=params,
                data=data,
                headers=self._headers(content_type if data is not None else None),
                timeout=timeout,
                server_hostname=self.config.tls_server_name,
            ) as response:
                payload = await response.read()
                if response.status >= 400:
                    raise error_from_response(response.status, payload, response.reason or "")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ApiUnreachable(f"{method} {path}: {_describe(exc)}") from exc
        if not payload:
            return {}
        try:
            decoded = json.loads(payload)
        except ValueError as exc:
            raise KubeError(f"{method} {path}: the answer is not JSON: {payload[:200]!r}") from exc
        if not isinstance(decoded, dict):
            raise KubeError(f"{method} {path}: expected a JSON object, got {type(decoded).__name__}")
        return decoded

    async def stream_lines(
        self, path: str, *, params: Mapping[str, str] | None = None, read_timeout_s: float
    ) -> AsyncIterator[bytes]:
        """GET ``path`` and yield the non-empty lines of the answer as they arrive (a watch).

        Args:
            path: Collection path.
            params: Query parameters (``watch=true`` and the rest are the caller's).
            read_timeout_s: Longest silence tolerated between two reads before giving up.

        Raises:
            ApiError: The server refused the watch.
            ApiUnreachable: The connection failed or went silent.
        """
        timeout = aiohttp.ClientTimeout(total=None, connect=self.request_timeout_s, sock_read=read_timeout_s)
        try:
            async with self._http().get(
                self._base + path,
                params=params,
                headers=self._headers(None),
                timeout=timeout,
                server_hostname=self.config.tls_server_name,
            ) as response:
                if response.status >= 400:
                    raise error_from_response(response.status, await response.read(), response.reason or "")
                buffer = bytearray()
                async for chunk in response.content.iter_any():
                    buffer += chunk
                    while (end := buffer.find(b"\n")) >= 0:
                        line = bytes(buffer[:end])
                        del buffer[: end + 1]
                        if line.strip():
                            yield line
                    if len(buffer) > MAX_LINE_BYTES:
                        raise KubeError(f"GET {path}: a watch line exceeds {MAX_LINE_BYTES} bytes")
                if buffer.strip():
                    yield bytes(buffer)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ApiUnreachable(f"watch {path}: {_describe(exc)}") from exc

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self._ssl if self._ssl is not None else True, limit=8)
            self._session = aiohttp.ClientSession(connector=connector, json_serialize=json.dumps)
        return self._session

    def _headers(self, content_type: str | None) -> dict[str, str]:
        headers = {"Accept": JSON, "User-Agent": self._user_agent}
        if content_type:
            headers["Content-Type"] = content_type
        token = self._tokens.token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__
