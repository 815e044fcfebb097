"""Workload power profile and power smoothing, end to end on a real kube-apiserver.

EnergyPolicy ``limits.workloadProfile`` / ``limits.powerSmoothing`` → operator (real process) →
GpuNode.spec → agent (real process, simulated B200s, which model both knobs) → device → GpuNode
status; deleting the policy puts the devices back exactly as they were, journal emptied. The API
server itself refuses a profile name the CRD does not list.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
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

pytestmark = [pytest.mark.controlplane, pytest.mark.timeout(180)]

NODE = "knobs-n1"


@pytest.fixture(scope="module")
def knob_fleet(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """One fake node of four simulated B200s with its agent, and the operator."""
    asyncio.run(_create_nodes(control_plane, [NODE]))
    fleet = Fleet(
        control_plane, [NODE], tmp_path_factory.mktemp("knobs"), agent_env={"WATTPLANE_AGENT_SIM_MODEL": "B200"}
    )
    fleet.start_agent(NODE)
    fleet.start_operator()
    try:
        yield fleet
    finally:
        for process in [*fleet.agents.values(), *([fleet.operator] if fleet.operator else [])]:
            process.stop()


@pytest.fixture
async def api(knob_fleet: Fleet) -> AsyncIterator[client.ApiClient]:
    async with await connect(knob_fleet.cp.kubeconfig) as api_client:
        yield api_client


def _gpus(gpunode: dict[str, Any]) -> list[dict[str, Any]]:
    return list(gpunode.get("status", {}).get("gpus", []))


def _held_by(gpus: list[dict[str, Any]], pod: str) -> list[dict[str, Any]]:
    return [g for g in gpus if any(p["name"] == pod for p in g.get("pods", []))]


async def test_profile_and_smoothing_reach_the_gpus_and_are_restored(knob_fleet: Fleet, api: client.ApiClient) -> None:
    await create_namespace(api, "knobs", {"team": "knobs"})
    await create_pod(api, "knobs", "train-k", node=NODE, gpus=2, labels={"app": "knobs"})

    async def attributed() -> list[dict[str, Any]] | None:
        gpus = _gpus(await get_cluster_object(api, "gpunodes", NODE))
        return gpus if len(gpus) == 4 and len(_held_by(gpus, "train-k")) == 2 else None

    await eventually(attributed, within_s=60, what=f"pod attributed\n{knob_fleet.logs()}")

    with pytest.raises(client.ApiException) as refused:
        await apply_policy(api, "knobs-bad", {"limits": {"maxWatts": 800, "workloadProfile": "Turbo"}})
    assert refused.value.status == 422

    spec = {
        "selector": {"podSelector": {"matchLabels": {"app": "knobs"}}},
        "limits": {
            "maxFractionOfDefault": 0.8,
            "workloadProfile": "MaxQ",
            "powerSmoothing": {"rampDownWattsPerSecond": 50, "floorPercent": 30},
        },
    }
    await apply_policy(api, "knobs-maxq", spec)

    async def applied() -> list[dict[str, Any]] | None:
        gpus = _gpus(await get_cluster_object(api, "gpunodes", NODE))
        mine = _held_by(gpus, "train-k")
        done = len(mine) == 2 and all(
            g["state"] == "Applied"
            and g["powerLimitWatts"] == 800.0
            and g.get("workloadProfiles") == ["MaxQ"]
            and (g.get("powerSmoothing") or {}).get("enabled") is True
            and g["powerSmoothing"].get("floorPercent") == 30.0
            and g["powerSmoothing"].get("rampDownWattsPerSecond") == 50.0
            for g in mine
        )
        return gpus if done else None

    gpus, _ = await eventually(applied, within_s=30, what=f"profile and smoothing applied\n{knob_fleet.logs()}")
    others = [g for g in gpus if g not in _held_by(gpus, "train-k")]
    assert all(g.get("workloadProfiles") is None and g["powerLimitWatts"] == 1000.0 for g in others)
    journal = json.loads(knob_fleet.journal(NODE).read_text())["gpus"]
    assert all(entry["workload_profiles"] == [] for entry in journal.values()) and len(journal) == 2
    assert all(entry["power_smoothing"]["enabled"] is False for entry in journal.values())

    await delete_cluster_object(api, "energypolicies", "knobs-maxq")

    async def restored() -> bool:
        gpus = _gpus(await get_cluster_object(api, "gpunodes", NODE))
        return len(gpus) == 4 and all(g["state"] == "Default" and g["powerLimitWatts"] == 1000.0 for g in gpus)

    await eventually(restored, within_s=30, what=f"devices restored after delete\n{knob_fleet.logs()}")
    devices = json.loads(knob_fleet.state_file(NODE).read_text())["devices"]
    assert all(d["workload_profiles"] == [] and d["smoothing_enabled"] is False for d in devices.values())
    assert all(d["smoothing_floor_percent"] == 0.0 for d in devices.values())
    assert json.loads(knob_fleet.journal(NODE).read_text())["gpus"] == {}
