"""Scenario 3: the API server restarts, and etcd freezes; both sides reconnect without stale writes.

The API server is the session's own (same port, same certificates, same etcd), so this module puts
everything back before it ends: the server is restarted in place and etcd is always resumed.

* **Restart.** kube-apiserver is stopped and started again. While it is away the agents go on
  controlling their GPUs (their liveness probe stays green); when it is back, an edit of the policy
  reaches the devices through the operator's and the agents' re-established watches.
* **etcd paused** (SIGSTOP): the API server accepts connections but cannot answer. The agents' control
  ticks must keep turning (status writes wait, device control does not), and after SIGCONT an edit
  again reaches the devices.
* **No stale writes**: each edit costs each GPU exactly one write, plan generations only grow, and
  once converged nothing is written again (no old plan replayed after a reconnect).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from controlplane import ControlPlane
from faults import FaultFleet, agent_metrics_port, http_get, limits, record, running_fleet, watch_until, writes
from kubeapi import apply_policy, connect, create_namespace, create_pod, eventually, get_cluster_object
from prometheus_client.parser import text_string_to_metric_families

pytestmark = [pytest.mark.controlplane, pytest.mark.timeout(300)]

NODES = ["rel-apiout-n1", "rel-apiout-n2"]
NS = "rel-apiout"
POLICY = "rel-apiout"


@pytest.fixture(scope="module")
def fleet(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultFleet]:
    with running_fleet(control_plane, tmp_path_factory.mktemp("apiout"), NODES) as fleet:
        yield fleet


def _spec(watts: float) -> dict[str, Any]:
    return {"selector": {"podSelector": {"matchLabels": {"app": NS}}}, "limits": {"maxWatts": watts}}


def _ticks(fleet: FaultFleet, node: str) -> float:
    port = agent_metrics_port(fleet.agents[node])
    status, body = http_get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200, body
    for family in text_string_to_metric_families(body):
        if family.name == "wattplane_agent_ticks":
            return float(family.samples[0].value)
    raise AssertionError("no wattplane_agent_ticks metric")


def _healthy(fleet: FaultFleet, node: str) -> bool:
    port = agent_metrics_port(fleet.agents[node])
    return http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200


def _all_at(fleet: FaultFleet, watts: float) -> bool:
    return all(w == watts for node in NODES for w in limits(fleet, node).values())


async def _generations(cp: ControlPlane) -> dict[str, int]:
    async with await connect(cp.kubeconfig) as api:
        return {n: int((await get_cluster_object(api, "gpunodes", n))["spec"]["planGeneration"]) for n in NODES}


async def _edit_and_converge(cp: ControlPlane, fleet: FaultFleet, watts: float, scenario: str) -> None:
    """Edit the cap; every GPU must take it with exactly one write, and keep it with none."""
    before = writes(fleet)
    generations = await _generations(cp)
    async with await connect(cp.kubeconfig) as api:
        edited = time.monotonic()
        await apply_policy(api, POLICY, _spec(watts))
    await watch_until(lambda: _all_at(fleet, watts), within_s=30, what=f"{watts} W on every GPU\n{fleet.logs()}")
    record(scenario, f"edit after reconnect → {watts:g} W on all 8 GPUs", time.monotonic() - edited)
    await asyncio.sleep(3.0)  # several ticks and status rounds: nothing more may be written
    after = writes(fleet)
    assert {u: after[u] - before[u] for u in after} == dict.fromkeys(after, 1), "a GPU was written more than once"
    assert _all_at(fleet, watts), "a stale plan was applied after convergence"
    later = await _generations(cp)
    assert all(later[n] > generations[n] for n in NODES), (generations, later)


async def test_api_server_restart_and_etcd_pause(control_plane: ControlPlane, fleet: FaultFleet) -> None:
    cp = control_plane
    async with await connect(cp.kubeconfig) as api:
        await create_namespace(api, NS, {"team": NS})
        for i, node in enumerate(NODES):
            await create_pod(api, NS, f"train-{i}", node=node, gpus=4, labels={"app": NS})
        await apply_policy(api, POLICY, _spec(200))
    await watch_until(lambda: _all_at(fleet, 200.0), within_s=40, what=f"first cap applied\n{fleet.logs()}")

    # 1. The API server goes away for a while and comes back on the same address.
    ticks_before = {n: _ticks(fleet, n) for n in NODES}
    down = cp.restart("kube-apiserver")
    record("3 API server restart", "kube-apiserver stop → /readyz again", down)
    assert all(_healthy(fleet, n) for n in NODES), "an agent turned unhealthy while the API server was away"
    assert all(_ticks(fleet, n) > ticks_before[n] for n in NODES), "control ticks stopped during the outage"
    back = time.monotonic()

    async def heartbeats_fresh() -> bool:
        async with await connect(cp.kubeconfig) as api:
            for node in NODES:
                gn = await get_cluster_object(api, "gpunodes", node)
                beat = datetime.fromisoformat(gn["status"]["heartbeat"].replace("Z", "+00:00"))
                if (datetime.now(UTC) - beat).total_seconds() > 3:
                    return False
        return True

    await eventually(heartbeats_fresh, within_s=60, what=f"agents writing status again\n{fleet.logs()}")
    record("3 API server restart", "API server ready → every agent's status fresh", time.monotonic() - back)
    await _edit_and_converge(cp, fleet, 220.0, "3 API server restart")


async def test_etcd_pause_then_edits_converge(control_plane: ControlPlane, fleet: FaultFleet) -> None:
    cp = control_plane
    paused_for = 8.0
    cp.pause("etcd")
    try:
        await asyncio.sleep(paused_for)
    finally:
        cp.resume("etcd")
    resumed = time.monotonic()
    await watch_until(lambda: cp.request("/readyz") == 200, within_s=30, what="API server ready after SIGCONT")
    await _edit_and_converge(cp, fleet, 240.0, "3 etcd paused 8 s")
    record("3 etcd paused 8 s", "SIGCONT → edit converged on every GPU", time.monotonic() - resumed)


async def test_agents_keep_controlling_while_the_api_server_hangs(
    control_plane: ControlPlane, fleet: FaultFleet
) -> None:
    cp = control_plane
    ticks_before = {n: _ticks(fleet, n) for n in NODES}
    paused_for = 12.0
    cp.pause("etcd")
    try:
        await asyncio.sleep(paused_for)
        ticks_during = {n: _ticks(fleet, n) - ticks_before[n] for n in NODES}
        healthy = {n: _healthy(fleet, n) for n in NODES}
    finally:
        cp.resume("etcd")
        await watch_until(lambda: cp.request("/readyz") == 200, within_s=30, what="API server ready after SIGCONT")
    # Tick period 0.5 s: in 12 s at least half the ticks must have run, whatever the API server does.
    assert all(t >= paused_for / 0.5 / 2 for t in ticks_during.values()), f"ticks while etcd paused: {ticks_during}"
    assert all(healthy.values()), f"agents unhealthy while etcd was paused: {healthy}"
