"""Fixtures for the progress scraper: a real aiohttp server on 127.0.0.1 and a client session."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

Serve = Callable[[web.Application], Awaitable[TestServer]]


@pytest.fixture
async def release() -> AsyncIterator[asyncio.Event]:
    """Set at teardown so handlers that hang on purpose return and the server closes at once."""
    event = asyncio.Event()
    yield event
    event.set()


@pytest.fixture
async def serve(release: asyncio.Event) -> AsyncIterator[Serve]:
    """Start an app on 127.0.0.1 (random port); closed at teardown."""
    servers: list[TestServer] = []

    async def _serve(app: web.Application) -> TestServer:
        server = TestServer(app, host="127.0.0.1", port=0)
        await server.start_server()
        servers.append(server)
        return server

    yield _serve
    release.set()
    for server in servers:
        await server.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client
