"""Counters and latency histograms the agent keeps for its metrics.

Plain data filled in by the engine and the loop, read by the Prometheus collector at scrape time, so
neither the engine nor the loop depends on prometheus-client.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from wattplane.agent.budget import BudgetDecision
from wattplane.api.v1alpha1.gpunode import GpuNodeSpec, GpuNodeStatus

#: Bucket bounds, seconds: NVML calls take well under a millisecond, a stuck driver takes seconds.
LATENCY_BUCKETS_S: tuple[float, ...] = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 2.0)


@dataclass
class LatencyHistogram:
    """A fixed-bucket histogram of durations, seconds."""

    bounds: tuple[float, ...] = LATENCY_BUCKETS_S
    counts: list[int] = field(default_factory=list)
    """Observations per bucket (not cumulative); the last bucket is ``+Inf``."""
    total_seconds: float = 0.0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, seconds: float) -> None:
        """Count one duration."""
        index = next((i for i, bound in enumerate(self.bounds) if seconds <= bound), len(self.bounds))
        self.counts[index] += 1
        self.total_seconds += seconds

    @property
    def count(self) -> int:
        """Number of observations."""
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, int]]:
        """``(upper bound, observations at or below it)`` pairs, ending with ``+Inf``, as Prometheus wants."""
        out: list[tuple[str, int]] = []
        running = 0
        for bound, count in zip([*map(repr, self.bounds), "+Inf"], self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out


@dataclass
class ApplyStats:
    """What the engine did to the devices, since the agent started."""

    writes: int = 0
    """Device writes performed (limit or clock lock)."""
    errors: int = 0
    """Device operations that failed."""
    restores: int = 0
    """GPUs put back to their journaled prior state."""
    last_errors: dict[str, str] = field(default_factory=dict)
    """Reason of the last failure, by GPU UUID, while the GPU keeps failing."""
    errors_by_gpu: Counter[tuple[str, str]] = field(default_factory=Counter)
    """Failures by (GPU UUID, reason)."""
    apply_latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    """Time to bring one GPU to its limit: the device writes, their journal entry and the read-back."""
    budget_cuts: int = 0
    """Ticks in which the node budget lowered at least one limit."""


@dataclass
class LoopStats:
    """How the control loop itself is doing."""

    ticks: int = 0
    tick_errors: int = 0
    """Ticks that raised an unexpected exception (logged, reported, and the loop went on)."""
    tick_latency: LatencyHistogram = field(default_factory=LatencyHistogram)


@dataclass(frozen=True)
class AgentSnapshot:
    """Everything a scrape reports, as of the last tick."""

    status: GpuNodeStatus | None
    spec: GpuNodeSpec
    apply: ApplyStats
    loop: LoopStats | None = None
    budget: BudgetDecision | None = None
    gpu_uuids: tuple[str, ...] = ()
    """Every GPU the agent manages (per-GPU counters start at zero for each)."""
