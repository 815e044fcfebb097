"""A demand-response event from a real OpenADR VTN to the GPUs, across an operator SIGKILL.

openleadr's VTN runs on loopback; the operator (a real process) is the VEN of a policy whose budget
has ``demandResponse``. The VTN sends a SIMPLE level-3 event a few seconds ahead; the moment the VEN
has answered optIn, the operator is killed with SIGKILL and started again. The restarted operator
must still hold the event (it was saved before the answer), write each node its share and ramp when
the event starts, and the agents must bring the rack under the target within the ramp plus 2 s (p95
over the nodes); the VEN reports measured power to the VTN; at the event's end the shares go.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import signal
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from fleet import Fleet, busy_rack, rack_gpunodes
from kubeapi import GROUP, VERSION, apply_policy, connect, eventually, get_cluster_object
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from openadrvtn import running_vtn

pytestmark = [pytest.mark.controlplane, pytest.mark.timeout(300)]

NS = "dr-ml"
RACK = "dr-test"
POLICY = "grid-dr"
OPERATOR_NAMESPACE = "wattplane-system"  # the operator's default: where it keeps the events


@pytest.fixture
async def api(fleet: Fleet) -> AsyncIterator[client.ApiClient]:
    async with await connect(fleet.cp.kubeconfig) as api_client:
        with contextlib.suppress(ApiException):  # another test may have made it
            await client.CoreV1Api(api_client).create_namespace({"metadata": {"name": OPERATOR_NAMESPACE}})
        yield api_client


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]


async def test_an_event_survives_a_sigkill_and_reaches_the_gpus_within_the_ramp(
    fleet: Fleet, api: client.ApiClient
) -> None:
    nodes = list(fleet.nodes)
    # Agents that report every half second, so the test sees power when it moves.
    fleet.agent_env["WATTPLANE_AGENT_STATUS_INTERVAL_S"] = "0.5"
    for node in nodes:
        fleet.agents[node].stop()
        fleet.start_agent(node)
    uncapped = await busy_rack(fleet, api, rack=RACK, namespace=NS)
    standing = round(1.2 * uncapped)  # not binding on its own
    target = 0.5 * standing  # SIMPLE level 3 → 0.5 of the standing budget
    ramp_s = 4.0
    rate = (uncapped - target) / ramp_s

    async with running_vtn(poll_s=1) as vtn:
        answered = asyncio.Event()
        vtn.on_opt.append(lambda _event, _opt: answered.set())
        await apply_policy(
            api,
            POLICY,
            {
                "budget": {
                    "watts": standing,
                    "nodeSelector": {"matchLabels": {"rack": RACK}},
                    "demandResponse": {
                        "openadr": {"vtnUrl": vtn.url, "venName": "rack-dr", "pollIntervalSeconds": 1},
                        "rampWattsPerSecond": rate,
                    },
                }
            },
        )
        try:
            await eventually(lambda: _true(bool(vtn.registrations)), within_s=30, what="the VEN registered")
        except AssertionError:
            ep = await get_cluster_object(api, "energypolicies", POLICY)
            raise AssertionError(f"no registration; policy status {ep.get('status')}\n{fleet.logs()}") from None
        start = (datetime.now(UTC) + timedelta(seconds=12)).replace(microsecond=0)
        vtn.publish(
            event_id="dr-1",
            signal_name="SIMPLE",
            signal_type="level",
            payloads=[3],
            start=start,
            interval=timedelta(seconds=40),
        )
        await asyncio.wait_for(answered.wait(), timeout=20)
        assert vtn.opts["dr-1"] == "optIn"
        assert fleet.operator is not None
        fleet.operator.popen.send_signal(signal.SIGKILL)
        fleet.operator.popen.wait(timeout=15)
        fleet.start_operator()
        sys.stderr.write(
            f"\nDR e2e: rack {uncapped:.0f} W, target {target:.0f} W, ramp {rate:.0f} W/s; operator killed and"
            f" restarted {(start - datetime.now(UTC)).total_seconds():.1f} s before the event\n"
        )

        async def standing_shares() -> dict[str, float] | None:
            gns = await rack_gpunodes(api, nodes)
            shares = {n: gn["spec"].get("nodeBudgetWatts") for n, gn in gns.items()}
            return shares if all(v is not None for v in shares.values()) else None  # type: ignore[misc]

        before, _ = await eventually(standing_shares, within_s=20, what="the standing budget's shares")
        assert datetime.now(UTC) < start, "the restart ate the lead time"
        # Each node, from the event's start: when does its measured power first sit under its event share?
        reached: dict[str, float] = {}
        deadline = time.monotonic() + 40
        while len(reached) < len(nodes) and time.monotonic() < deadline:
            now = datetime.now(UTC)
            for node, gn in (await rack_gpunodes(api, nodes)).items():
                share = gn["spec"].get("nodeBudgetWatts")
                power = gn.get("status", {}).get("nodePowerWatts")
                # The event's share (half the standing budget), not the standing budget's.
                event_share = share is not None and share < 0.8 * before[node]
                if node not in reached and event_share and power is not None and power <= share * 1.01:
                    reached[node] = (now - start).total_seconds()
            await asyncio.sleep(0.25)
        assert len(reached) == len(nodes), f"nodes at their share: {reached}\n{fleet.logs()}"
        p95 = _p95(list(reached.values()))
        sys.stderr.write(
            f"DR e2e: nodes at their share {sorted(reached.values())} s after the start (p95 {p95:.1f} s)\n"
        )
        assert p95 <= ramp_s + 2.0 + 1.0  # + 1 s: the agents publish every 0.5 s and the test polls every 0.25 s

        ep = await get_cluster_object(api, "energypolicies", POLICY)
        assert ep["status"]["budget"]["window"] == "dr-1/0"
        assert ep["status"]["budget"]["watts"] == pytest.approx(target, rel=1e-3)

        async def reported() -> list[tuple[datetime, float]] | None:
            return vtn.reports if any(v < uncapped * 0.8 for _, v in vtn.reports) else None

        reports, _ = await eventually(reported, within_s=30, what="a telemetry report of the cut power")
        sys.stderr.write(f"DR e2e: {len(reports)} report value(s) at the VTN, last {reports[-1][1]:.0f} W\n")

        async def released() -> bool | None:
            gns = await rack_gpunodes(api, nodes)
            shares = {n: gn["spec"].get("nodeBudgetWatts") for n, gn in gns.items()}
            return all(v is None or v >= 0.8 * before[n] for n, v in shares.items()) or None

        await eventually(released, within_s=60, what=f"event shares gone after the end\n{fleet.logs()}")
        await client.CustomObjectsApi(api).delete_cluster_custom_object(GROUP, VERSION, "energypolicies", POLICY)


async def _true(value: bool) -> bool | None:
    return value or None
