"""A scheduled budget window end to end: the target arrives when the window opens, ramps, holds, and lets go.

Three simulated A40 nodes run busy training. A policy holds one window a few seconds ahead, with a
target below the rack's draw and a ramp; nothing is capped before it opens; when it opens each node
gets its share and its part of the ramp, the rack's measured power comes under the target, and the
policy's status names the window. When it ends the shares go, the ramp stays written while the
agents climb back, and the rack returns to its uncapped draw.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fleet import Fleet, busy_rack, rack_gpunodes, rack_power
from kubeapi import GROUP, VERSION, apply_policy, connect, eventually, get_cluster_object
from kubernetes_asyncio import client

pytestmark = [pytest.mark.controlplane, pytest.mark.timeout(240)]

NS = "window-ml"
RACK = "window-test"


@pytest.fixture
async def api(fleet: Fleet) -> AsyncIterator[client.ApiClient]:
    async with await connect(fleet.cp.kubeconfig) as api_client:
        yield api_client


async def test_a_window_opens_ramps_holds_and_lets_go(fleet: Fleet, api: client.ApiClient) -> None:
    nodes = list(fleet.nodes)
    uncapped = await busy_rack(fleet, api, rack=RACK, namespace=NS)
    target = round(0.7 * uncapped)
    rate = (uncapped - target) / 6.0  # the cut takes about 6 s
    opens = datetime.now(UTC) + timedelta(seconds=8)
    closes = opens + timedelta(seconds=25)
    await apply_policy(
        api,
        "grid-window",
        {
            "budget": {
                "nodeSelector": {"matchLabels": {"rack": RACK}},
                "schedule": [
                    {
                        "name": "peak",
                        "start": opens.isoformat(),
                        "end": closes.isoformat(),
                        "watts": target,
                        "rampWattsPerSecond": rate,
                    }
                ],
            }
        },
    )
    sys.stderr.write(f"\nwindow e2e: rack draws {uncapped:.0f} W, target {target} W, ramp {rate:.0f} W/s\n")

    async def waiting() -> dict[str, Any] | None:
        ep = await get_cluster_object(api, "energypolicies", "grid-window")
        budget = ep.get("status", {}).get("budget")
        return budget if budget is not None and budget.get("nextChange") else None

    before, _ = await eventually(waiting, within_s=20, what="the policy reports its next window")
    assert before["watts"] == 0.0 and before.get("window") is None
    assert datetime.now(UTC) < opens, "the test's set-up ate the lead time"
    assert all("nodeBudgetWatts" not in gn["spec"] for gn in (await rack_gpunodes(api, nodes)).values())

    async def opened() -> dict[str, dict[str, Any]] | None:
        gns = await rack_gpunodes(api, nodes)
        return gns if all("nodeBudgetWatts" in gn["spec"] for gn in gns.values()) else None

    gns, _ = await eventually(opened, within_s=30, what=f"shares written when the window opens\n{fleet.logs()}")
    late = (datetime.now(UTC) - opens).total_seconds()
    sys.stderr.write(f"window e2e: shares written {late:.1f} s after the window opened\n")
    assert late < 3.0  # the operator woke for the window, not for its 5 s resync
    shares = [gn["spec"]["nodeBudgetWatts"] for gn in gns.values()]
    ramps = [gn["spec"]["nodeBudgetRampWattsPerSecond"] for gn in gns.values()]
    assert sum(shares) <= target + 1e-6
    assert sum(ramps) == pytest.approx(rate, rel=0.01)

    async def under() -> float | None:
        drawn = rack_power(await rack_gpunodes(api, nodes))
        return drawn if drawn <= target * 1.01 else None

    held, seconds = await eventually(under, within_s=30, what=f"rack under the target\n{fleet.logs()}")
    sys.stderr.write(f"window e2e: rack at {held:.0f} W {seconds:.1f} s after the shares\n")
    ep = await get_cluster_object(api, "energypolicies", "grid-window")
    assert ep["status"]["budget"]["window"] == "peak"
    events = await client.CoreV1Api(api).list_namespaced_event(
        "default", field_selector="involvedObject.name=grid-window"
    )
    assert "BudgetWindowStarted" in {e.reason for e in events.items}
    assert ep["status"]["budget"]["watts"] == pytest.approx(target)

    async def closed() -> dict[str, dict[str, Any]] | None:
        gns = await rack_gpunodes(api, nodes)
        return gns if all("nodeBudgetWatts" not in gn["spec"] for gn in gns.values()) else None

    gns, _ = await eventually(closed, within_s=60, what="shares removed when the window closes")

    async def told_end() -> bool | None:
        events = await client.CoreV1Api(api).list_namespaced_event(
            "default", field_selector="involvedObject.name=grid-window"
        )
        return "BudgetWindowEnded" in {e.reason for e in events.items} or None

    await eventually(told_end, within_s=20, what="an event saying the window ended")
    assert datetime.now(UTC) >= closes
    # The agents climb back along the ramp: its rate stays written for now.
    assert all(gn["spec"].get("nodeBudgetRampWattsPerSecond") for gn in gns.values())

    async def back() -> float | None:
        drawn = rack_power(await rack_gpunodes(api, nodes))
        return drawn if drawn >= 0.97 * uncapped else None

    restored, seconds = await eventually(back, within_s=60, what=f"rack back to its uncapped draw\n{fleet.logs()}")
    sys.stderr.write(f"window e2e: rack back at {restored:.0f} W {seconds:.1f} s after the shares went\n")
    await client.CustomObjectsApi(api).delete_cluster_custom_object(GROUP, VERSION, "energypolicies", "grid-window")
