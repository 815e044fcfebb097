"""Prometheus metrics of the node, built from the latest snapshot at scrape time.

Nothing is computed for a scrape: the collector reads the status the last tick built, the plan, and
the engine's and loop's counters. Names carry base units (``_watts``, ``_joules_total``, ``_hertz``,
``_celsius``, ``_ratio``, ``_seconds``). Label names are Prometheus' snake_case (``gpu``, ``uuid``,
``model_name``, ``hostname``, ``namespace``/``pod``/``container``): dcgm-exporter's camelCase
``UUID``/``modelName``/``Hostname`` carry the same values, so the two join after a ``label_replace``
(docs/operations.md shows the query). A GPU that could not be read in the last tick exports no
measurements (no stale values dressed as fresh), only its state.

Series that alerts depend on exist from the first scrape, so ``increase()`` and comparisons see the
first event instead of a series appearing already at 1: ``wattplane_agent_apply_errors_total`` has a
zero for every GPU and error reason; ``wattplane_node_power_budget_watts`` is NaN while the plan sets
no budget (every comparison with it is false, so "power above budget" alerts stay quiet) and
``wattplane_node_power_budget_set`` says whether one is set (0/1).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from wattplane.agent.gpu.errors import ERROR_REASONS
from wattplane.agent.stats import AgentSnapshot, LatencyHistogram
from wattplane.agent.status import THROTTLE_BITS
from wattplane.api.v1alpha1.gpunode import GpuNodeStatus, GpuStatus

GPU_LABELS = ["gpu", "uuid", "model_name", "hostname"]
GPU_STATES = ("Default", "Applied", "DryRun", "Error")
HOST_LABELS = ["hostname"]


class AgentCollector(Collector):
    """Reads the agent's latest snapshot when Prometheus scrapes."""

    def __init__(self, hostname: str, snapshot: Callable[[], AgentSnapshot]) -> None:
        self._hostname = hostname
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        """Yield every metric family from the current snapshot."""
        snap = self._snapshot()
        yield from self._gpu_families(snap.status)
        yield from self._node_families(snap)
        yield from self._agent_families(snap)

    def _gpu_families(self, status: GpuNodeStatus | None) -> Iterator[Metric]:
        def gauge(name: str, doc: str, extra: list[str] | None = None) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, labels=[*GPU_LABELS, *(extra or [])])

        power = gauge("wattplane_gpu_power_watts", "GPU power draw, watts.")
        energy = CounterMetricFamily(
            "wattplane_gpu_energy_joules", "GPU energy counter since driver load, joules.", labels=GPU_LABELS
        )
        limit = gauge("wattplane_gpu_power_limit_watts", "GPU power limit in force, watts.")
        target = gauge("wattplane_gpu_power_limit_target_watts", "Power limit the plan asks for (clamped), watts.")
        budget_limit = gauge(
            "wattplane_gpu_power_limit_budget_watts", "Limit the node budget imposes below the target, watts."
        )
        clock = gauge("wattplane_gpu_sm_clock_hertz", "SM clock, hertz.")
        util = gauge("wattplane_gpu_utilization_ratio", "GPU utilisation, ratio 0-1.")
        temp = gauge("wattplane_gpu_temperature_celsius", "GPU temperature, degrees Celsius.")
        throttle = gauge(
            "wattplane_gpu_throttle_active", "Clock-event reason active (1) or not (0), by NVML reason.", ["reason"]
        )
        state = gauge("wattplane_gpu_state", "The GPU's state in wattplane (1 for the current one).", ["state"])
        pod_energy = CounterMetricFamily(
            "wattplane_pod_gpu_energy_joules",
            "GPU energy attributed to a pod's container, joules.",
            labels=["namespace", "pod", "container", "hostname"],
        )
        for gpu in status.gpus if status is not None else ():
            labels = [str(gpu.index), gpu.uuid, gpu.model, self._hostname]
            for name in GPU_STATES:
                state.add_metric([*labels, name], 1.0 if gpu.state == name else 0.0)
            if gpu.target_watts is not None:
                target.add_metric(labels, gpu.target_watts)
            if gpu.budget_limit_watts is not None:
                budget_limit.add_metric(labels, gpu.budget_limit_watts)
            if gpu.stale:
                continue
            _measurements(gpu, labels, power, energy, limit, clock, util, temp, throttle)
        for entry in status.pod_energy if status is not None else ():
            pod_energy.add_metric([entry.namespace, entry.name, entry.container, self._hostname], entry.energy_joules)
        yield from (power, energy, limit, target, budget_limit, clock, util, temp, throttle, state, pod_energy)

    def _node_families(self, snap: AgentSnapshot) -> Iterator[Metric]:
        host = [self._hostname]
        budget = GaugeMetricFamily(
            "wattplane_node_power_budget_watts", "Node GPU power budget in the plan, watts.", labels=HOST_LABELS
        )
        budget_set = GaugeMetricFamily(
            "wattplane_node_power_budget_set",
            "1 when the plan sets a node GPU power budget, 0 when not (the budget gauge is then NaN).",
            labels=HOST_LABELS,
        )
        watts = snap.spec.node_budget_watts
        budget.add_metric(host, math.nan if watts is None else watts)
        budget_set.add_metric(host, 0.0 if watts is None else 1.0)
        in_force = GaugeMetricFamily(
            "wattplane_node_power_budget_in_force_watts",
            "The budget the node's loop holds now: the plan's share, or a point on the ramp towards it"
            " (NaN: none held).",
            labels=HOST_LABELS,
        )
        held = snap.budget.budget_watts if snap.budget is not None else None
        in_force.add_metric(host, math.nan if held is None else held)
        node_power = GaugeMetricFamily(
            "wattplane_node_gpu_power_watts", "Measured power of the node's GPUs, watts.", labels=HOST_LABELS
        )
        if snap.status is not None:
            node_power.add_metric(host, snap.status.node_power_watts)
        limited = GaugeMetricFamily(
            "wattplane_node_budget_limited_gpus",
            "GPUs held below their target by the node budget (0 without a budget).",
            labels=HOST_LABELS,
        )
        feasible = GaugeMetricFamily(
            "wattplane_node_budget_feasible",
            "1 when the budget can be met (or none is set), 0 when not even every GPU at its minimum meets it.",
            labels=HOST_LABELS,
        )
        decision = snap.budget if snap.budget is not None and snap.budget.budget_watts is not None else None
        limited.add_metric(host, 0.0 if decision is None else len(decision.limits))
        feasible.add_metric(host, 1.0 if decision is None or decision.feasible else 0.0)
        cuts = CounterMetricFamily(
            "wattplane_node_budget_cuts", "Ticks in which the node budget lowered limits.", labels=HOST_LABELS
        )
        cuts.add_metric(host, snap.apply.budget_cuts)
        yield from (budget, budget_set, in_force, node_power, limited, feasible, cuts)

    def _agent_families(self, snap: AgentSnapshot) -> Iterator[Metric]:
        stats = snap.apply
        writes = CounterMetricFamily("wattplane_agent_device_writes", "Device writes performed (limits, clock locks).")
        writes.add_metric([], stats.writes)
        errors = CounterMetricFamily(
            "wattplane_agent_apply_errors",
            "Device operations that failed, by GPU and reason.",
            labels=["uuid", "hostname", "reason"],
        )
        counted: dict[tuple[str, str], int] = {
            (uuid, reason): 0 for uuid in _gpu_uuids(snap) for reason in ERROR_REASONS
        }
        counted.update(stats.errors_by_gpu)
        for (uuid, reason), count in sorted(counted.items()):
            errors.add_metric([uuid, self._hostname, reason], count)
        restores = CounterMetricFamily("wattplane_agent_restores", "GPUs put back to their journaled prior state.")
        restores.add_metric([], stats.restores)
        yield from (writes, errors, restores)
        yield _histogram(
            "wattplane_agent_apply_duration_seconds",
            "Time to bring one GPU to its limit: journal, device writes, read-back.",
            stats.apply_latency,
        )
        if snap.loop is not None:
            ticks = CounterMetricFamily("wattplane_agent_ticks", "Control ticks run.")
            ticks.add_metric([], snap.loop.ticks)
            tick_errors = CounterMetricFamily("wattplane_agent_tick_errors", "Control ticks that raised.")
            tick_errors.add_metric([], snap.loop.tick_errors)
            yield from (ticks, tick_errors)
            yield _histogram(
                "wattplane_agent_tick_duration_seconds",
                "Wall time of one control tick: reads, budget, writes, status.",
                snap.loop.tick_latency,
            )


def _measurements(
    gpu: GpuStatus,
    labels: list[str],
    power: GaugeMetricFamily,
    energy: CounterMetricFamily,
    limit: GaugeMetricFamily,
    clock: GaugeMetricFamily,
    util: GaugeMetricFamily,
    temp: GaugeMetricFamily,
    throttle: GaugeMetricFamily,
) -> None:
    power.add_metric(labels, gpu.power_watts)
    limit.add_metric(labels, gpu.power_limit_watts)
    if gpu.energy_joules is not None:
        energy.add_metric(labels, gpu.energy_joules)
    if gpu.sm_clock_mhz is not None:
        clock.add_metric(labels, gpu.sm_clock_mhz * 1e6)
    if gpu.utilization is not None:
        util.add_metric(labels, gpu.utilization)
    if gpu.temperature_celsius is not None:
        temp.add_metric(labels, gpu.temperature_celsius)
    active = set(gpu.throttle_reasons)
    for reason in THROTTLE_BITS.values():  # every reason, 0 or 1: absent series break rate() and alerts
        throttle.add_metric([*labels, reason], 1.0 if reason in active else 0.0)


def _gpu_uuids(snap: AgentSnapshot) -> list[str]:
    """Every GPU the agent manages: from the backend, else from the last status."""
    if snap.gpu_uuids:
        return list(snap.gpu_uuids)
    return [gpu.uuid for gpu in snap.status.gpus] if snap.status is not None else []


def _histogram(name: str, doc: str, hist: LatencyHistogram) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc)
    family.add_metric([], buckets=hist.cumulative(), sum_value=hist.total_seconds)
    return family
