"""The walking skeleton, end to end on a real kube-apiserver.

EnergyPolicy → operator (kopf, real process) → GpuNode.spec → agent (real process, simulated GPUs)
→ device; and back: device → GpuNode.status → EnergyPolicy.status. One scenario, in order:
apply a 60% cap, edit it to 70%, restart an agent (nothing re-written), delete the policy (exact
prior limits back on every GPU).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fleet import Fleet
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

pytestmark = [pytest.mark.controlplane, pytest.mark.timeout(240)]

DEFAULT_WATTS = 300.0  # A40 default limit (simulated)


@pytest.fixture
async def api(fleet: Fleet) -> AsyncIterator[client.ApiClient]:
    async with await connect(fleet.cp.kubeconfig) as api_client:
        yield api_client


async def _gpunodes(api: client.ApiClient, fleet: Fleet) -> dict[str, dict[str, Any]]:
    return {n: await get_cluster_object(api, "gpunodes", n) for n in fleet.nodes}


def _gpus_of_pod(gpunodes: dict[str, dict[str, Any]], namespace: str, pod: str) -> list[dict[str, Any]]:
    return [
        g
        for gn in gpunodes.values()
        for g in gn.get("status", {}).get("gpus", [])
        if any(p["namespace"] == namespace and p["name"] == pod for p in g.get("pods", []))
    ]


def _all_gpus(gpunodes: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    return [g for gn in gpunodes.values() for g in gn.get("status", {}).get("gpus", [])]


def _write_counts(fleet: Fleet) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in fleet.nodes:
        devices = json.loads(fleet.state_file(node).read_text())["devices"]
        counts.update({uuid: int(d["power_limit_writes"]) for uuid, d in devices.items()})
    return counts


async def test_policy_caps_selected_gpus_and_restores_on_delete(fleet: Fleet, api: client.ApiClient) -> None:
    n1, n2, n3 = fleet.nodes
    await create_namespace(api, "ml", {"team": "ml"})
    await create_namespace(api, "web", {"team": "web"})
    await create_pod(api, "ml", "train-a", node=n1, gpus=2, labels={"app": "train"})
    await create_pod(api, "ml", "train-b", node=n2, gpus=4, labels={"app": "train"})
    await create_pod(api, "ml", "infer-c", node=n3, gpus=1, labels={"app": "infer"})
    await create_pod(api, "web", "train-d", node=n3, gpus=1, labels={"app": "train"})

    async def attributed() -> dict[str, dict[str, Any]] | None:
        gns = await _gpunodes(api, fleet)
        pods = [("ml", "train-a", 2), ("ml", "train-b", 4), ("ml", "infer-c", 1), ("web", "train-d", 1)]
        ok = all(len(_gpus_of_pod(gns, ns, name)) == n for ns, name, n in pods)
        return gns if ok else None

    gpunodes, _ = await eventually(attributed, within_s=60, what=f"pods attributed to GPUs\n{fleet.logs()}")
    assert len(_all_gpus(gpunodes)) == 12
    assert all(g["powerLimitWatts"] == DEFAULT_WATTS for g in _all_gpus(gpunodes))
    for gn in gpunodes.values():
        owner = gn["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["name"]) == ("Node", gn["metadata"]["name"])

    spec = {
        "selector": {
            "namespaceSelector": {"matchLabels": {"team": "ml"}},
            "podSelector": {"matchLabels": {"app": "train"}},
        },
        "limits": {"maxFractionOfDefault": 0.6},
    }
    await apply_policy(api, "skeleton-cap", spec)

    async def capped_at(watts: float) -> dict[str, dict[str, Any]] | None:
        gns = await _gpunodes(api, fleet)
        selected = _gpus_of_pod(gns, "ml", "train-a") + _gpus_of_pod(gns, "ml", "train-b")
        others = [g for g in _all_gpus(gns) if g not in selected]
        if len(selected) == 6 and all(g["powerLimitWatts"] == watts and g["state"] == "Applied" for g in selected):
            assert all(g["powerLimitWatts"] == DEFAULT_WATTS for g in others), others
            return gns
        return None

    _, latency = await eventually(lambda: capped_at(180.0), within_s=10, what=f"60% cap applied\n{fleet.logs()}")
    sys.stderr.write(f"\nskeleton: policy apply → all 6 GPUs at 180 W in {latency:.2f} s\n")

    async def policy_ready() -> dict[str, Any] | None:
        ep = await get_cluster_object(api, "energypolicies", "skeleton-cap")
        status = ep.get("status", {})
        ready = [c for c in status.get("conditions", []) if c["type"] == "Ready"]
        if status.get("matchedGpus") == 6 and ready and ready[0]["status"] == "True":
            return ep
        return None

    ep, _ = await eventually(policy_ready, within_s=10, what="EnergyPolicy status")
    assert ep["status"]["matchedPods"] == 2
    assert ep["status"]["pods"] == ["ml/train-a", "ml/train-b"]
    assert ep["status"]["allocatedWatts"] == pytest.approx(6 * 180.0)
    assert ep["status"]["observedGeneration"] == ep["metadata"]["generation"]

    spec["limits"] = {"maxFractionOfDefault": 0.7}
    await apply_policy(api, "skeleton-cap", spec)
    _, latency = await eventually(lambda: capped_at(210.0), within_s=10, what="edited cap applied")
    sys.stderr.write(f"skeleton: policy edit → all 6 GPUs at 210 W in {latency:.2f} s\n")

    # Restart an agent: device state persists, so the restarted agent must write nothing.
    writes_before = _write_counts(fleet)
    agent = fleet.agents[n1]
    os.kill(agent.popen.pid, signal.SIGKILL)
    agent.popen.wait(timeout=10)
    before = (await get_cluster_object(api, "gpunodes", n1))["status"]["heartbeat"]
    fleet.start_agent(n1)

    async def fresh_heartbeat() -> dict[str, Any] | None:
        gn = await get_cluster_object(api, "gpunodes", n1)
        return gn if gn["status"]["heartbeat"] != before else None

    await eventually(fresh_heartbeat, within_s=20, what="restarted agent reporting")
    await eventually(lambda: capped_at(210.0), within_s=10, what="cap still in force after restart")
    assert _write_counts(fleet) == writes_before, "a restarted agent re-wrote limits that were already right"

    await delete_cluster_object(api, "energypolicies", "skeleton-cap")

    async def restored() -> bool:
        gns = await _gpunodes(api, fleet)
        gpus = _all_gpus(gns)
        return len(gpus) == 12 and all(g["powerLimitWatts"] == DEFAULT_WATTS and g["state"] == "Default" for g in gpus)

    _, latency = await eventually(restored, within_s=10, what="defaults restored after delete")
    sys.stderr.write(f"skeleton: policy delete → all GPUs back at 300 W in {latency:.2f} s\n")
    for node in fleet.nodes:
        journal = json.loads(fleet.journal(node).read_text()) if fleet.journal(node).exists() else {"gpus": {}}
        assert journal["gpus"] == {}, f"journal of {node} still holds entries after restore"
