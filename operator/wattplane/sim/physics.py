"""What a running job does with the limits its GPUs are at: progress rate and power per GPU.

The workload curve gives, at limit ``l``, the rate ``r(l)`` (epochs per second) and the draw ``P(l)`` of
a GPU working flat out. Between events everything is constant:

* **Training** on ``n`` GPUs advances at the slowest GPU's rate (data-parallel steps wait for the
  slowest), ``r = min_g r(l_g)``. A faster GPU works ``r / r(l_g)`` of the time and idles the rest,
  drawing ``idle + busy · (P(l_g) − idle)``: which is why slowing the non-stragglers saves energy.
* **Inference** must serve a demand ``d`` (fraction of one GPU's uncapped throughput per GPU). The
  service's capacity is ``c = min_g r(l_g) / r_uncapped``; it serves ``d`` when it can keep up and has no
  backlog, else ``c`` (the backlog grows while ``d > c`` and drains while ``d < c``). GPUs work
  ``served / capacity_g`` of the time. Work is counted in uncapped GPU-seconds served.

* **LLM serving** (a service with an :class:`~wattplane.sim.llm.LlmService`, on H100s): each GPU is a
  replica whose power, tokens and latencies follow :mod:`wattplane.sim.inference` at the board's power
  limit and locked SM clock and the service's current request rate (:mod:`wattplane.sim.llm`). Progress
  stays in the unit above (demand served, counted as the fraction of offered requests served), so
  services of both kinds add up in the throughput figures; tokens and latencies are in ``serving``.

Energy and carbon are attributed per job between events (:meth:`RunningJob.flush`): exact integrals of
piecewise-constant power. With a price trace (:mod:`wattplane.sim.price`) the job's energy cost is
integrated the same way.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from wattplane.planner.snapshot import PodKey
from wattplane.sim.catalog import Workload
from wattplane.sim.devices import SimGpu
from wattplane.sim.jobs import JobSpec
from wattplane.sim.llm import LlmService

#: Backlog below this (uncapped GPU-seconds) counts as none: float noise from draining.
BACKLOG_EPS = 1e-9
_J_PER_KWH = 3.6e6
_J_PER_MWH = 3.6e9


@dataclass(eq=False)
class RunningJob:
    """A job holding GPUs, with its accumulators (flushed lazily)."""

    spec: JobSpec
    workload: Workload
    gpus: list[SimGpu]
    pods: tuple[PodKey, ...]
    #: GPUs of each pod, in ``pods`` order.
    pod_gpus: tuple[tuple[SimGpu, ...], ...]
    start_s: float
    #: Epochs to do (training) or ``inf`` (inference).
    work: float
    #: When an inference service's lifetime ends (``inf``: never; training: ``inf``).
    end_s: float = math.inf
    progress: float = 0.0
    rate: float = 0.0
    power: float = 0.0
    energy_j: float = 0.0
    carbon_g: float = 0.0
    since: float = 0.0
    demand: float = 0.0
    demand_total: float = 0.0
    backlog: float = 0.0
    backlog_rate: float = 0.0
    #: Bumped whenever the rate changes, so stale completion events are recognised.
    version: int = 0
    finished_s: float | None = None
    limit_seconds: float = 0.0
    """∫ mean limit of the job's GPUs dt (for the mean-cap receipt)."""
    limits_mean: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)
    #: Energy cost so far, in the price trace's currency (only with a price trace).
    cost: float = 0.0
    #: Price per MWh at a virtual second; set by :class:`wattplane.sim.price.PriceMeter` when the job starts.
    price_at: Callable[[float], float] | None = None
    #: LLM serving state and counters (LLM services on GPUs the serving model covers), else ``None``.
    serving: LlmService | None = None

    @property
    def training(self) -> bool:
        """Whether this is a training job (fixed work) rather than a service."""
        return self.spec.kind == "training"

    def flush(self, t: float, intensity: float) -> None:
        """Integrate energy, carbon, progress and backlog from ``since`` to ``t``."""
        dt = t - self.since
        if dt <= 0:
            return
        joules = self.power * dt
        self.energy_j += joules
        self.carbon_g += joules * intensity / _J_PER_KWH
        if self.price_at is not None:
            self.cost += joules * self.price_at(self.since) / _J_PER_MWH
        self.progress += self.rate * dt
        self.limit_seconds += self.limits_mean * dt
        if self.serving is not None:
            self.demand_total += self.demand * len(self.gpus) * dt
            self.serving.flush(self.since, t)
        elif not self.training:
            self.demand_total += self.demand * len(self.gpus) * dt
            self.backlog = max(0.0, self.backlog + self.backlog_rate * dt)
            if self.backlog < BACKLOG_EPS:
                self.backlog = 0.0
        self.since = t

    def progress_at(self, t: float) -> float:
        """Progress at ``t`` without flushing (``t`` not before ``since``)."""
        return self.progress + self.rate * (t - self.since)

    def operate(self, t: float) -> None:
        """Recompute rate and per-GPU power from the limits in force (call after :meth:`flush`)."""
        if self.serving is not None:
            self._operate_serving(t)
            return
        curve = self.workload.curve
        rates = [curve.rate(g.limit) for g in self.gpus]
        slowest = min(rates)
        top = 1.0 / curve.uncapped_seconds_per_unit
        if self.training:
            self.rate = slowest
            busy = [slowest / r for r in rates]
        else:
            capacity = slowest / top
            served = capacity if (self.backlog > 0.0 or self.demand > capacity) else self.demand
            n = len(self.gpus)
            self.rate = served * n
            self.backlog_rate = (self.demand - served) * n
            busy = [min(1.0, served * top / r) for r in rates]
        total = 0.0
        limits = 0.0
        for g, b in zip(self.gpus, busy, strict=True):
            idle = g.model.idle_watts
            watts = idle + b * (curve.power(g.limit) - idle)
            g.set_power(watts, b, g.limit < curve.top_limit, t)
            total += watts
            limits += g.limit
        self.power = total
        self.limits_mean = limits / len(self.gpus)
        self.version += 1

    def _operate_serving(self, t: float) -> None:
        """Per-replica steady states at each board's power limit and locked clock (:mod:`wattplane.sim.llm`)."""
        serving = self.serving
        assert serving is not None
        knobs = []
        for g in self.gpus:
            cap = g.limit if g.limit < g.model.default_watts - 1e-6 else None
            lock = g.locked_clocks[1] if g.locked_clocks is not None else None
            knobs.append((cap, float(lock) if lock is not None and lock < g.model.max_sm_clock_mhz else None))
        total = 0.0
        limits = 0.0
        for g, (watts, busy, binds) in zip(self.gpus, serving.operate(knobs), strict=True):
            g.set_power(watts, busy, binds, t)
            total += watts
            limits += g.limit
        self.rate = self.demand * len(self.gpus) * serving.served_fraction()
        self.backlog_rate = 0.0
        self.power = total
        self.limits_mean = limits / len(self.gpus)
        self.version += 1

    def completion_time(self, t: float) -> float:
        """When the job's work is done at the current rate (``inf`` for a service or a stalled job)."""
        if not self.training:
            return self.end_s
        left = self.work - self.progress_at(t)
        if left <= 0:
            return t
        return t + left / self.rate if self.rate > 0 else math.inf

    def backlog_cleared_time(self, t: float) -> float:
        """When a draining backlog reaches zero (``inf`` when it is not draining)."""
        if self.serving is not None:
            return t + self.serving.backlog_cleared_in()
        if self.training or self.backlog <= 0.0 or self.backlog_rate >= 0.0:
            return math.inf
        return t + self.backlog / -self.backlog_rate
