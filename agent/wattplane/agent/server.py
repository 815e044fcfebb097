"""The agent's HTTP endpoint: ``/metrics`` for Prometheus, ``/healthz`` and ``/readyz`` for kubelet.

* ``/healthz`` (liveness) fails only when the control loop has stopped turning, the one thing a
  restart can fix; the API server being away is not a reason to kill the agent.
* ``/readyz`` (readiness) passes once the agent has written its status and while its last tick
  worked.

Both answer with a one-line reason. Nothing sensitive is ever exposed here.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

Probe = Callable[[], tuple[bool, str]]
"""A probe: (passing, reason)."""


def build_app(registry: CollectorRegistry, ready: Probe, healthy: Probe | None = None) -> web.Application:
    """An aiohttp app serving metrics and probes."""

    async def metrics(_: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    def answer(probe: Probe, word: str) -> web.Response:
        passing, reason = probe()
        if passing:
            return web.Response(text=f"{word}: {reason}\n")
        return web.Response(status=503, text=f"not {word}: {reason}\n")

    async def healthz(_: web.Request) -> web.Response:
        return answer(healthy or (lambda: (True, "serving")), "ok")

    async def readyz(_: web.Request) -> web.Response:
        return answer(ready, "ready")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def start(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Start serving; return the runner (to clean up) and the bound port."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1] if runner.addresses else port
    return runner, int(bound)
