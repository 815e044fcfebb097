"""The vLLM stand-in behind a pod on the real API server follows the clock lock the agent applies.

A pod on a fake node names the stub's page in ``wattplane.io/serving-metrics``; the node's agent
(simulated A40s) reports which GPU it holds; the stub follows that board in the node's state file. A
policy that locks the SM clock low must then show up, through the agent's write, as a higher p90
inter-token latency on the page (bucket increases, as PromQL's ``histogram_quantile`` reads them), and
the operator must read the page as a vLLM engine.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator

import aiohttp
import pytest
from fleet import Fleet
from kubeapi import apply_policy, connect, eventually, get_cluster_object
from kubernetes_asyncio import client
from vllmstub import VllmStub, histogram_buckets, histogram_quantile, serve_behind_pod

pytestmark = [pytest.mark.controlplane, pytest.mark.timeout(240)]

NS = "stub-llm"
POD = "llm-stub-0"
ITL = "vllm:inter_token_latency_seconds"


@pytest.fixture
async def api(fleet: Fleet) -> AsyncIterator[client.ApiClient]:
    async with await connect(fleet.cp.kubeconfig) as api_client:
        yield api_client


async def _p90_itl(session: aiohttp.ClientSession, stub: VllmStub, steps: int = 4) -> float:
    async with session.get(stub.metrics_url) as response:
        before = await response.text()
    await stub.advanced(steps)
    async with session.get(stub.metrics_url) as response:
        after = await response.text()
    return histogram_quantile(0.9, histogram_buckets(after, ITL), histogram_buckets(before, ITL))


async def test_the_stub_slows_down_when_the_agent_locks_its_pods_gpu_clock(fleet: Fleet, api: client.ApiClient) -> None:
    node = fleet.nodes[0]
    async with VllmStub(rate_rps=5.0, seed=7) as stub, aiohttp.ClientSession() as session:
        index = await serve_behind_pod(
            api, stub, node=node, state_file=fleet.state_file(node), namespace=NS, pod=POD, app="stub-llm"
        )
        await stub.advanced(2)
        free = await _p90_itl(session, stub)
        assert stub.last is not None and stub.last.knob.kind == "none", stub.last
        assert free < 0.05

        await apply_policy(
            api,
            "stub-llm-slow",
            {
                "selector": {"podSelector": {"matchLabels": {"app": "stub-llm"}}},
                "limits": {"maxWatts": 290, "lockedSmClockMHz": {"minMHz": 210, "maxMHz": 450}},
            },
        )

        async def locked() -> bool:
            await stub.advanced(1)
            return stub.last is not None and stub.last.knob.kind == "clock"

        try:
            _, seconds = await eventually(locked, within_s=60, what="the agent's clock lock at the stub")
        except AssertionError as exc:
            gn = await get_cluster_object(api, "gpunodes", node)
            policy = await get_cluster_object(api, "energypolicies", "stub-llm-slow")
            raise AssertionError(
                f"{exc}\nGpuNode spec: {gn.get('spec')}\nGPU: {gn['status']['gpus'][index]}\n"
                f"policy status: {policy.get('status')}\n{fleet.logs()}"
            ) from exc
        assert stub.last is not None and stub.last.board_knob is not None
        assert stub.last.board_knob.locked_clock_max_mhz == 450.0
        slow = await _p90_itl(session, stub)
        assert slow >= 0.075 > free
        assert slow == pytest.approx(stub.last.tpot_p90_s, rel=0.25)
        sys.stderr.write(
            f"\nvllm stub e2e: GPU {index} of {node} locked after {seconds:.1f} s, p90 ITL "
            f"{free * 1e3:.1f} -> {slow * 1e3:.1f} ms (model {stub.last.tpot_p90_s * 1e3:.1f} ms)\n"
        )

        # The operator reads the stub as a vLLM engine: its serving series for the pod appear.
        async def exported() -> bool:
            async with session.get(fleet.operator_metrics_url) as response:
                text = await response.text()
            return f'engine="vllm",namespace="{NS}",pod="{POD}"' in text

        await eventually(exported, within_s=90, what=f"the operator's serving series for the pod\n{fleet.logs()}")
