"""Prometheus metrics of the node, built from the latest status at scrape time.

Names carry base units (``_watts``, ``_joules_total``, ``_hertz``, ``_celsius``, ``_ratio``); labels
match dcgm-exporter's where they overlap (``gpu``, ``UUID``, ``modelName``, ``Hostname``, and
``namespace``/``pod``/``container``), so existing dashboards can join the two.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from wattplane.agent.engine import ApplyStats
from wattplane.api.v1alpha1.gpunode import GpuNodeSpec, GpuNodeStatus

_GPU_LABELS = ["gpu", "UUID", "modelName", "Hostname"]


class AgentCollector(Collector):
    """Reads the agent's latest :class:`GpuNodeStatus` and plan when Prometheus scrapes."""

    def __init__(
        self,
        hostname: str,
        status: Callable[[], GpuNodeStatus | None],
        spec: Callable[[], GpuNodeSpec],
        stats: Callable[[], ApplyStats],
    ) -> None:
        self._hostname = hostname
        self._status = status
        self._spec = spec
        self._stats = stats

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        """Yield every metric family from the current snapshot."""
        status = self._status()
        spec = self._spec()
        power = GaugeMetricFamily("wattplane_gpu_power_watts", "GPU power draw.", labels=_GPU_LABELS)
        energy = CounterMetricFamily("wattplane_gpu_energy_joules", "GPU energy since driver load.", labels=_GPU_LABELS)
        limit = GaugeMetricFamily("wattplane_gpu_power_limit_watts", "GPU power limit in force.", labels=_GPU_LABELS)
        target = GaugeMetricFamily(
            "wattplane_gpu_power_limit_target_watts", "Power limit the plan asks for.", labels=_GPU_LABELS
        )
        clock = GaugeMetricFamily("wattplane_gpu_sm_clock_hertz", "SM clock.", labels=_GPU_LABELS)
        util = GaugeMetricFamily("wattplane_gpu_utilization_ratio", "GPU utilisation.", labels=_GPU_LABELS)
        temp = GaugeMetricFamily("wattplane_gpu_temperature_celsius", "GPU temperature.", labels=_GPU_LABELS)
        throttle = GaugeMetricFamily(
            "wattplane_gpu_throttle_active", "Clock-event reasons active (1).", labels=[*_GPU_LABELS, "reason"]
        )
        pod_energy = CounterMetricFamily(
            "wattplane_pod_gpu_energy_joules",
            "GPU energy attributed to a pod.",
            labels=["namespace", "pod", "Hostname"],
        )
        budget = GaugeMetricFamily("wattplane_node_power_budget_watts", "Node GPU power budget.", labels=["Hostname"])
        node_power = GaugeMetricFamily("wattplane_node_gpu_power_watts", "Node GPU power.", labels=["Hostname"])
        if status is not None:
            for gpu in status.gpus:
                labels = [str(gpu.index), gpu.uuid, gpu.model, self._hostname]
                power.add_metric(labels, gpu.power_watts)
                if gpu.energy_joules is not None:
                    energy.add_metric(labels, gpu.energy_joules)
                limit.add_metric(labels, gpu.power_limit_watts)
                if gpu.target_watts is not None:
                    target.add_metric(labels, gpu.target_watts)
                if gpu.sm_clock_mhz is not None:
                    clock.add_metric(labels, gpu.sm_clock_mhz * 1e6)
                if gpu.utilization is not None:
                    util.add_metric(labels, gpu.utilization)
                if gpu.temperature_celsius is not None:
                    temp.add_metric(labels, gpu.temperature_celsius)
                for reason in gpu.throttle_reasons:
                    throttle.add_metric([*labels, reason], 1.0)
            for entry in status.pod_energy:
                pod_energy.add_metric([entry.namespace, entry.name, self._hostname], entry.energy_joules)
            node_power.add_metric([self._hostname], status.node_power_watts)
        if spec.node_budget_watts is not None:
            budget.add_metric([self._hostname], spec.node_budget_watts)
        stats = self._stats()
        writes = CounterMetricFamily("wattplane_agent_device_writes", "Device writes performed.")
        writes.add_metric([], stats.writes)
        errors = CounterMetricFamily("wattplane_agent_apply_errors", "Device operations that failed.")
        errors.add_metric([], stats.errors)
        yield from (power, energy, limit, target, clock, util, temp, throttle, pod_energy, budget, node_power)
        yield from (writes, errors)
