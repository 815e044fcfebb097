"""Scenario 8: two policies fight over the same pods and are edited rapidly.

Both select the same pod. Forty edits in quick succession swap their priorities and caps back and
forth; the final state names a clear winner (the higher priority). Then a tie (equal priorities),
created in both orders. Asserted:

* **deterministic winner**: the higher priority; on a tie the policy whose name sorts first, whatever
  the order of creation;
* **no flapping**: a burst of edits costs each GPU at most a few writes (the operator debounces), and
  once converged nothing is written again, the plan generation stands still, and only the winner is
  reported as governing the pod.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
from controlplane import ControlPlane
from faults import FaultFleet, limits, record, running_fleet, watch_until, writes
from kubeapi import apply_policy, create_namespace, create_pod, delete_cluster_object, get_cluster_object
from kubernetes_asyncio import client

pytestmark = [pytest.mark.controlplane, pytest.mark.timeout(240)]

NODE = "rel-fight-n1"
NS = "rel-fight"
A, B = "rel-fight-a", "rel-fight-b"
EDITS = 40


@pytest.fixture(scope="module")
def fleet(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultFleet]:
    with running_fleet(control_plane, tmp_path_factory.mktemp("fight"), [NODE]) as fleet:
        yield fleet


def _spec(priority: int, watts: float) -> dict[str, Any]:
    return {
        "selector": {"podSelector": {"matchLabels": {"app": NS}}},
        "priority": priority,
        "limits": {"maxWatts": watts},
    }


async def _edit(api: client.ApiClient, name: str, spec: dict[str, Any]) -> None:
    """``kubectl patch --type merge``: an edit that never conflicts with the operator's status writes."""
    await client.CustomObjectsApi(api).patch_cluster_custom_object(
        "wattplane.io", "v1alpha1", "energypolicies", name, {"spec": spec}, _content_type="application/merge-patch+json"
    )


async def _settled(api: client.ApiClient, fleet: FaultFleet, watts: float, winner: str, what: str) -> float:
    """Wait for ``watts`` on every GPU; then 5 s of nothing: no write, no new plan, the winner in status."""
    started = time.monotonic()
    await watch_until(lambda: set(limits(fleet, NODE).values()) == {watts}, within_s=30, what=f"{what}: {watts} W")
    seconds = time.monotonic() - started
    await asyncio.sleep(1.0)  # let the last status round land
    before_writes = writes(fleet)
    before_plan = (await get_cluster_object(api, "gpunodes", NODE))["spec"]
    await asyncio.sleep(5.0)
    after_plan = (await get_cluster_object(api, "gpunodes", NODE))["spec"]
    assert writes(fleet) == before_writes, f"{what}: GPUs written again after convergence (flapping)"
    assert after_plan["planGeneration"] == before_plan["planGeneration"], f"{what}: the plan kept changing"
    assert {t["policy"] for t in after_plan["gpus"]} == {winner}, after_plan["gpus"]
    for name in (A, B):
        status = (await get_cluster_object(api, "energypolicies", name)).get("status", {})
        assert status.get("matchedPods") == (1 if name == winner else 0), (name, status)
    return seconds


async def test_rapid_edits_of_competing_policies(fleet: FaultFleet, api: client.ApiClient) -> None:
    await create_namespace(api, NS, {"team": NS})
    await create_pod(api, NS, "shared", node=NODE, gpus=4, labels={"app": NS})
    await apply_policy(api, A, _spec(10, 150))
    await apply_policy(api, B, _spec(5, 250))
    await _settled(api, fleet, 150.0, A, "initial")

    # A burst: every edit flips who wins and what it asks for.
    start_writes = writes(fleet)
    burst_started = time.monotonic()
    for i in range(EDITS):
        a_wins = i % 2 == 1
        await _edit(api, A, _spec(10 if a_wins else 1, 150 + (i % 5) * 10))
        await _edit(api, B, _spec(1 if a_wins else 10, 250 - (i % 7) * 10))
    last_edit = time.monotonic()
    # The last edit (i = 39) left A at priority 10 and 190 W: A wins.
    seconds = await _settled(api, fleet, 190.0, A, "after the burst")
    record("8 competing policies", f"{2 * EDITS} edits in {last_edit - burst_started:.1f} s → converged", seconds)
    burst_writes = {u: w - start_writes[u] for u, w in writes(fleet).items()}
    assert all(w >= 1 for w in burst_writes.values()), burst_writes
    # Without debouncing every edit would reach the GPUs; with it a burst costs a handful of writes.
    assert all(w <= EDITS // 4 for w in burst_writes.values()), f"writes per GPU during the burst: {burst_writes}"

    # A tie: the name that sorts first wins, in whichever order the two were created.
    for first, second in ((A, B), (B, A)):
        await delete_cluster_object(api, "energypolicies", A)
        await delete_cluster_object(api, "energypolicies", B)
        await watch_until(lambda: set(limits(fleet, NODE).values()) == {300.0}, within_s=20, what="released")
        for name in (A, B):
            await _absent(api, name)
        watts = {A: 170.0, B: 230.0}
        await apply_policy(api, first, _spec(5, watts[first]))
        await apply_policy(api, second, _spec(5, watts[second]))
        seconds = await _settled(api, fleet, 170.0, A, f"tie, {first} created first")
        record("8 competing policies", f"tie, {first} created first → name order winner", seconds)


async def _absent(api: client.ApiClient, name: str) -> None:
    async def gone() -> bool:
        try:
            await get_cluster_object(api, "energypolicies", name)
        except client.exceptions.ApiException as exc:
            return exc.status == 404
        return False

    await watch_until(gone, within_s=15, interval=0.1, what=f"{name} deleted")
