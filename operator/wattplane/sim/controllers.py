"""Who decides the GPUs' targets in a run besides the planner: nobody (uncapped) or a hindsight oracle.

The oracles set targets directly (they are baselines, not policies) but still go through the nodes'
real agents, so a GPU's limit moves exactly as it would under a plan. The planner itself runs in
:mod:`wattplane.sim.planning`.
"""

from __future__ import annotations

from collections.abc import Callable

from wattplane.api.v1alpha1.gpunode import GpuTarget
from wattplane.sim.engine import Simulation
from wattplane.sim.oracles import CarbonPlan, carbon_schedule, zeus_limit
from wattplane.sim.physics import RunningJob


class NullController:
    """Uncapped: nothing ever sets a limit; every GPU runs at its default."""

    name = "uncapped"
    plan_interval_s: float | None = None

    def attach(self, sim: Simulation) -> None:
        """Nothing to prepare."""

    def plan_round(self, sim: Simulation) -> None:
        """Never called."""

    def job_started(self, sim: Simulation, job: RunningJob) -> None:
        """Nothing to do."""

    def job_finished(self, sim: Simulation, job: RunningJob) -> None:
        """Nothing to do."""

    def wakeup(self, sim: Simulation, payload: object) -> None:
        """Never scheduled."""


class _OracleBase:
    """Shared bookkeeping: per-GPU targets, applied node by node through the agents."""

    name = "oracle"
    plan_interval_s: float | None = None

    def __init__(self) -> None:
        self._targets: dict[str, GpuTarget] = {}

    def attach(self, sim: Simulation) -> None:
        """Nothing to prepare."""

    def plan_round(self, sim: Simulation) -> None:
        """Never called."""

    def wakeup(self, sim: Simulation, payload: object) -> None:
        """No wake-ups by default."""

    def job_started(self, sim: Simulation, job: RunningJob) -> None:
        """Subclasses set targets."""

    def job_finished(self, sim: Simulation, job: RunningJob) -> None:
        """Drop the job's targets; its GPUs go back to their prior limit."""
        for g in job.gpus:
            self._targets.pop(g.identity.uuid, None)
        self._push_nodes(sim, job)

    def _set(self, sim: Simulation, job: RunningJob, watts: float, reason: str) -> None:
        for g in job.gpus:
            self._targets[g.identity.uuid] = GpuTarget(
                uuid=g.identity.uuid,
                power_limit_watts=watts,
                policy=self.name,
                job=job.spec.id,
                priority=_PRIORITY[job.spec.priority],
                reason=reason,
            )
        self._push_nodes(sim, job)

    def _push_nodes(self, sim: Simulation, job: RunningJob) -> None:
        for n in sorted({g.node_index for g in job.gpus}):
            targets = tuple(
                self._targets[g.identity.uuid] for g in sim.node_gpus[n] if g.identity.uuid in self._targets
            )
            sim.apply(n, targets)


_PRIORITY = {"low": 0, "normal": 500, "high": 1000}


def _unit(_: float) -> float:
    return 1.0


class ZeusOracleController(_OracleBase):
    """Every training job at its best static limit in hindsight (see :mod:`wattplane.sim.oracles`)."""

    name = "zeus-oracle"

    def __init__(self, *, eta: float = 0.5, step_watts: float = 25.0, floor_fraction: float | None = None) -> None:
        super().__init__()
        self.eta = eta
        self.step_watts = step_watts
        self.floor_fraction = floor_fraction
        self.chosen: dict[str, float] = {}

    def job_started(self, sim: Simulation, job: RunningJob) -> None:
        """Set the job's GPUs to the oracle's limit."""
        if not job.training:
            return
        model = job.gpus[0].model
        lo = _oracle_floor(model.min_watts, model.default_watts, self.floor_fraction)
        watts = zeus_limit(job.workload.curve, eta=self.eta, lo=lo, hi=model.max_watts, step=self.step_watts)
        self.chosen[job.spec.id] = watts
        self._set(sim, job, watts, f"zeus-oracle: best static limit for eta {self.eta:g}")


class CarbonOracleController(_OracleBase):
    """Every training job on its minimum-carbon schedule within the slowdown budget, in hindsight."""

    name = "carbon-oracle"

    def __init__(
        self,
        *,
        slowdown: float = 0.025,
        floor_fraction: float | None = None,
        flat: bool = False,
        series: tuple[Callable[[float], float], Callable[[float], float]] | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__()
        #: ``(value_at, next_change)`` of another step function to minimise instead of the carbon trace
        #: (the price-oracle: the minimum-cost schedule within the same budget).
        self.series = series
        self.slowdown = slowdown
        self.floor_fraction = floor_fraction
        #: Ignore the trace (constant intensity): the minimum-*energy* schedule within the same slowdown
        #: budget, which separates what the oracle gains from timing from what it gains from efficiency.
        self.flat = flat
        if flat:
            self.name = "energy-oracle"
        if name is not None:
            self.name = name
        self.plans: dict[str, CarbonPlan] = {}

    def job_started(self, sim: Simulation, job: RunningJob) -> None:
        """Plan the job's schedule and apply its first limit."""
        if not job.training:
            return
        model = job.gpus[0].model
        lo = _oracle_floor(model.min_watts, model.default_watts, self.floor_fraction)
        result = carbon_schedule(
            job.workload.curve,
            lo=lo,
            hi=model.max_watts,
            work=job.work,
            start=sim.t,
            uncapped_watts=model.default_watts,
            slowdown=self.slowdown,
            intensity_at=_unit if self.flat else self.series[0] if self.series else sim.carbon.at,
            next_change=self.series[1] if self.series else sim.carbon.next_change,
        )
        self.plans[job.spec.id] = result
        first, *rest = result.segments
        self._set(sim, job, first.watts, f"{self.name} schedule")
        for k, segment in enumerate(rest, start=1):
            sim.schedule(segment.start, (job.spec.id, k))

    def wakeup(self, sim: Simulation, payload: object) -> None:
        """The next segment of a job's schedule begins."""
        assert isinstance(payload, tuple)
        job_id: str = payload[0]
        k: int = payload[1]
        job = sim.running.get(job_id)
        if job is None:
            return
        self._set(sim, job, self.plans[job_id].segments[k].watts, f"{self.name} schedule")


def _oracle_floor(min_watts: float, default_watts: float, floor_fraction: float | None) -> float:
    """Lowest limit an oracle may use: the device minimum, raised to the policy's floor if it has one."""
    return min_watts if floor_fraction is None else max(min_watts, floor_fraction * default_watts)
