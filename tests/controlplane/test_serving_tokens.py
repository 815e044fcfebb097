"""Joules per output token of an inference pod, end to end on the real API server.

The "serving engine" is a loopback HTTP server exposing a vLLM V1 metrics page whose generation-token
counter grows at a fixed rate. The pod asks for a GPU on a fake node; the node's agent (simulated
GPUs) attributes the GPU's energy to it in ``GpuNode.status.podEnergy``; the operator scrapes the
page, joins the two and exports the counters on its own metrics endpoint. Their ratio must be the
GPU's power over the token rate, and an engine restart (its counter back to zero) must never make the
operator's counters go back.
"""

from __future__ import annotations

import sys
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from fleet import Fleet
from kubeapi import apply_policy, connect, create_namespace, create_pod, eventually, get_cluster_object
from kubernetes_asyncio import client
from loopback import serving
from prometheus_client.parser import text_string_to_metric_families

pytestmark = [pytest.mark.controlplane, pytest.mark.timeout(240)]

NS = "serve-llm"
POD = "llm-0"
TOKENS_PER_S = 400.0


class Engine:
    """A vLLM-like server: output tokens grow at :data:`TOKENS_PER_S` since its (re)start."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def restart(self) -> None:
        self.started = time.monotonic()

    async def metrics(self, _: web.Request) -> web.Response:
        tokens = (time.monotonic() - self.started) * TOKENS_PER_S
        labels = 'engine="0",model_name="m"'
        body = (
            "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.\n"
            "# TYPE vllm:num_requests_waiting gauge\n"
            f"vllm:num_requests_waiting{{{labels}}} 1.0\n"
            "# HELP vllm:generation_tokens_total Number of generation tokens processed.\n"
            "# TYPE vllm:generation_tokens_total counter\n"
            f"vllm:generation_tokens_total{{{labels}}} {tokens}\n"
            f"vllm:generation_tokens_created{{{labels}}} 1.7e+09\n"
        )
        return web.Response(text=body, content_type="text/plain")


@pytest.fixture
async def api(fleet: Fleet) -> AsyncIterator[client.ApiClient]:
    async with await connect(fleet.cp.kubeconfig) as api_client:
        yield api_client


@pytest.fixture
async def engine() -> AsyncIterator[tuple[Engine, str]]:
    server = Engine()
    app = web.Application()
    app.router.add_get("/metrics", server.metrics)
    async with serving(app) as url:
        yield server, f"{url}/metrics"


async def _operator_series(fleet: Fleet) -> dict[str, float]:
    """The operator's serving series for the pod, by sample name."""
    async with aiohttp.ClientSession() as session, session.get(fleet.operator_metrics_url) as response:
        text = await response.text()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("wattplane_serving_") and sample.labels.get("pod", POD) == POD:
                out[sample.name] = sample.value
    return out


async def test_the_operator_exports_joules_per_token_of_an_inference_pod(
    fleet: Fleet, api: client.ApiClient, engine: tuple[Engine, str]
) -> None:
    server, url = engine
    node = fleet.nodes[0]
    await create_namespace(api, NS, {"team": "serving"})
    await create_pod(
        api,
        NS,
        POD,
        node=node,
        gpus=1,
        labels={"app": "llm"},
        annotations={"wattplane.io/workload": "inference", "wattplane.io/serving-metrics": url},
    )
    await apply_policy(
        api, "serving", {"selector": {"podSelector": {"matchLabels": {"app": "llm"}}}, "limits": {"maxWatts": 280}}
    )

    async def counted() -> dict[str, float] | None:
        series = await _operator_series(fleet)
        tokens = series.get("wattplane_serving_output_tokens_total", 0.0)
        return series if tokens >= 10 * TOKENS_PER_S else None

    series, seconds = await eventually(counted, within_s=120, what=f"tokens counted\n{fleet.logs()}")
    joules = series["wattplane_serving_gpu_energy_joules_total"]
    per_token = joules / series["wattplane_serving_output_tokens_total"]
    gn = await get_cluster_object(api, "gpunodes", node)
    (gpu,) = [g for g in gn["status"]["gpus"] if any(p["name"] == POD for p in g.get("pods", []))]
    # J/token = the GPU's power / the token rate: the simulated GPU draws between its idle floor and its limit.
    low, high = 0.5 * gpu["constraints"]["minWatts"] / TOKENS_PER_S, gpu["powerLimitWatts"] * 1.2 / TOKENS_PER_S
    sys.stderr.write(
        f"\nserving e2e: {per_token:.3f} J/token after {seconds:.0f} s (GPU at {gpu['powerWatts']:.0f} W, "
        f"{TOKENS_PER_S:g} tokens/s)\n"
    )
    assert low <= per_token <= high, (per_token, low, high, gpu["powerWatts"])
    assert series["wattplane_serving_joules_per_output_token"] == pytest.approx(
        gpu["powerWatts"] / TOKENS_PER_S, rel=0.5
    )

    # The engine restarts: its counter starts over. The operator's counters must not go back.
    before = series["wattplane_serving_output_tokens_total"]
    server.restart()

    async def past_restart() -> dict[str, float] | None:
        now = await _operator_series(fleet)
        assert now["wattplane_serving_output_tokens_total"] >= before  # never backwards
        return now if now["wattplane_serving_output_tokens_total"] > before + 2 * TOKENS_PER_S else None

    after, _ = await eventually(past_restart, within_s=60, what=f"counting after the restart\n{fleet.logs()}")
    assert after["wattplane_serving_gpu_energy_joules_total"] > joules
    assert fleet.operator is not None and "output-token counter went backwards" in fleet.operator.tail(400)
