"""A rack power budget end to end: operator shares → node budgets → agents' fast loops → devices.

Three simulated A40 nodes labelled ``rack: budget-test`` run a mix of inference, normal and
low-priority training. The budget is below what they draw uncapped, so something must give: the
measured power of every node must come under its share, low-priority GPUs must be cut before
inference ones, and an impossible budget must be reported as such rather than hidden.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fleet import Fleet
from kubeapi import GROUP, VERSION, apply_policy, connect, create_namespace, create_pod, eventually, get_cluster_object
from kubernetes_asyncio import client

pytestmark = [pytest.mark.controlplane, pytest.mark.timeout(240)]

NS = "budget-ml"
BUDGET = 1500.0


@pytest.fixture
async def api(fleet: Fleet) -> AsyncIterator[client.ApiClient]:
    async with await connect(fleet.cp.kubeconfig) as api_client:
        yield api_client


def _condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == type_), None)


def _gpus_of(gn: dict[str, Any], pod: str) -> list[dict[str, Any]]:
    return [g for g in gn["status"].get("gpus", []) if any(p["name"] == pod for p in g.get("pods", []))]


async def test_budget_is_shared_enforced_by_priority_and_reported(fleet: Fleet, api: client.ApiClient) -> None:
    n1, n2, _ = fleet.nodes
    # Every fleet of the session is labelled rack r1; this test's rack gets a label of its own.
    core = client.CoreV1Api(api)
    for node in fleet.nodes:
        await core.patch_node(node, {"metadata": {"labels": {"rack": "budget-test"}}})
    await create_namespace(api, NS)
    await create_pod(api, NS, "serve", node=n1, gpus=2, annotations={"wattplane.io/workload": "inference"})
    await create_pod(api, NS, "batch", node=n1, gpus=2, annotations={"wattplane.io/priority": "low"})
    await create_pod(api, NS, "train", node=n2, gpus=4, annotations={"wattplane.io/workload": "training"})

    async def drawing() -> float | None:
        total = 0.0
        for node in fleet.nodes:
            gn = await get_cluster_object(api, "gpunodes", node)
            if len([g for g in gn.get("status", {}).get("gpus", []) if g.get("pods")]) != {n1: 4, n2: 4}.get(node, 0):
                return None
            total += gn["status"]["nodePowerWatts"]
        return total if total > BUDGET else None

    uncapped, _ = await eventually(drawing, within_s=60, what=f"busy GPUs drawing\n{fleet.logs()}")
    sys.stderr.write(f"\nbudget e2e: rack draws {uncapped:.0f} W uncapped, budget {BUDGET:.0f} W\n")

    await apply_policy(
        api,
        "rack-r1",
        {"budget": {"watts": BUDGET, "nodeSelector": {"matchLabels": {"rack": "budget-test"}}}},
    )

    last_seen: list[tuple[str, float, float]] = []

    async def within() -> dict[str, dict[str, Any]] | None:
        gns = {n: await get_cluster_object(api, "gpunodes", n) for n in fleet.nodes}
        budgets = [gn["spec"].get("nodeBudgetWatts") for gn in gns.values()]
        if any(b is None for b in budgets):
            return None
        assert sum(budgets) <= BUDGET + 1e-6, budgets
        for gn in gns.values():
            if gn["status"]["nodePowerWatts"] > gn["spec"]["nodeBudgetWatts"] * 1.01:
                last_seen[:] = [
                    (n, g["status"]["nodePowerWatts"], g["spec"]["nodeBudgetWatts"]) for n, g in gns.items()
                ]
                return None
        return gns

    try:
        gns, seconds = await eventually(within, within_s=60, what="every node within its share")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n(node, measured W, share W): {last_seen}\n{fleet.logs()}") from None
    total = sum(gn["status"]["nodePowerWatts"] for gn in gns.values())
    sys.stderr.write(f"budget e2e: rack at {total:.0f} W within {seconds:.1f} s of the policy\n")
    assert total <= BUDGET * 1.01

    # Priority: the inference GPUs keep at least the limit of the low-priority batch GPUs on the same node.
    serve, batch = _gpus_of(gns[n1], "serve"), _gpus_of(gns[n1], "batch")
    assert min(g["powerLimitWatts"] for g in serve) >= max(g["powerLimitWatts"] for g in batch)

    async def met() -> dict[str, Any] | None:
        ep = await get_cluster_object(api, "energypolicies", "rack-r1")
        cond = _condition(ep, "BudgetMet")
        return ep if cond is not None and cond["status"] == "True" else None

    ep, _ = await eventually(met, within_s=30, what="BudgetMet=True")
    assert ep["status"]["budget"]["watts"] == BUDGET
    assert ep["status"]["budget"]["nodes"] == 3

    # Below the sum of the GPUs' minimum limits no cut can help: said so, not hidden.
    await apply_policy(
        api,
        "rack-r1",
        {"budget": {"watts": 500.0, "nodeSelector": {"matchLabels": {"rack": "budget-test"}}}},
    )

    async def infeasible() -> dict[str, Any] | None:
        ep = await get_cluster_object(api, "energypolicies", "rack-r1")
        cond = _condition(ep, "BudgetMet")
        return ep if cond is not None and cond["status"] == "False" else None

    ep, _ = await eventually(infeasible, within_s=30, what="BudgetMet=False for an impossible budget")
    # 8 busy GPUs at their 100 W minimum limit, plus what the 4 idle ones draw (they cannot go lower).
    assert 8 * 100.0 < ep["status"]["budget"]["minimumWatts"] <= 12 * 100.0
    degraded = _condition(ep, "Degraded")
    assert degraded is not None and degraded["status"] == "True"

    # The policy goes: every node loses its share and cut order (a merge patch that merely left them out
    # would keep them on the server, and the agents would go on enforcing a budget nobody set).
    await client.CustomObjectsApi(api).delete_cluster_custom_object(GROUP, VERSION, "energypolicies", "rack-r1")

    async def released() -> bool | None:
        specs = [(await get_cluster_object(api, "gpunodes", n))["spec"] for n in fleet.nodes]
        return all("nodeBudgetWatts" not in s and "budgetPriorities" not in s for s in specs) or None

    await eventually(released, within_s=30, what=f"node budgets removed\n{fleet.logs()}")
