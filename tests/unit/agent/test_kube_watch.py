"""The GpuNode watch: resumes where it stopped, relists on 410 Gone, survives bookmarks and big objects.

A loopback aiohttp server plays one scripted watch response per request and records the query of
each, so the tests see which ``resourceVersion`` every watch started from.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from lightkube import AsyncClient
from wattplane.agent import kube
from wattplane.agent.kube import ApiError, ApiUnreachable, Gone, NodeObjects, load_config, make_client

GN = "/apis/wattplane.io/v1alpha1/gpunodes"


def obj(rv: str, **spec: Any) -> dict[str, Any]:
    return {"kind": "GpuNode", "metadata": {"name": "n1", "resourceVersion": rv}, "spec": spec}


def event(kind: str, rv: str, **spec: Any) -> dict[str, Any]:
    return {"type": kind, "object": obj(rv, **spec)}


def bookmark(rv: str) -> dict[str, Any]:
    return {"type": "BOOKMARK", "object": {"kind": "GpuNode", "metadata": {"resourceVersion": rv}}}


def expired(message: str = "too old resource version: 3 (40)") -> dict[str, Any]:
    return {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired", "message": message}}


@dataclass
class Refuse:
    """An HTTP error answer instead of a stream."""

    status: int
    reason: str
    message: str


@dataclass
class WatchServer:
    """Answers each watch request with the next script: a list of events (or raw bytes), or a :class:`Refuse`."""

    scripts: list[list[dict[str, Any] | bytes] | Refuse] = field(default_factory=list)
    queries: list[dict[str, str]] = field(default_factory=list)
    url: str = ""
    chunk: int = 0
    """Send the body in chunks of this many bytes (0: one write per line)."""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.queries.append(dict(request.query))
        script = self.scripts.pop(0) if self.scripts else []
        if isinstance(script, Refuse):
            body = {"kind": "Status", "code": script.status, "reason": script.reason, "message": script.message}
            return web.json_response(body, status=script.status)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        data = b"".join(item if isinstance(item, bytes) else json.dumps(item).encode() + b"\n" for item in script)
        step = self.chunk or len(data) or 1
        for start in range(0, len(data), step):
            await response.write(data[start : start + step])
        await response.write_eof()
        return response


@pytest.fixture
async def server() -> AsyncIterator[WatchServer]:
    watch = WatchServer()
    app = web.Application()
    app.router.add_get(GN, watch.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    watch.url = f"http://{host}:{port}"
    try:
        yield watch
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def client_for(url: str, tmp_path: Path) -> AsyncIterator[AsyncClient]:
    """The agent's client, from a kubeconfig naming ``url``."""
    doc = {
        "current-context": "c",
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
        "clusters": [{"name": "k", "cluster": {"server": url}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
    }
    (tmp_path / "kubeconfig").write_text(json.dumps(doc))
    client = make_client(load_config(tmp_path / "kubeconfig"))
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def api(server: WatchServer, tmp_path: Path) -> AsyncIterator[AsyncClient]:
    async with client_for(server.url, tmp_path) as client:
        yield client


async def drain(objects: NodeObjects) -> list[tuple[str, str]]:
    return [(e["type"], e["object"]["metadata"]["resourceVersion"]) async for e in objects.watch_gpunode()]


async def test_the_watch_is_narrow_and_the_next_one_resumes_after_the_last_event(
    server: WatchServer, api: AsyncClient
) -> None:
    server.scripts = [
        [event("ADDED", "5", planGeneration=1), event("MODIFIED", "8", planGeneration=2), bookmark("12")],
        [event("MODIFIED", "15", planGeneration=3)],
    ]
    objects = NodeObjects(api, "n1", watch_timeout_s=120)
    assert await drain(objects) == [("ADDED", "5"), ("MODIFIED", "8")], "bookmarks are not events"
    assert await drain(objects) == [("MODIFIED", "15")]
    first, second = server.queries
    assert first == {
        "watch": "true",
        "allowWatchBookmarks": "true",
        "timeoutSeconds": "120",
        "fieldSelector": "metadata.name=n1",
    }
    assert second == first | {"resourceVersion": "12"}, "resumes after the bookmark, not from scratch"


async def test_an_expired_resource_version_relists_from_the_current_state(
    server: WatchServer, api: AsyncClient
) -> None:
    server.scripts = [
        [event("ADDED", "3", planGeneration=1)],
        [expired()],
        [event("ADDED", "41", planGeneration=7), event("MODIFIED", "42", planGeneration=8)],
        [],
    ]
    objects = NodeObjects(api, "n1")
    assert await drain(objects) == [("ADDED", "3")]
    assert await drain(objects) == [("ADDED", "41"), ("MODIFIED", "42")]
    assert [q.get("resourceVersion") for q in server.queries] == [None, "3", None]
    await drain(objects)
    assert server.queries[-1]["resourceVersion"] == "42"


async def test_a_410_answer_to_the_watch_request_relists_too(server: WatchServer, api: AsyncClient) -> None:
    server.scripts = [
        [event("ADDED", "3")],
        Refuse(410, "Expired", "too old resource version"),
        [event("ADDED", "50")],
    ]
    objects = NodeObjects(api, "n1")
    await drain(objects)
    assert await drain(objects) == [("ADDED", "50")]
    assert [q.get("resourceVersion") for q in server.queries] == [None, "3", None]


async def test_gone_twice_in_a_row_is_raised_for_the_caller_to_back_off(server: WatchServer, api: AsyncClient) -> None:
    server.scripts = [[event("ADDED", "3")], [expired()], [expired("still too old")]]
    objects = NodeObjects(api, "n1")
    await drain(objects)
    with pytest.raises(Gone, match="still too old"):
        await drain(objects)


async def test_events_before_an_expiry_are_delivered_and_other_errors_raised(
    server: WatchServer, api: AsyncClient
) -> None:
    internal = {
        "type": "ERROR",
        "object": {"kind": "Status", "code": 500, "reason": "InternalError", "message": "etcd"},
    }
    server.scripts = [[event("ADDED", "3"), internal]]
    seen: list[str] = []
    with pytest.raises(ApiError, match="etcd") as caught:
        async for e in NodeObjects(api, "n1").watch_gpunode():
            seen.append(e["object"]["metadata"]["resourceVersion"])
    assert seen == ["3"]
    assert caught.value.status == 500 and caught.value.reason == "InternalError"


async def test_a_refused_watch_raises_the_typed_error(server: WatchServer, api: AsyncClient) -> None:
    server.scripts = [Refuse(403, "Forbidden", 'gpunodes.wattplane.io is forbidden: cannot watch "n2"')]
    with pytest.raises(ApiError, match="cannot watch") as caught:
        await drain(NodeObjects(api, "n1"))
    assert caught.value.status == 403


async def test_big_objects_split_across_many_reads_arrive_whole(server: WatchServer, api: AsyncClient) -> None:
    pods = [{"namespace": "ns", "name": f"pod-{i:05d}", "uid": "x" * 36} for i in range(3000)]  # ~250 KB
    server.scripts = [[event("ADDED", "7", pods=pods), b"\n", event("MODIFIED", "8")]]
    server.chunk = 1000
    events = [e async for e in NodeObjects(api, "n1").watch_gpunode()]
    assert len(json.dumps(events[0])) > 200_000
    assert events[0]["object"]["spec"]["pods"] == pods
    assert [e["type"] for e in events] == ["ADDED", "MODIFIED"]


async def test_a_silent_stream_is_dropped_after_the_read_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = asyncio.Event()

    async def silent(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await release.wait()
        return response

    app = web.Application()
    app.router.add_get(GN, silent)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    monkeypatch.setattr(kube, "READ_SLACK_S", 0.3)
    try:
        async with client_for(f"http://{host}:{port}", tmp_path) as client:
            started = asyncio.get_running_loop().time()
            with pytest.raises(ApiUnreachable, match="watch gpunode n1"):
                await drain(NodeObjects(client, "n1", watch_timeout_s=0))
            assert asyncio.get_running_loop().time() - started < 3.0
    finally:
        release.set()
        await runner.cleanup()
