"""An agent that cannot tell which pod holds which GPU says so in its GpuNode, and logs it sparingly.

The assignment source is the kubelet PodResources client's failure mode (its typed error); the loop,
engine, simulated GPUs and status building are the real code, on an in-memory GpuNode and a manual
clock. Status is written on every direct tick, so each tick's view is checked.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, cast

import pytest
from wattplane.agent.engine import NodeEngine
from wattplane.agent.gpu.simulated import SimulatedBackend
from wattplane.agent.journal import Journal
from wattplane.agent.kube import NodeObjects
from wattplane.agent.loop import ATTRIBUTION_LOG_EVERY_S, AgentLoop
from wattplane.agent.podresources.errors import PodResourcesUnavailableError
from wattplane.agent.settings import AgentSettings
from wattplane.api.conditions import get_condition
from wattplane.api.v1alpha1.gpunode import GpuNodeStatus, PodRef

SOCKET = Path("/var/lib/kubelet/pod-resources/kubelet.sock")


class Objects:
    def __init__(self) -> None:
        self.patches: list[dict[str, Any]] = []

    async def patch_status(self, status: dict[str, Any]) -> None:
        self.patches.append(status)

    def last(self) -> GpuNodeStatus:
        return GpuNodeStatus.model_validate(self.patches[-1])


class Kubelet:
    """Answers like the PodResources source: a mapping, or the typed error while the socket is missing."""

    def __init__(self, uuid: str) -> None:
        self.up = False
        self.uuid = uuid

    async def __call__(self) -> dict[str, list[PodRef]]:
        if not self.up:
            raise PodResourcesUnavailableError(f"no socket at {SOCKET}", socket_path=SOCKET)
        return {self.uuid: [PodRef(namespace="ml", name="train-0", uid="u0", container="c")]}


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def setup(tmp_path: Path) -> tuple[AgentLoop, Objects, Kubelet, Clock]:
    conf = AgentSettings(node_name="node-p", backend="sim", pod_mapper="podresources", tick_s=1.0)
    backend = SimulatedBackend(node_name="node-p", gpu_count=2)
    engine = NodeEngine(backend, Journal(tmp_path / "journal.json"))
    objects, clock = Objects(), Clock()
    kubelet = Kubelet(backend.devices()[0].identity.uuid)
    loop = AgentLoop(conf, engine, cast(NodeObjects, objects), assignment_source=kubelet, clock=clock)
    return loop, objects, kubelet, clock


def _attribution_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "pod attribution failed" in r.getMessage()]


async def test_failing_attribution_is_a_condition_not_a_healthy_node(
    setup: tuple[AgentLoop, Objects, Kubelet, Clock], caplog: pytest.LogCaptureFixture
) -> None:
    loop, objects, kubelet, clock = setup
    caplog.set_level(logging.INFO, logger="wattplane.agent.loop")
    await loop.safe_tick()
    status = objects.last()
    ready = get_condition(status.conditions, "Ready")
    attributed = get_condition(status.conditions, "PodsAttributed")
    assert ready is not None and (ready.status, ready.reason) == ("False", "PodAttributionFailed")
    assert "Unavailable" in ready.message and str(SOCKET) in ready.message
    assert attributed is not None and (attributed.status, attributed.reason) == ("False", "PodAttributionFailed")
    assert all(g.state == "Default" for g in status.gpus)  # power control itself goes on

    # 15 s of failing ticks (one attempt per tick) log one line, not fifteen.
    for _ in range(15):
        clock.now += 1
        await loop.safe_tick()
    warnings = _attribution_warnings(caplog)
    assert len(warnings) == 1, warnings
    assert "PodsAttributed=False" in warnings[0]
    clock.now += ATTRIBUTION_LOG_EVERY_S
    await loop.safe_tick()
    warnings = _attribution_warnings(caplog)
    assert len(warnings) == 2 and "17 attempts failed so far" in warnings[1]

    kubelet.up = True
    clock.now += 1
    await loop.safe_tick()
    status = objects.last()
    ready = get_condition(status.conditions, "Ready")
    attributed = get_condition(status.conditions, "PodsAttributed")
    assert ready is not None and (ready.status, ready.reason) == ("True", "AllGpusHealthy")
    assert attributed is not None and (attributed.status, attributed.reason) == ("True", "Attributed")
    assert [p.name for p in status.gpus[0].pods] == ["train-0"]
    assert any("pod attribution works again after 17 failed attempt(s)" in r.getMessage() for r in caplog.records)
