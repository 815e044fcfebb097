"""Scenario 5: NVML errors on one GPU: no permission, not supported, GPU lost.

The agent runs as a real process on simulated GPUs; faults reach it through the simulated backend's
faults file (``gpu/simfaults.py``), the way a driver starts and stops misbehaving underneath a running
agent. For each kind of error on GPU 1 while the policy asks for a new limit:

* GPU 1 shows ``state: Error`` with the error's reason in GpuNode status (``stale: true`` when it
  cannot even be read), the node's ``Ready`` condition turns False naming it, and the agent counts the
  error per GPU and reason in its metrics;
* the three other GPUs take the new limit as if nothing happened;
* when the error clears, GPU 1 takes the limit too and the node is Ready again.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from controlplane import ControlPlane
from faults import (
    FaultFleet,
    agent_metrics_port,
    http_get,
    limits,
    record,
    running_fleet,
    set_faults,
    sim_uuids,
    watch_until,
)
from kubeapi import apply_policy, create_namespace, create_pod, eventually, get_cluster_object
from kubernetes_asyncio import client
from prometheus_client.parser import text_string_to_metric_families

pytestmark = [pytest.mark.controlplane, pytest.mark.timeout(240)]

NODE = "rel-nvml-n1"
NS = "rel-nvml"
CASES = [  # (reason, faults of GPU 1, watts asked for meanwhile)
    ("NoPermission", {"set_power_limit": "NoPermission"}, 210.0),
    ("NotSupported", {"set_power_limit": "NotSupported"}, 220.0),
    ("GpuLost", {"read": "GpuLost", "set_power_limit": "GpuLost", "clocks": "GpuLost"}, 230.0),
]


@pytest.fixture(scope="module")
def fleet(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultFleet]:
    with running_fleet(control_plane, tmp_path_factory.mktemp("nvml"), [NODE]) as fleet:
        yield fleet


def _spec(watts: float) -> dict[str, Any]:
    return {"selector": {"podSelector": {"matchLabels": {"app": NS}}}, "limits": {"maxWatts": watts}}


def _errors_metric(fleet: FaultFleet, uuid: str, reason: str) -> float:
    _, body = http_get(f"http://127.0.0.1:{agent_metrics_port(fleet.agents[NODE])}/metrics")
    for family in text_string_to_metric_families(body):
        if family.name == "wattplane_agent_apply_errors":
            return sum(s.value for s in family.samples if s.labels["uuid"] == uuid and s.labels["reason"] == reason)
    return 0.0


async def test_one_failing_gpu_is_reported_the_others_keep_working(fleet: FaultFleet, api: client.ApiClient) -> None:
    uuids = sim_uuids(NODE)
    bad, good = uuids[1], [u for i, u in enumerate(uuids) if i != 1]
    await create_namespace(api, NS, {"team": NS})
    await create_pod(api, NS, "train", node=NODE, gpus=4, labels={"app": NS})
    await apply_policy(api, "rel-nvml", _spec(200))
    await watch_until(lambda: set(limits(fleet, NODE).values()) == {200.0}, within_s=40, what=f"cap\n{fleet.logs()}")

    previous = 200.0
    for reason, faults, watts in CASES:
        set_faults(fleet, NODE, {"1": faults})
        edited = time.monotonic()
        await apply_policy(api, "rel-nvml", _spec(watts))

        def others_applied(watts: float = watts, previous: float = previous) -> bool:
            now = limits(fleet, NODE)
            return all(now[u] == watts for u in good) and now[bad] == previous

        await watch_until(others_applied, within_s=20, what=f"{reason}: the healthy GPUs at {watts} W")
        record(f"5 GPU error {reason}", "edit → the 3 healthy GPUs at the new limit", time.monotonic() - edited)

        async def reported(reason: str = reason, watts: float = watts) -> dict[str, Any] | None:
            status = (await get_cluster_object(api, "gpunodes", NODE))["status"]
            gpus = {g["uuid"]: g for g in status["gpus"]}
            ready = next(c for c in status["conditions"] if c["type"] == "Ready")
            failing = gpus[bad]["state"] == "Error" and gpus[bad]["reason"] == reason
            healthy = all(gpus[u]["state"] == "Applied" and gpus[u]["powerLimitWatts"] == watts for u in good)
            return status if failing and healthy and ready["status"] == "False" else None

        status, _ = await eventually(reported, within_s=20, what=f"{reason} reported\n{fleet.logs()}")
        ready = next(c for c in status["conditions"] if c["type"] == "Ready")
        assert ready["reason"] == "GpuErrors" and "GPU 1" in ready["message"], ready
        assert next(g for g in status["gpus"] if g["uuid"] == bad)["stale"] is (reason == "GpuLost")
        assert _errors_metric(fleet, bad, reason) > 0
        assert all(_errors_metric(fleet, u, reason) == 0 for u in good)

        set_faults(fleet, NODE, {})
        cleared = time.monotonic()
        await watch_until(
            lambda watts=watts: limits(fleet, NODE)[bad] == watts, within_s=20, what=f"{reason}: GPU 1 recovered"
        )
        record(f"5 GPU error {reason}", "error cleared → GPU 1 at the limit", time.monotonic() - cleared)

        async def healthy_again(watts: float = watts) -> bool:
            status = (await get_cluster_object(api, "gpunodes", NODE))["status"]
            ready = next(c for c in status["conditions"] if c["type"] == "Ready")
            gpus = status["gpus"]
            applied = all(g["state"] == "Applied" and g["powerLimitWatts"] == watts and not g["stale"] for g in gpus)
            return ready["status"] == "True" and applied

        await eventually(healthy_again, within_s=20, what=f"{reason}: node Ready again\n{fleet.logs()}")
        record(f"5 GPU error {reason}", "error cleared → node Ready in GpuNode status", time.monotonic() - cleared)
        previous = watts
    assert fleet.agents[NODE].popen.poll() is None, "the agent died of a GPU error"
