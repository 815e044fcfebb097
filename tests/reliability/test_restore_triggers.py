"""Scenario 6: every way wattplane lets go puts each GPU back at its exact journaled prior state.

The GPUs start from a site's own settings, not the defaults: some hand-set limits, some clock locks.
A policy sets a limit and a clock lock on all of them. Then each trigger in turn, and every GPU must
be back at exactly what it had before (limit and clock lock), measured on the devices:

* the policy is deleted: within 5 s of the delete call;
* the chart is uninstalled: the agent gets SIGTERM with ``restoreOnUninstall`` (``RESTORE_ON_EXIT``)
  and restores before it exits: within 5 s of the signal;
* the operator is gone beyond the plan TTL (10 s here): the agents' fail-safe restores within TTL + one
  tick of the plan's last renewal, and not before the TTL has run out.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from controlplane import ControlPlane
from faults import FaultFleet, devices, kill, record, running_fleet, seed_devices, sim_uuids, watch_until
from kubeapi import apply_policy, create_namespace, create_pod, delete_cluster_object, get_cluster_object
from kubernetes_asyncio import client

pytestmark = [pytest.mark.controlplane, pytest.mark.timeout(240)]

NODES = ["rel-restore-n1", "rel-restore-n2"]
NS = "rel-restore"
POLICY = "rel-restore"
TTL_S = 10
TICK_S = 0.5
#: The site's own settings: node → GPU index → (limit, clock lock); the rest run at 300 W, unlocked.
SITE = {NODES[0]: {0: (250.0, None), 2: (280.0, (900, 1500))}, NODES[1]: {1: (260.0, (1000, 1400))}}
SPEC = {
    "selector": {"podSelector": {"matchLabels": {"app": NS}}},
    "limits": {"maxWatts": 150, "lockedSmClockMHz": {"minMHz": 600, "maxMHz": 1200}},
}


def _prior(node: str) -> dict[str, tuple[float, list[int] | None]]:
    site = SITE.get(node, {})
    out = {}
    for i, uuid in enumerate(sim_uuids(node)):
        watts, clocks = site.get(i, (300.0, None))
        out[uuid] = (watts, list(clocks) if clocks else None)
    return out


def _state(fleet: FaultFleet, node: str) -> dict[str, tuple[float, list[int] | None]]:
    return {u: (float(d["power_limit_watts"]), d["locked_clocks_mhz"]) for u, d in devices(fleet, node).items()}


def _capped(fleet: FaultFleet, node: str) -> bool:
    return all(s == (150.0, [600, 1200]) for s in _state(fleet, node).values())


@pytest.fixture(scope="module")
def fleet(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultFleet]:
    def seed(fleet: FaultFleet) -> None:
        for node, settings in SITE.items():
            seed_devices(fleet.state_file(node), node, settings)

    with running_fleet(
        control_plane,
        tmp_path_factory.mktemp("restore"),
        NODES,
        agent_env={"WATTPLANE_AGENT_RESTORE_ON_EXIT": "true", "WATTPLANE_AGENT_TICK_S": str(TICK_S)},
        operator_env={"WATTPLANE_OPERATOR_PLAN_TTL_S": str(TTL_S)},
        before_agents=seed,
    ) as fleet:
        yield fleet


async def _gone(api: client.ApiClient) -> None:
    """Wait until the deleted policy is really gone (its finalizer released), so it can be created anew."""

    async def absent() -> bool:
        try:
            await get_cluster_object(api, "energypolicies", POLICY)
        except client.exceptions.ApiException as exc:
            return exc.status == 404
        return False

    await watch_until(absent, within_s=15, interval=0.1, what="policy deleted")


async def _cap_everything(api: client.ApiClient, fleet: FaultFleet) -> None:
    await apply_policy(api, POLICY, SPEC)
    for node in NODES:
        await watch_until(lambda n=node: _capped(fleet, n), within_s=30, what=f"{node} capped\n{fleet.logs()}")


async def test_policy_delete_restores_exact_prior_state(fleet: FaultFleet, api: client.ApiClient) -> None:
    await create_namespace(api, NS, {"team": NS})
    for i, node in enumerate(NODES):
        await create_pod(api, NS, f"train-{i}", node=node, gpus=4, labels={"app": NS})
    assert all(_state(fleet, n) == _prior(n) for n in NODES), "the site's own settings were touched before any policy"
    await _cap_everything(api, fleet)

    deleted = time.monotonic()
    await delete_cluster_object(api, "energypolicies", POLICY)
    await watch_until(
        lambda: all(_state(fleet, n) == _prior(n) for n in NODES), within_s=5, what="exact prior state after delete"
    )
    record(
        "6 restore on policy delete", "delete → exact prior limit and clocks on all 8 GPUs", time.monotonic() - deleted
    )
    for node in NODES:
        await watch_until(
            lambda n=node: json.loads(fleet.journal(n).read_text())["gpus"] == {}, within_s=5, what="journal empty"
        )
    await _gone(api)


async def test_sigterm_with_restore_on_exit_restores_before_exiting(fleet: FaultFleet, api: client.ApiClient) -> None:
    await _cap_everything(api, fleet)
    node = NODES[1]
    signalled = time.monotonic()
    code = kill(fleet.agents[node], signal.SIGTERM)
    await watch_until(lambda: _state(fleet, node) == _prior(node), within_s=5, what="exact prior state after SIGTERM")
    seconds = time.monotonic() - signalled
    record("6 restore on uninstall (agent SIGTERM)", "SIGTERM → agent exited, exact prior state on its GPUs", seconds)
    assert code == 0, fleet.agents[node].tail()
    assert _capped(fleet, NODES[0]), "the other node's agent let go too"
    fleet.start_agent(node)  # reinstalled: the plan is still there, so the caps come back
    await watch_until(lambda: _capped(fleet, node), within_s=30, what="caps back after the agent returned")


async def test_plan_expires_when_the_operator_is_gone(fleet: FaultFleet, api: client.ApiClient) -> None:
    await _cap_everything(api, fleet)
    await asyncio.sleep(TTL_S / 3 + 1)  # so the plan has been renewed at least once
    assert fleet.operator is not None
    kill(fleet.operator)
    killed_wall, killed = time.time(), time.monotonic()
    issued: dict[str, float] = {}
    for node in NODES:
        spec: dict[str, Any] = (await get_cluster_object(api, "gpunodes", node))["spec"]
        issued[node] = datetime.fromisoformat(spec["issuedAt"].replace("Z", "+00:00")).timestamp()
        assert spec["ttlSeconds"] == TTL_S

    restored_at: dict[str, float] = {}

    def all_restored() -> bool:
        for node in NODES:
            if node not in restored_at and _state(fleet, node) == _prior(node):
                restored_at[node] = time.time()
        return len(restored_at) == len(NODES)

    await watch_until(all_restored, within_s=TTL_S + 5, interval=0.02, what="fail-safe restore after the TTL")
    record("6 restore on plan TTL (operator gone)", "operator SIGKILL → exact prior state (TTL 10 s)",
           time.monotonic() - killed)  # fmt: skip
    for node in NODES:
        expiry = issued[node] + TTL_S
        late = restored_at[node] - expiry
        record("6 restore on plan TTL (operator gone)", f"plan expiry → {node} restored", late)
        assert late >= -0.05, f"{node} let go {-late:.2f} s before its plan expired"
        assert late <= TICK_S + 0.5, f"{node} restored {late:.2f} s after expiry (TTL + one tick allowed)"
        assert restored_at[node] - killed_wall <= TTL_S + TICK_S + 0.5

    fleet.start_operator()  # the operator returns: plans are renewed and the caps come back
    returned = time.monotonic()
    for node in NODES:
        await watch_until(lambda n=node: _capped(fleet, n), within_s=30, what="caps back with the operator")
    record("6 restore on plan TTL (operator gone)", "operator back → caps back", time.monotonic() - returned)
    await delete_cluster_object(api, "energypolicies", POLICY)
    await watch_until(lambda: all(_state(fleet, n) == _prior(n) for n in NODES), within_s=5, what="final restore")
