"""SLO-guarded capping of an inference pod end to end: probe down while latency holds, back off on a load step.

A vLLM stand-in (the serving model behind vLLM's exact exposition) runs behind a pod on a simulated A40
node and follows the power limit the node's agent puts on the pod's GPU. A policy with a ``serving``
section (p90 TPOT objective 60 ms) governs the pod; the operator reads the engine every 2 s. The
controller must lower the pod's cap below the default while the objectives hold, keep the served p90
under the objective, raise the cap within one scrape plus one agent tick of a load step that threatens
it (or queues), and publish joules per output token in the policy's status and its metrics.
"""

from __future__ import annotations

import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from fleet import Fleet
from kubeapi import GROUP, VERSION, apply_policy, connect, eventually, get_cluster_object
from kubernetes_asyncio import client
from vllmstub import VllmStub, serve_behind_pod

pytestmark = [pytest.mark.controlplane, pytest.mark.timeout(300)]

NS = "slo-llm"
POD = "llm-slo-0"
POLICY = "slo-serving"
SCRAPE_S = 2.0
TICK_S = 0.5  # the fleet agents' tick
TPOT_SLO_S = 0.060


@pytest.fixture
async def api(fleet: Fleet) -> AsyncIterator[client.ApiClient]:
    async with await connect(fleet.cp.kubeconfig) as api_client:
        yield api_client


def _gpu(gn: dict[str, Any], index: int) -> dict[str, Any]:
    return next(g for g in gn["status"]["gpus"] if g["index"] == index)


async def test_a_serving_pod_is_capped_while_its_slo_holds_and_released_on_a_load_step(
    fleet: Fleet, api: client.ApiClient
) -> None:
    # Serving scrapes every 2 s, agents reporting every half second.
    assert fleet.operator is not None
    fleet.operator.stop()
    fleet.operator_env["WATTPLANE_OPERATOR_SERVING_SCRAPE_INTERVAL_S"] = str(SCRAPE_S)
    fleet.start_operator()
    node = fleet.nodes[0]
    fleet.agent_env["WATTPLANE_AGENT_STATUS_INTERVAL_S"] = "0.5"
    fleet.agents[node].stop()
    fleet.start_agent(node)

    async with VllmStub(rate_rps=3.0, seed=11) as stub, aiohttp.ClientSession() as http:
        index = await serve_behind_pod(
            api, stub, node=node, state_file=fleet.state_file(node), namespace=NS, pod=POD, app="slo-llm"
        )
        await apply_policy(
            api,
            POLICY,
            {
                "selector": {"podSelector": {"matchLabels": {"app": "slo-llm"}}},
                "serving": {
                    "tpotP90Ms": TPOT_SLO_S * 1000,
                    "ttftP90Ms": 3000,
                    "settleSeconds": 0,
                    "backoffSeconds": 60,
                    "queueBound": 8,
                },
            },
        )

        # Probing: the cap comes down below the default while the served p90 stays under the objective.
        seen_p90: list[float] = []

        async def capped() -> float | None:
            await stub.advanced(1)
            if stub.last is not None:
                seen_p90.append(stub.last.tpot_p90_s)
            gn = await get_cluster_object(api, "gpunodes", node)
            targets = [t for t in gn["spec"].get("gpus", []) if t.get("section") == "serving"]
            limit = _gpu(gn, index).get("powerLimitWatts")
            if targets and limit is not None and targets[0]["powerLimitWatts"] <= 225.0 and limit <= 225.0:
                return float(limit)
            return None

        try:
            limit, seconds = await eventually(capped, within_s=90, what="the serving cap below 225 W on the GPU")
        except AssertionError as exc:
            ep = await get_cluster_object(api, "energypolicies", POLICY)
            raise AssertionError(f"{exc}\npolicy status: {ep.get('status')}\n{fleet.logs()}") from exc
        sys.stderr.write(
            f"\nserving e2e: cap {limit:.0f} W on the pod's A40 after {seconds:.1f} s of probing;"
            f" model p90 TPOT at the last knob {seen_p90[-1] * 1e3:.1f} ms (objective {TPOT_SLO_S * 1e3:.0f} ms)\n"
        )
        assert max(seen_p90) < TPOT_SLO_S  # the probe never took the served p90 past the objective

        # A load step that the capped GPU cannot take: the cap goes up within a scrape and a tick.
        before = limit
        stub.set_rate(20.0)
        stepped = time.monotonic()

        async def raised() -> float | None:
            gn = await get_cluster_object(api, "gpunodes", node)
            limit = _gpu(gn, index).get("powerLimitWatts")
            return float(limit) if limit is not None and limit > before else None

        after, _ = await eventually(raised, within_s=30, interval=0.1, what=f"the cap raised\n{fleet.logs()}")
        reaction = time.monotonic() - stepped
        sys.stderr.write(
            f"serving e2e: load step 3 -> 20 req/s, cap {before:.0f} -> {after:.0f} W after {reaction:.1f} s"
            f" (scrape {SCRAPE_S:.0f} s + tick {TICK_S} s; the stub's window needs a scrape to show the step)\n"
        )
        # One scrape to see the step, one more at most because the step can fall just after a scrape,
        # one agent tick, and the agent's status interval for the test to see it.
        assert reaction <= 2 * SCRAPE_S + TICK_S + 0.5 + 1.0

        async def joules_per_token() -> dict[str, Any] | None:
            ep = await get_cluster_object(api, "energypolicies", POLICY)
            serving = ep.get("status", {}).get("serving") or {}
            return serving if serving.get("windowJoulesPerOutputToken") is not None else None

        serving, _ = await eventually(joules_per_token, within_s=60, what="J/token in the policy's status")
        assert serving["windowJoulesPerOutputToken"] > 0
        async with http.get(fleet.operator_metrics_url) as response:
            text = await response.text()
        assert f'wattplane_serving_output_tokens_total{{engine="vllm",namespace="{NS}",pod="{POD}"}}' in text
        await client.CustomObjectsApi(api).delete_cluster_custom_object(GROUP, VERSION, "energypolicies", POLICY)
