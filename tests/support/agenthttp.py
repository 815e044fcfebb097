"""A real agent (loop, engine, collector, HTTP server) on loopback, over simulated GPUs.

Only the GpuNode is in memory (no API server): the loop's ticks are driven by the test, so every
scrape can be compared with the readings that very tick took. Both the loop and the simulated GPUs
run on injected clocks. Used by ``tests/component/agent``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import aiohttp
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from wattplane.agent import server
from wattplane.agent.engine import NodeEngine
from wattplane.agent.gpu.simulated import SimulatedBackend
from wattplane.agent.journal import Journal
from wattplane.agent.kube import NodeObjects
from wattplane.agent.loop import AgentLoop, budget_params
from wattplane.agent.metrics import AgentCollector
from wattplane.agent.settings import AgentSettings
from wattplane.api.v1alpha1.gpunode import PodRef

NODE = "gpu-node-7"


class FakeNodeObjects:
    """The loop's GpuNode, in memory."""

    def __init__(self) -> None:
        self.patches: list[dict[str, Any]] = []

    async def ensure_gpunode(self) -> dict[str, Any]:
        return {"metadata": {"name": NODE}, "spec": {}, "status": {}}

    async def patch_status(self, status: dict[str, Any]) -> None:
        self.patches.append(status)

    async def list_pods(self) -> list[dict[str, Any]]:
        return []

    async def watch_gpunode(self) -> AsyncIterator[dict[str, Any]]:
        await asyncio.Event().wait()
        yield {}


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class RunningAgent:
    loop: AgentLoop
    backend: SimulatedBackend
    objects: FakeNodeObjects
    url: str
    http: aiohttp.ClientSession
    device_clock: Clock
    loop_clock: Clock
    pods: dict[str, list[PodRef]]

    async def tick(self, seconds: float = 1.0) -> None:
        """Let ``seconds`` pass on both clocks, then run one control tick."""
        self.device_clock.now += seconds
        self.loop_clock.now += seconds
        await self.loop.safe_tick()

    async def get(self, path: str) -> tuple[int, str]:
        async with self.http.get(self.url + path) as response:
            return response.status, await response.text()

    async def scrape(self) -> dict[str, list[Sample]]:
        """``/metrics`` parsed by prometheus-client's own parser: sample name → samples."""
        status, body = await self.get("/metrics")
        assert status == 200
        samples: dict[str, list[Sample]] = {}
        for family in text_string_to_metric_families(body):
            for sample in family.samples:
                samples.setdefault(sample.name, []).append(sample)
        return samples

    async def families(self) -> dict[str, str]:
        """Family name → type, as the exposition declares them."""
        _, body = await self.get("/metrics")
        return {f.name: f.type for f in text_string_to_metric_families(body)}


@contextlib.asynccontextmanager
async def running_agent(tmp_path: Path, *, gpu_count: int = 3) -> AsyncIterator[RunningAgent]:
    """Start the agent's HTTP server over ``gpu_count`` simulated A40s; two of them hold pods."""
    device_clock, loop_clock = Clock(1_000_000.0), Clock(500.0)
    backend = SimulatedBackend(node_name=NODE, gpu_count=gpu_count, model="A40", clock=device_clock)
    settings = AgentSettings(
        node_name=NODE,
        backend="sim",
        pod_mapper="sim",
        tick_s=0.1,
        sim_load=1.0,
        journal_path=tmp_path / "journal.json",
    )
    engine = NodeEngine(backend, Journal(settings.journal_path), budget_params=budget_params(settings))
    uuids = [d.identity.uuid for d in backend.devices()]
    pods = {
        uuids[0]: [PodRef(namespace="ml-train", name="llama-ft-0", uid="u-0", container="trainer")],
        uuids[1]: [PodRef(namespace="ml-serve", name="chat-1", uid="u-1", container="server")],
    }

    async def assignment() -> dict[str, list[PodRef]]:
        return pods

    objects = FakeNodeObjects()
    loop = AgentLoop(settings, engine, cast(NodeObjects, objects), assignment_source=assignment, clock=loop_clock)
    registry = CollectorRegistry()
    registry.register(AgentCollector(NODE, loop.snapshot))
    runner, port = await server.start(server.build_app(registry, loop.readiness, loop.health), "127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            url = f"http://127.0.0.1:{port}"
            yield RunningAgent(loop, backend, objects, url, http, device_clock, loop_clock, pods)
    finally:
        await runner.cleanup()
