"""pytest plugin: fake GPU nodes with agent processes and the operator, on the real API server."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from controlplane import ControlPlane, Process
from kubeapi import connect, create_node


@dataclass
class Fleet:
    """Fake nodes with one agent process each, plus the operator process."""

    cp: ControlPlane
    nodes: list[str]
    workdir: Path
    agents: dict[str, Process] = field(default_factory=dict)
    operator: Process | None = None
    operator_metrics_port: int = 0
    agent_env: dict[str, str] = field(default_factory=dict)
    """Extra or overriding ``WATTPLANE_AGENT_*`` variables for every agent (fault tests)."""
    operator_env: dict[str, str] = field(default_factory=dict)
    """Extra or overriding ``WATTPLANE_OPERATOR_*`` variables for the operator (fault tests)."""

    def state_file(self, node: str) -> Path:
        """The simulated device state of a node (it outlives its agent, like real GPUs)."""
        return self.workdir / f"{node}.gpus.json"

    def journal(self, node: str) -> Path:
        """The agent's prior-state journal on a node."""
        return self.workdir / f"{node}.journal.json"

    def start_agent(self, node: str) -> Process:
        """Start (or restart) the agent of ``node`` on the simulated backend."""
        env = {
            "WATTPLANE_AGENT_POD_MAPPER": "sim",
            "WATTPLANE_AGENT_SIM_GPU_COUNT": "4",
            "WATTPLANE_AGENT_SIM_MODEL": "A40",
            "WATTPLANE_AGENT_SIM_STATE_FILE": str(self.state_file(node)),
            "WATTPLANE_AGENT_JOURNAL_PATH": str(self.journal(node)),
            "WATTPLANE_AGENT_STATUS_INTERVAL_S": "2",
            "WATTPLANE_AGENT_POD_SYNC_INTERVAL_S": "1",
            "WATTPLANE_AGENT_TICK_S": "0.5",
            "WATTPLANE_AGENT_METRICS_PORT": "0",
            "WATTPLANE_AGENT_METRICS_HOST": "127.0.0.1",
            **self.agent_env,
        }
        process = self.cp.spawn_python(f"agent-{node}", "wattplane.agent", ["--node", node, "--backend", "sim"], **env)
        self.agents[node] = process
        return process

    def start_operator(self) -> Process:
        """Start the operator (its metrics on a free loopback port, see ``operator_metrics_url``)."""
        self.operator_metrics_port = _free_port()
        env = {
            "WATTPLANE_OPERATOR_DEBOUNCE_S": "0.2",
            "WATTPLANE_OPERATOR_RESYNC_INTERVAL_S": "5",
            "WATTPLANE_OPERATOR_METRICS_HOST": "127.0.0.1",
            "WATTPLANE_OPERATOR_METRICS_PORT": str(self.operator_metrics_port),
            **self.operator_env,
        }
        self.operator = self.cp.spawn_python("operator", "wattplane.operator", [], **env)
        return self.operator

    @property
    def operator_metrics_url(self) -> str:
        """Where the operator serves ``/metrics``."""
        return f"http://127.0.0.1:{self.operator_metrics_port}/metrics"

    def logs(self) -> str:
        """Tails of every process log, for failure messages."""
        procs = [*self.agents.values(), *([self.operator] if self.operator else [])]
        return "\n".join(f"--- {p.name}\n{p.tail(25)}" for p in procs)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _create_nodes(cp: ControlPlane, names: list[str]) -> None:
    api = await connect(cp.kubeconfig)
    async with api:
        for name in names:
            await create_node(api, name, gpus=4, labels={"wattplane.io/rack": "r1"})


@pytest.fixture(scope="module")
def fleet(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Fleet]:
    """Three fake GPU nodes with agents, and the operator, for one test module."""
    prefix = request.module.__name__.rsplit(".", 1)[-1].replace("test_", "").replace("_", "-")[:12]
    names = [f"{prefix}-n{i}" for i in range(1, 4)]
    asyncio.run(_create_nodes(control_plane, names))
    fleet = Fleet(control_plane, names, tmp_path_factory.mktemp("fleet"))
    for node in names:
        fleet.start_agent(node)
    fleet.start_operator()
    try:
        yield fleet
    finally:
        for process in [*fleet.agents.values(), *([fleet.operator] if fleet.operator else [])]:
            process.stop()


async def rack_gpunodes(api: Any, nodes: list[str]) -> dict[str, dict[str, Any]]:
    """The GpuNodes of ``nodes``, by name."""
    from kubeapi import get_cluster_object

    return {n: await get_cluster_object(api, "gpunodes", n) for n in nodes}


def rack_power(gpunodes: dict[str, dict[str, Any]]) -> float:
    """What the GpuNodes' agents last reported their nodes drawing, watts."""
    return sum(gn.get("status", {}).get("nodePowerWatts", 0.0) for gn in gpunodes.values())


async def busy_rack(fleet: Fleet, api: Any, *, rack: str, namespace: str) -> float:
    """The rack's uncapped draw, once every node of ``fleet`` runs a low-priority 4-GPU pod.

    Labels the nodes ``rack=<rack>`` and creates ``namespace`` and the pods first.
    """
    from kubeapi import create_namespace, create_pod, eventually
    from kubernetes_asyncio import client

    nodes = list(fleet.nodes)
    core = client.CoreV1Api(api)
    for node in nodes:
        await core.patch_node(node, {"metadata": {"labels": {"rack": rack}}})
    await create_namespace(api, namespace)
    for i, node in enumerate(nodes):
        await create_pod(api, namespace, f"train-{i}", node=node, gpus=4, annotations={"wattplane.io/priority": "low"})

    async def busy() -> float | None:
        gns = await rack_gpunodes(api, nodes)
        held = sum(1 for gn in gns.values() for g in gn.get("status", {}).get("gpus", []) if g.get("pods"))
        return rack_power(gns) if held == 4 * len(nodes) else None

    uncapped, _ = await eventually(busy, within_s=60, what=f"busy GPUs\n{fleet.logs()}")
    return uncapped
