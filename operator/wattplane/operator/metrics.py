"""The operator's Prometheus endpoint: planning rounds, API writes, policies, the carbon feed, serving pods.

A custom collector reads the reconciler's counters and the last plan at scrape time, so the figures
are always current and nothing is updated on the hot path. The carbon metrics come from
:class:`wattplane.carbon.metrics.CarbonCollector`, which the chart's "carbon signal stale" alert uses.
Served by a small aiohttp app in the operator's own event loop (no extra thread).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry
from wattplane.carbon.metrics import CarbonCollector
from wattplane.carbon.service import CarbonService
from wattplane.operator.tokens import TokenLedger
from wattplane.planner.plan import Plan


class ReconcilerFacts(Protocol):
    """What the collector reads from the reconciler."""

    @property
    def rounds(self) -> int:
        """Planning rounds completed."""
        ...

    @property
    def round_errors(self) -> int:
        """Planning rounds that failed."""
        ...

    @property
    def api_writes(self) -> int:
        """Writes to the API server (patches and events)."""
        ...

    @property
    def events_posted(self) -> int:
        """Of those, the Events posted (bad annotations, shadowed pods)."""
        ...

    @property
    def last_round_seconds(self) -> float:
        """Duration of the last planning round, seconds."""
        ...

    @property
    def last_plan(self) -> Plan | None:
        """The last plan."""
        ...


class OperatorCollector(Collector):
    """Planning-loop and per-policy figures from the reconciler."""

    def __init__(self, facts: ReconcilerFacts) -> None:
        self._facts = facts

    def collect(self) -> Iterable[Metric]:
        """Metric families for one scrape."""
        f = self._facts
        yield CounterMetricFamily("wattplane_operator_rounds", "Planning rounds completed.", value=f.rounds)
        yield CounterMetricFamily(
            "wattplane_operator_round_errors", "Planning rounds that failed (retried).", value=f.round_errors
        )
        yield CounterMetricFamily(
            "wattplane_operator_api_writes", "Patches and events written to the API server.", value=f.api_writes
        )
        yield CounterMetricFamily(
            "wattplane_operator_events_posted",
            "Events posted to the API server (part of the API writes).",
            value=f.events_posted,
        )
        yield GaugeMetricFamily(
            "wattplane_operator_round_duration_seconds",
            "Duration of the last planning round.",
            value=f.last_round_seconds,
        )
        plan = f.last_plan
        allocated = GaugeMetricFamily(
            "wattplane_policy_allocated_watts", "Sum of the GPU limits a policy assigned.", labels=["policy"]
        )
        gpus = GaugeMetricFamily("wattplane_policy_gpus", "GPUs a policy sets.", labels=["policy"])
        budget = GaugeMetricFamily(
            "wattplane_policy_budget_watts",
            "The power target a budget holds now (its standing budget, or the window in force; 0: none).",
            labels=["policy"],
        )
        shortfall = GaugeMetricFamily(
            "wattplane_policy_budget_shortfall_watts",
            "How far the covered GPUs' measured power is above the target in force.",
            labels=["policy"],
        )
        window = GaugeMetricFamily(
            "wattplane_policy_budget_window_active",
            "1 while a scheduled or demand-response window sets the policy's target.",
            labels=["policy", "window"],
        )
        ramp = GaugeMetricFamily(
            "wattplane_policy_budget_ramp_watts_per_second",
            "The ramp the agents follow into or out of a window (0: none).",
            labels=["policy"],
        )
        measured = GaugeMetricFamily(
            "wattplane_policy_budget_measured_watts", "Measured power of the GPUs a budget covers.", labels=["policy"]
        )
        met = GaugeMetricFamily("wattplane_policy_budget_met", "1 when the budget is met.", labels=["policy"])
        weight = GaugeMetricFamily(
            "wattplane_policy_carbon_weight", "Performance weight w from the carbon curve.", labels=["policy"]
        )
        for name, report in sorted((plan.policies if plan is not None else {}).items()):
            allocated.add_metric([name], report.allocated_watts)
            gpus.add_metric([name], report.gpus)
            if report.budget is not None:
                budget.add_metric([name], report.budget.watts)
                measured.add_metric([name], report.budget.measured_watts)
                met.add_metric([name], 1.0 if report.budget_met else 0.0)
                shortfall.add_metric([name], report.budget.shortfall_watts)
                ramp.add_metric([name], report.budget.ramp_watts_per_second or 0.0)
                if report.budget.window is not None:
                    window.add_metric([name, report.budget.window], 1.0)
            if report.carbon is not None and report.carbon.weight is not None:
                weight.add_metric([name], report.carbon.weight)
        yield from (allocated, gpus, budget, measured, met, shortfall, window, ramp, weight)


class ServingCollector(Collector):
    """Per serving pod: output tokens and the GPU energy of the same intervals, as counters.

    ``rate(wattplane_serving_gpu_energy_joules_total[w]) / rate(wattplane_serving_output_tokens_total[w])``
    is joules per output token over any window ``w``: both counters grow over the same intervals only
    (the ones in which the engine and the agent were both read). The operator's counters start at 0
    when it starts (``rate`` handles that like any counter reset). The gauge gives the operator's own
    recent figure (its 5-minute window) and is absent when that window holds no token.
    """

    def __init__(self, ledger: TokenLedger) -> None:
        self._ledger = ledger

    def collect(self) -> Iterable[Metric]:
        """Metric families for one scrape."""
        pod_engine = ["namespace", "pod", "engine"]
        output = CounterMetricFamily(
            "wattplane_serving_output_tokens", "Output tokens a serving pod's engine generated.", labels=pod_engine
        )
        prompt = CounterMetricFamily(
            "wattplane_serving_prompt_tokens", "Prompt tokens a serving pod's engine processed.", labels=pod_engine
        )
        energy = CounterMetricFamily(
            "wattplane_serving_gpu_energy_joules",
            "GPU energy of a serving pod over the intervals its tokens were counted, joules.",
            labels=["namespace", "pod"],
        )
        per_token = GaugeMetricFamily(
            "wattplane_serving_joules_per_output_token",
            "GPU joules per output token of a serving pod over the operator's recent window.",
            labels=pod_engine,
        )
        unmeasured = GaugeMetricFamily(
            "wattplane_serving_unmeasured_pods", "Serving pods with no joined figures in the last round."
        )
        problems = 0
        for (namespace, name), pod in sorted(self._ledger.pods.items()):
            problems += pod.problem is not None
            if pod.engine is None:
                continue
            labels = [namespace, name, pod.engine]
            output.add_metric(labels, pod.output_tokens)
            prompt.add_metric(labels, pod.prompt_tokens)
            energy.add_metric([namespace, name], pod.energy_joules)
            window = pod.window_joules_per_output_token
            if window is not None:
                per_token.add_metric(labels, window)
        unmeasured.add_metric([], problems)
        yield from (output, prompt, energy, per_token, unmeasured)


def registry_for(facts: ReconcilerFacts, carbon: CarbonService, tokens: TokenLedger | None = None) -> CollectorRegistry:
    """A registry with the operator's and the carbon feed's collectors (and the serving pods', if given)."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(OperatorCollector(facts))
    registry.register(CarbonCollector(carbon))
    if tokens is not None:
        registry.register(ServingCollector(tokens))
    return registry


async def serve_metrics(registry: CollectorRegistry, host: str, port: int) -> web.AppRunner:
    """Start ``/metrics`` on ``host:port``; the caller cleans the runner up."""

    async def metrics(_: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
