"""The agent on AMD SMI (``--backend amd``), end to end on a real kube-apiserver.

No AMD GPU and no ROCm here, so the agent process imports the faithful ``amdsmi`` fake
(``tests/fakes/fake_amdsmi.py``) under the name ``amdsmi``: a throw-away package on the child's
``PYTHONPATH`` only, holding two MI300X boards. Everything else is the real path: the agent's backend
selection, :class:`wattplane.agent.gpu.amd.AmdSmiBackend` with its microwatt units and read-back, the
GpuNode it publishes, and the operator turning an EnergyPolicy into per-GPU targets.

The fake's state lives in the agent process, so the test reads the devices through GpuNode status
(``powerLimitWatts`` is what the agent read back from the library after writing).
"""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from controlplane import ControlPlane
from fleet import Fleet, _create_nodes
from kubeapi import (
    apply_policy,
    connect,
    create_namespace,
    create_pod,
    delete_cluster_object,
    eventually,
    get_cluster_object,
)
from kubernetes_asyncio import client

pytestmark = [pytest.mark.controlplane, pytest.mark.timeout(120)]

NODE = "amd-n1"
FAKES = Path(__file__).resolve().parents[1] / "fakes"
MI300X_DEFAULT_W = 750.0  # the fake's MI300X: range 200..750 W, default 750 W
MI300X_MIN_W = 200.0
TARGET_W = 500.0

#: ``amdsmi/__init__.py`` for the child: the module's functions, enums and exception classes are the
#: fake's, and the fake's clock follows real time so the energy counter runs.
SHIM = textwrap.dedent(
    """\
    import sys
    import time

    sys.path.insert(0, {fakes!r})
    import fake_amdsmi as _fake

    _lib = _fake.FakeAmdSmi([_fake.MI300X, _fake.MI300X])
    _last = [time.monotonic()]


    def __getattr__(name):
        now = time.monotonic()
        _lib.advance(now - _last[0])
        _last[0] = now
        return getattr(_lib, name)
    """
)


def start_amd_agent(fleet: Fleet, node: str, shim_root: Path) -> None:
    """Start the real agent with ``--backend amd``; ``amdsmi`` resolves to the fake in that process only."""
    package = shim_root / "amdsmi"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text(SHIM.format(fakes=str(FAKES)))
    base = fleet.cp.python_env()["PYTHONPATH"]
    env = {
        "PYTHONPATH": os.pathsep.join([str(shim_root), base]),
        # No kubelet here: pods asking for GPUs get them in order, as with simulated GPUs.
        "WATTPLANE_AGENT_POD_MAPPER": "sim",
        "WATTPLANE_AGENT_JOURNAL_PATH": str(fleet.journal(node)),
        "WATTPLANE_AGENT_STATUS_INTERVAL_S": "2",
        "WATTPLANE_AGENT_POD_SYNC_INTERVAL_S": "1",
        "WATTPLANE_AGENT_TICK_S": "0.5",
        "WATTPLANE_AGENT_METRICS_PORT": "0",
        "WATTPLANE_AGENT_METRICS_HOST": "127.0.0.1",
    }
    process = fleet.cp.spawn_python(f"agent-{node}", "wattplane.agent", ["--node", node, "--backend", "amd"], **env)
    fleet.agents[node] = process


@pytest.fixture(scope="module")
def amd_fleet(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """One fake node with two (fake) MI300X boards and its agent on AMD SMI, and the operator."""
    asyncio.run(_create_nodes(control_plane, [NODE]))
    workdir = tmp_path_factory.mktemp("amd")
    fleet = Fleet(control_plane, [NODE], workdir)
    start_amd_agent(fleet, NODE, workdir / "shim")
    fleet.start_operator()
    try:
        yield fleet
    finally:
        for process in [*fleet.agents.values(), *([fleet.operator] if fleet.operator else [])]:
            process.stop()


@pytest.fixture
async def api(amd_fleet: Fleet) -> AsyncIterator[client.ApiClient]:
    async with await connect(amd_fleet.cp.kubeconfig) as api_client:
        yield api_client


def _gpus(gpunode: dict[str, Any]) -> list[dict[str, Any]]:
    return list(gpunode.get("status", {}).get("gpus", []))


async def test_amd_agent_publishes_applies_and_restores(amd_fleet: Fleet, api: client.ApiClient) -> None:
    async def published() -> dict[str, Any] | None:
        gn = await get_cluster_object(api, "gpunodes", NODE)
        return gn if len(_gpus(gn)) == 2 else None

    gpunode, _ = await eventually(published, within_s=30, what=f"GpuNode of the AMD agent\n{amd_fleet.logs()}")
    assert "amdsmi" in gpunode["status"].get("backend", ""), gpunode["status"]
    for gpu in _gpus(gpunode):
        assert gpu["vendor"] == "amd"
        assert "MI300X" in gpu["model"]
        assert gpu["constraints"] == {
            "minWatts": MI300X_MIN_W,
            "maxWatts": MI300X_DEFAULT_W,
            "defaultWatts": MI300X_DEFAULT_W,
        }
        assert gpu["powerLimitWatts"] == MI300X_DEFAULT_W
        assert gpu["state"] == "Default"
    assert len({g["uuid"] for g in _gpus(gpunode)}) == 2

    await create_namespace(api, "amd", {"team": "amd"})
    await create_pod(api, "amd", "train-amd", node=NODE, gpus=2, labels={"app": "train-amd"})
    spec = {
        "selector": {"podSelector": {"matchLabels": {"app": "train-amd"}}},
        "limits": {"maxWatts": TARGET_W},
    }
    await apply_policy(api, "amd-cap", spec)

    async def capped() -> list[dict[str, Any]] | None:
        gpus = _gpus(await get_cluster_object(api, "gpunodes", NODE))
        ok = len(gpus) == 2 and all(g["powerLimitWatts"] == TARGET_W and g["state"] == "Applied" for g in gpus)
        return gpus if ok else None

    gpus, latency = await eventually(capped, within_s=20, what=f"500 W on both MI300X\n{amd_fleet.logs()}")
    assert all(g["targetWatts"] == TARGET_W for g in gpus)
    sys.stderr.write(f"\namd: policy apply → both MI300X at {TARGET_W:g} W in {latency:.2f} s\n")

    await delete_cluster_object(api, "energypolicies", "amd-cap")

    async def restored() -> list[dict[str, Any]] | None:
        gpus = _gpus(await get_cluster_object(api, "gpunodes", NODE))
        ok = len(gpus) == 2 and all(g["powerLimitWatts"] == MI300X_DEFAULT_W and g["state"] == "Default" for g in gpus)
        return gpus if ok else None

    _, latency = await eventually(restored, within_s=20, what=f"default cap back after delete\n{amd_fleet.logs()}")
    sys.stderr.write(f"amd: policy delete → both back at {MI300X_DEFAULT_W:g} W in {latency:.2f} s\n")
