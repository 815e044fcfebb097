"""A scripted Electricity Maps v3 server on loopback, for carbon-outage tests.

Modes: ``ok`` (a reading of ``intensity`` at the current minute, and a flat forecast), ``down``
(the listening socket is closed: connection refused), ``slow`` (every answer takes ``slow_s``),
``429`` (rate limited with ``Retry-After``) and ``garbage`` (HTML, wrong shapes, wrong types,
negative values, bytes that are not JSON, in a seeded random order). The clock is injected so the
same server serves simulated time (``ManualClock``) and real time.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web


class GridServer:
    """Electricity Maps v3 ``latest`` and ``forecast`` for one zone, scripted by :meth:`set_mode`."""

    def __init__(
        self,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        *,
        zone: str = "DE",
        intensity: float = 400.0,
        token: str | None = None,
        slow_s: float = 0.3,
        retry_after_s: float = 120.0,
    ) -> None:
        self.clock = clock
        self.zone = zone
        self.intensity = intensity
        self.token = token
        self.slow_s = slow_s
        self.retry_after_s = retry_after_s
        self.mode = "ok"
        self.hits = 0
        self.tokens_seen: list[str] = []
        self.port = 0
        self._garbage = random.Random(3)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """Base URL (stays the same across ``down`` and back)."""
        return f"http://127.0.0.1:{self.port}"

    async def set_mode(self, mode: str) -> None:
        """Switch behaviour; ``down`` closes the socket, any other mode reopens it on the same port."""
        if mode == "down" and self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        elif mode != "down" and self._runner is None:
            await self.start()
        self.mode = mode

    async def start(self) -> None:
        """Listen on 127.0.0.1 (a free port the first time, the same port afterwards)."""
        app = web.Application()
        app.router.add_get("/v3/carbon-intensity/latest", self._latest)
        app.router.add_get("/v3/carbon-intensity/forecast", self._forecast)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        self.port = int(self._runner.addresses[0][1])

    async def close(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _answer(self, request: web.Request, body: Callable[[], dict[str, Any]]) -> web.Response:
        self.hits += 1
        token = request.headers.get("auth-token", "")
        self.tokens_seen.append(token)
        if self.mode == "slow":
            await asyncio.sleep(self.slow_s)
        if self.token is not None and token != self.token:
            return web.json_response({"error": "Invalid token"}, status=401)
        if self.mode == "429":
            headers = {"Retry-After": str(int(self.retry_after_s))}
            return web.json_response({"error": "Too many requests"}, status=429, headers=headers)
        if self.mode == "garbage":
            return self._garbage.choice(
                [
                    web.Response(text="<html>maintenance</html>", content_type="text/html"),
                    web.json_response([1, 2, 3]),
                    web.json_response({"zone": self.zone, "carbonIntensity": "lots", "datetime": "yesterday"}),
                    web.json_response({"zone": self.zone, "carbonIntensity": -5, "datetime": self._minute()}),
                    web.json_response({"zone": self.zone}),
                    web.Response(body=b"\x00\xff{", content_type="application/json"),
                ]
            )
        return web.json_response(body())

    def _minute(self) -> str:
        return self.clock().replace(second=0, microsecond=0).isoformat().replace("+00:00", ".000Z")

    async def _latest(self, request: web.Request) -> web.Response:
        return await self._answer(
            request, lambda: {"zone": self.zone, "carbonIntensity": self.intensity, "datetime": self._minute()}
        )

    async def _forecast(self, request: web.Request) -> web.Response:
        start = self.clock().replace(minute=0, second=0, microsecond=0)
        points = [
            {"carbonIntensity": self.intensity, "datetime": (start + timedelta(hours=h + 1)).isoformat()}
            for h in range(24)
        ]
        return await self._answer(request, lambda: {"zone": self.zone, "forecast": points})
