"""Fixtures for the carbon component tests: loopback HTTP servers, a fake clock, a fast service."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from wattplane.carbon import CarbonService, Credentials, RetryPolicy
from wattplane.carbon.testing import InstantSleep, ManualClock

Serve = Callable[[web.Application], Awaitable[str]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start an aiohttp app on 127.0.0.1 (random port); returns its base URL. Closed at teardown."""
    servers: list[TestServer] = []

    async def _serve(app: web.Application) -> str:
        server = TestServer(app, host="127.0.0.1", port=0)
        await server.start_server()
        servers.append(server)
        return str(server.make_url("")).rstrip("/")

    yield _serve
    for server in servers:
        await server.close()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime(2024, 12, 1, 5, 10, tzinfo=UTC))


@pytest.fixture
def sleeps() -> InstantSleep:
    return InstantSleep()


@pytest.fixture
def make_service(clock: ManualClock, sleeps: InstantSleep) -> Callable[..., CarbonService]:
    """Build services with a fake clock, instant retries and no credentials from the environment."""

    def _make(credentials: Credentials | None = None, **kwargs: object) -> CarbonService:
        params: dict[str, object] = {
            "credentials": credentials or Credentials(),
            "clock": clock,
            "retry": RetryPolicy(attempts=3, base_delay_s=0.5, max_delay_s=4.0, max_retry_after_s=30.0),
            "sleep": sleeps,
            "rng": random.Random(7),
        }
        params.update(kwargs)
        return CarbonService(**params)  # type: ignore[arg-type]

    return _make


@pytest.fixture
async def service(make_service: Callable[..., CarbonService]) -> AsyncIterator[CarbonService]:
    svc = make_service()
    yield svc
    await svc.close()
