"""``promtool check metrics`` finds nothing to say about the agent's or the operator's /metrics page.

Both pages are fetched over real loopback HTTP with every family populated (GPUs, pods, a node
budget, a device error; policies with and without a budget, a working and a failing carbon source),
so promtool sees every metric name, type, help text and label name the processes can emit.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp
from agenthttp import running_agent
from promtool import check_metrics, require_promtool
from wattplane.agent.gpu.errors import GpuNoPermissionError
from wattplane.api.v1alpha1.energypolicy import BudgetStatus, CarbonStatus
from wattplane.carbon.config import SourceConfig, TraceOptions
from wattplane.carbon.service import CarbonService
from wattplane.operator.metrics import registry_for, serve_metrics
from wattplane.planner.plan import Plan, PolicyReport


async def test_agent_metrics_page_is_promtool_clean(tmp_path: Path) -> None:
    promtool = require_promtool()
    async with running_agent(tmp_path) as agent:
        devices = agent.backend.devices()
        plan = [{"uuid": d.identity.uuid, "powerLimitWatts": d.constraints().max_watts} for d in devices]
        agent.loop._adopt({"spec": {"gpus": plan, "nodeBudgetWatts": 300.0}})
        devices[2].inject_fault("set_power_limit", GpuNoPermissionError("needs CAP_SYS_ADMIN"))
        await agent.tick()
        await agent.tick()
        status, page = await agent.get("/metrics")
    assert status == 200
    for family in ("wattplane_pod_gpu_energy_joules_total", "wattplane_node_power_budget_watts{"):
        assert family in page  # the page promtool sees has the populated families
    result = check_metrics(promtool, page)
    assert (result.returncode, result.problems) == (0, [])


async def test_agent_metrics_page_without_budget_or_ticks_is_promtool_clean(tmp_path: Path) -> None:
    promtool = require_promtool()
    async with running_agent(tmp_path) as agent:
        _, page = await agent.get("/metrics")  # before any tick: NaN budget, zeroed counters
    assert 'wattplane_node_power_budget_watts{hostname="gpu-node-7"} NaN' in page
    result = check_metrics(promtool, page)
    assert (result.returncode, result.problems) == (0, [])


class _Facts:
    rounds = 12
    round_errors = 1
    api_writes = 40
    events_posted = 3
    last_round_seconds = 0.004
    last_plan = Plan(
        nodes={},
        policies={
            "cap": PolicyReport(name="cap", generation=1, gpus=4, allocated_watts=1200.0),
            "rack-a": PolicyReport(
                name="rack-a",
                generation=3,
                gpus=8,
                allocated_watts=2000.0,
                budget=BudgetStatus(
                    watts=2400.0,
                    measured_watts=2500.0,
                    window="dr-1",
                    shortfall_watts=100.0,
                    ramp_watts_per_second=40.0,
                ),
                budget_met=True,
                carbon=CarbonStatus(intensity=210.0, weight=0.4),
            ),
        },
    )


async def test_operator_metrics_page_is_promtool_clean(tmp_path: Path) -> None:
    promtool = require_promtool()
    trace = tmp_path / "grid.csv"
    trace.write_text("timestamp,gco2_per_kwh\n2024-01-01T00:00:00Z,210\n2024-01-01T01:00:00Z,190\n")
    async with CarbonService() as carbon:
        await carbon.get(SourceConfig(provider="trace", zone="lab", trace=TraceOptions(path=trace)))
        await carbon.get(SourceConfig(provider="trace", zone="gone", trace=TraceOptions(path=tmp_path / "none.csv")))
        runner = await serve_metrics(registry_for(_Facts(), carbon), "127.0.0.1", 0)
        try:
            port = runner.addresses[0][1]
            async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as response:
                assert response.status == 200
                page = await response.text()
        finally:
            await runner.cleanup()
    for family in ("wattplane_policy_budget_watts{", "wattplane_grid_carbon_intensity_grams_per_kwh{"):
        assert family in page
    assert 'wattplane_policy_budget_window_active{policy="rack-a",window="dr-1"} 1.0' in page
    assert 'wattplane_policy_budget_shortfall_watts{policy="rack-a"} 100.0' in page
    assert 'reason="ConfigError",source="trace",zone="gone"} 1.0' in page
    assert 'reason="Timeout",source="trace",zone="lab"} 0.0' in page  # every reason from the start
    result = check_metrics(promtool, page)
    assert (result.returncode, result.problems) == (0, [])
