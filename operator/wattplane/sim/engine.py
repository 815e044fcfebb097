"""The virtual-time event loop: jobs arrive, get GPUs, run on the curves, finish; controllers steer.

Between two events every GPU's power and every job's progress rate are constant, so the loop jumps
from event to event and integrates exactly (energy = Σ P·Δt, carbon = Σ P·Δt·intensity). Events, in
the order they are handled at equal times: carbon row boundaries, job completions and service ends,
demand changes, arrivals, controller wake-ups, planning rounds, agent ticks.

**The agent** of every node is a real :class:`~wattplane.agent.engine.NodeEngine` over
:class:`~wattplane.sim.devices.SimGpu` boards. A node's engine reconciles (one agent tick) whenever its
plan changes and, on nodes with a power budget, at every tick boundary (``tick_s``) after anything on
the node changed, until the budget loop settles. Ticks on which nothing can change are skipped: the
budget decision is a deterministic function of readings, targets and its own state, so with all three
unchanged the tick would write nothing (see ``docs/simulator.md``).

**Jobs** queue first-come-first-served (or by priority: ``SimOptions.queue_order``) with backfilling (a
later job that fits starts while an earlier one waits); a job takes GPUs of one model, on one node when
it fits (best fit), else spread over the nodes with the most free GPUs.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from wattplane.agent.budget import BudgetDecision, BudgetParams
from wattplane.agent.engine import NodeEngine
from wattplane.agent.gpu.base import GpuIdentity
from wattplane.agent.journal import Journal
from wattplane.api.v1alpha1.gpunode import GpuTarget
from wattplane.sim.carbon import CarbonTrack
from wattplane.sim.catalog import Catalog, Workload
from wattplane.sim.devices import SimGpu, SimNodeBackend, gpu_uuid
from wattplane.sim.fleet import SimNode
from wattplane.sim.jobs import JobSpec
from wattplane.sim.llm import LlmService, ServingSlo, is_llm_workload, serves_on
from wattplane.sim.physics import RunningJob

#: Pending-queue rank of each priority under ``queue_order="priority"`` (lower starts first).
_QUEUE_RANK = {"high": 0, "normal": 1, "low": 2}

# Event kinds, in handling order at equal times.
CARBON, COMPLETE, DEMAND, BACKLOG, ARRIVAL, CONTROL, PLAN, TICK, STOP = range(9)


class Controller(Protocol):
    """Decides the GPUs' targets: the real planner with policies, or a hindsight oracle."""

    name: str

    def attach(self, sim: Simulation) -> None:
        """Called once before the first event."""

    def plan_round(self, sim: Simulation) -> None:
        """A planning round at ``sim.t`` (only for controllers with ``plan_interval_s``)."""

    def job_started(self, sim: Simulation, job: RunningJob) -> None:
        """``job`` got its GPUs at ``sim.t``."""

    def job_finished(self, sim: Simulation, job: RunningJob) -> None:
        """``job`` released its GPUs at ``sim.t``."""

    def wakeup(self, sim: Simulation, payload: object) -> None:
        """A wake-up the controller scheduled with :meth:`Simulation.schedule`."""

    @property
    def plan_interval_s(self) -> float | None:
        """Seconds between planning rounds, ``None`` for controllers that need none."""


@dataclass(frozen=True)
class SimOptions:
    """How the simulated control plane behaves."""

    duration_s: float = 86400.0
    #: Planning rounds at least this often (the operator's resync interval) ...
    plan_interval_s: float = 30.0
    #: ... and this long after a job starts or ends (the operator's watch-triggered, debounced round).
    plan_debounce_s: float = 1.0
    #: The agents' control-loop period.
    tick_s: float = 1.0
    #: Order of the pending queue: ``fifo`` (arrival order, backfilling), or ``priority`` (high before
    #: normal before low, arrival order within each, as kube-scheduler's PrioritySort orders pods whose
    #: PriorityClass follows their ``wattplane.io/priority``).
    queue_order: Literal["fifo", "priority"] = "fifo"
    #: How long training jobs submitted within the run may take to finish after it, at most.
    max_drain_s: float = 7 * 86400.0
    #: Timeline resolution for plots and the live table.
    timeline_step_s: float = 300.0
    budget_params: BudgetParams = field(default_factory=BudgetParams)
    #: Skip agent ticks that provably change nothing (exact; off: every budgeted node ticks every ``tick_s``).
    skip_idle_ticks: bool = True
    #: Latency objectives LLM services' minutes above SLO are counted against (p90 TPOT, p90 TTFT).
    serving_slo: ServingSlo = field(default_factory=ServingSlo)
    #: How often the serving controller reads the LLM services' metrics (virtual seconds).
    serving_interval_s: float = 15.0


@dataclass(frozen=True)
class BudgetScope:
    """A power budget over some nodes, measured on the simulated power (for the over-budget metrics)."""

    name: str
    watts: float
    nodes: tuple[int, ...]
    #: The budget holds from here (virtual seconds): a window's target after its ramp.
    start_s: float = 0.0
    #: ... to here.
    end_s: float = math.inf


@dataclass
class ScopeStats:
    """Time a budget scope spent over its budget."""

    over_s: float = 0.0
    longest_over_s: float = 0.0
    run_s: float = 0.0
    max_watts: float = 0.0


@dataclass
class Timeline:
    """Fleet quantities per fixed bin of virtual time."""

    step_s: float
    energy_j: list[float] = field(default_factory=list)
    carbon_g: list[float] = field(default_factory=list)
    max_watts: list[float] = field(default_factory=list)
    busy_gpu_s: list[float] = field(default_factory=list)
    busy_limit_ws: list[float] = field(default_factory=list)
    intensity_s: list[float] = field(default_factory=list)
    covered_s: list[float] = field(default_factory=list)

    def add(
        self, t0: float, t1: float, power: float, carbon_per_j: float, busy: int, busy_limits: float, i: float
    ) -> None:
        """Spread the segment ``[t0, t1)`` over the bins it covers."""
        while t0 < t1:
            b = int(t0 // self.step_s)
            while len(self.energy_j) <= b:
                for series in (
                    self.energy_j,
                    self.carbon_g,
                    self.max_watts,
                    self.busy_gpu_s,
                    self.busy_limit_ws,
                    self.intensity_s,
                    self.covered_s,
                ):
                    series.append(0.0)
            end = min(t1, (b + 1) * self.step_s)
            dt = end - t0
            self.energy_j[b] += power * dt
            self.carbon_g[b] += power * dt * carbon_per_j
            self.max_watts[b] = max(self.max_watts[b], power)
            self.busy_gpu_s[b] += busy * dt
            self.busy_limit_ws[b] += busy_limits * dt
            self.intensity_s[b] += i * dt
            self.covered_s[b] += dt
            t0 = end


class Simulation:
    """One run of one controller over one scenario."""

    def __init__(
        self,
        *,
        nodes: Sequence[SimNode],
        catalog: Catalog,
        jobs: Sequence[JobSpec],
        carbon: CarbonTrack,
        controller: Controller,
        options: SimOptions,
        scopes: Sequence[BudgetScope] = (),
        on_progress: Callable[[Simulation], None] | None = None,
    ) -> None:
        self.nodes = tuple(nodes)
        self.catalog = catalog
        self.carbon = carbon
        self.controller = controller
        self.options = options
        self.on_progress = on_progress
        self.t = 0.0
        self._since = 0.0
        self.intensity = carbon.at(0.0)
        self._heap: list[tuple[float, int, int, object]] = []
        self._seq = 0
        self.gpus: list[SimGpu] = []
        self.node_gpus: list[list[SimGpu]] = []
        self.engines: list[NodeEngine] = []
        self.node_targets: list[tuple[GpuTarget, ...]] = []
        self.node_budget: list[float | None] = []
        self.node_priorities: list[Mapping[str, int]] = []
        self.node_ramp: list[float | None] = []
        for n, node in enumerate(self.nodes):
            model = catalog.model(node.model)
            devices = [
                SimGpu(GpuIdentity(i, gpu_uuid(node.name, i), model.name), model, n, self._clock, self._limit_changed)
                for i in range(node.gpus)
            ]
            self.gpus.extend(devices)
            self.node_gpus.append(devices)
            self.engines.append(
                NodeEngine(SimNodeBackend(node.name, devices), Journal(None), budget_params=options.budget_params)
            )
            self.node_targets.append(())
            self.node_budget.append(None)
            self.node_priorities.append({})
            self.node_ramp.append(None)
        self.node_index = {node.name: n for n, node in enumerate(self.nodes)}
        self.free: list[list[SimGpu]] = [list(g) for g in self.node_gpus]
        self.queue: list[JobSpec] = []
        #: Services that got no GPUs before the run's end: they never run (a service lives within the run).
        self.unstarted_services: list[JobSpec] = []
        self.running: dict[str, RunningJob] = {}
        self.finished: dict[str, RunningJob] = {}
        self.specs = {j.id: j for j in jobs}
        if len(self.specs) != len(jobs):
            raise ValueError("job ids must be unique")
        # Node aggregates, refreshed lazily.
        self._node_power = [sum(g.power for g in gs) for gs in self.node_gpus]
        self._node_busy = [0] * len(self.nodes)
        self._node_busy_limits = [0.0] * len(self.nodes)
        self._dirty_nodes: set[int] = set()
        self.fleet_power = math.fsum(self._node_power)
        # Accounting.
        self.fleet_energy_j = 0.0
        self.fleet_carbon_g = 0.0
        self.window_energy_j = 0.0
        self.window_carbon_g = 0.0
        self.scopes = tuple(scopes)
        self.scope_stats = [ScopeStats() for _ in self.scopes]
        self.timeline = Timeline(options.timeline_step_s)
        self.plan_rounds = 0
        self.agent_ticks = 0
        self.events = 0
        # Agent ticks and planning rounds.
        self._tick_nodes: set[int] = set()
        self._tick_pending = False
        self._plan_gen = 0
        self._plan_triggered = False
        self._stopped_services = False
        self._horizon = options.duration_s + options.max_drain_s
        self._report_every = 1.0
        self._next_report = 0.0
        #: Set once nothing is left to simulate.
        self.done = False
        for job in jobs:
            if job.submit_s < options.duration_s:
                self._push(job.submit_s, ARRIVAL, job)

    # ------------------------------------------------------------------ public helpers for controllers

    def _clock(self) -> float:
        return self.t

    def schedule(self, t: float, payload: object) -> None:
        """Wake the controller at ``t`` with ``payload``."""
        self._push(max(t, self.t), CONTROL, payload)

    def apply(
        self,
        node: int,
        targets: tuple[GpuTarget, ...],
        budget: float | None = None,
        priorities: Mapping[str, int] | None = None,
        ramp: float | None = None,
    ) -> None:
        """Hand node ``node`` a new plan; its agent reconciles at once if anything changed.

        ``priorities`` is the node budget's cut order by GPU UUID (``GpuNode.spec.budgetPriorities``);
        ``ramp`` the rate its budget in force moves at (``nodeBudgetRampWattsPerSecond``).
        """
        priorities = dict(priorities or {})
        if (
            targets == self.node_targets[node]
            and budget == self.node_budget[node]
            and (priorities == self.node_priorities[node])
            and ramp == self.node_ramp[node]
        ):
            return
        self.node_targets[node] = targets
        self.node_budget[node] = budget
        self.node_priorities[node] = priorities
        self.node_ramp[node] = ramp
        self._tick(node)
        if budget is not None or self.engines[node].budget_ramping:
            self._want_tick(node)

    def job_of(self, gpu: SimGpu) -> RunningJob | None:
        """The job holding ``gpu``."""
        job = gpu.job
        return job if isinstance(job, RunningJob) else None

    def fleet_energy_at(self, t: float) -> float:
        """Fleet energy from the start to ``t`` (not before the last event), joules."""
        return self.fleet_energy_j + self.fleet_power * max(0.0, t - self._since)

    def fleet_carbon_at(self, t: float) -> float:
        """Fleet emissions from the start to ``t`` (not before the last event), grams."""
        return self.fleet_carbon_g + self.fleet_power * max(0.0, t - self._since) * self.intensity / 3.6e6

    def power_now(self) -> float:
        """Current draw of the whole fleet's GPUs, watts (constant until the next event)."""
        self._refresh_nodes()
        return self.fleet_power

    def node_power(self, node: int) -> float:
        """Current draw of a node's GPUs, watts."""
        self._refresh_nodes()
        return self._node_power[node]

    # ------------------------------------------------------------------ the loop

    def run(self) -> None:
        """Run to the end: the duration, then until every submitted training job finished (bounded)."""
        self.start()
        self.run_until(math.inf)
        self.finish()

    def start(self) -> None:
        """Prepare the first events (call once, before :meth:`run_until`)."""
        self.controller.attach(self)
        self._push(self.carbon.next_change(0.0), CARBON, None)
        self._push(self.options.duration_s, STOP, None)
        if self.controller.plan_interval_s is not None:
            self._push(0.0, PLAN, self._plan_gen)
        self._horizon = self.options.duration_s + self.options.max_drain_s
        self._report_every = max(self.options.duration_s / 200.0, 1.0)
        self._next_report = 0.0
        self.done = False

    def run_until(self, until: float) -> None:
        """Handle every event up to virtual time ``until`` (lets several runs advance in lockstep)."""
        while self._heap and not self.done:
            t = self._heap[0][0]
            if t > until:
                return
            if t > self._horizon or (self._stopped_services and not self.running and not self.queue):
                self.done = True
                return
            _, kind, _, payload = heapq.heappop(self._heap)
            self.t = t
            self.events += 1
            self._dispatch(kind, payload)
            self._refresh_nodes()
            if self.on_progress is not None and t >= self._next_report:
                self.on_progress(self)
                self._next_report = t + self._report_every
        if not self._heap:
            self.done = True

    def finish(self) -> None:
        """Close the books at the last event (or at the drain horizon when jobs were still running)."""
        end = self._horizon if self._heap and self._heap[0][0] > self._horizon and self.running else self.t
        self._finish(end)
        if self.on_progress is not None:
            self.on_progress(self)

    def _dispatch(self, kind: int, payload: object) -> None:
        if kind == CARBON:
            self._carbon_boundary()
        elif kind in (COMPLETE, BACKLOG):
            assert isinstance(payload, tuple)
            job: RunningJob = payload[0]
            if job.finished_s is None and job.version == payload[1]:
                if kind == COMPLETE:
                    self._complete(job)
                else:
                    self._reoperate(job)
        elif kind == DEMAND:
            assert isinstance(payload, RunningJob)
            if payload.finished_s is None:
                self._set_demand(payload)
        elif kind == ARRIVAL:
            assert isinstance(payload, JobSpec)
            if self._stopped_services and payload.kind == "inference":
                self.unstarted_services.append(payload)
                return
            self.queue.append(payload)
            self._schedule_queue()
        elif kind == CONTROL:
            self.controller.wakeup(self, payload)
        elif kind == PLAN:
            if payload == self._plan_gen:
                self._plan_round()
        elif kind == TICK:
            self._tick_pending = False
            self._ticks()
        elif kind == STOP:
            self._stop_services()

    def _carbon_boundary(self) -> None:
        self._flush_fleet()
        for job in self.running.values():
            job.flush(self.t, self.intensity)
        self.intensity = self.carbon.at(self.t)
        self._push(self.carbon.next_change(self.t), CARBON, None)

    def _push(self, t: float, kind: int, payload: object) -> None:
        if math.isinf(t):
            return
        self._seq += 1
        heapq.heappush(self._heap, (t, kind, self._seq, payload))

    # ------------------------------------------------------------------ accounting

    def _refresh_nodes(self) -> None:
        """Recompute the aggregates of nodes whose GPUs changed at ``t`` (integrating the old ones first)."""
        if not self._dirty_nodes:
            return
        self._flush_fleet()
        for n in self._dirty_nodes:
            gs = self.node_gpus[n]
            self._node_power[n] = math.fsum(g.power for g in gs)
            busy = [g for g in gs if g.job is not None]
            self._node_busy[n] = len(busy)
            self._node_busy_limits[n] = math.fsum(g.limit for g in busy)
        self._dirty_nodes.clear()
        self.fleet_power = math.fsum(self._node_power)

    def _flush_fleet(self) -> None:
        """Integrate fleet power, carbon, budgets and the timeline from the last change up to ``t``.

        Called only when power or intensity is about to change, so that events that change nothing
        (a planning round that keeps every limit) do not even split the integral: a run with such a
        policy reproduces the uncapped run bit for bit.
        """
        t0, t1 = self._since, self.t
        dt = t1 - t0
        if dt <= 0:
            return
        power = self.fleet_power
        per_j = self.intensity / 3.6e6
        self.fleet_energy_j += power * dt
        self.fleet_carbon_g += power * dt * per_j
        window_end = min(t1, self.options.duration_s)
        if window_end > t0:
            w = window_end - t0
            self.window_energy_j += power * w
            self.window_carbon_g += power * w * per_j
        for scope, stats in zip(self.scopes, self.scope_stats, strict=True):
            inside = min(t1, scope.end_s) - max(t0, scope.start_s)
            if inside <= 0:
                stats.run_s = 0.0
                continue
            watts = math.fsum(self._node_power[n] for n in scope.nodes)
            stats.max_watts = max(stats.max_watts, watts)
            if watts > scope.watts * (1.0 + 1e-9):
                stats.over_s += inside
                stats.run_s += inside
                stats.longest_over_s = max(stats.longest_over_s, stats.run_s)
            else:
                stats.run_s = 0.0
        self.timeline.add(t0, t1, power, per_j, sum(self._node_busy), math.fsum(self._node_busy_limits), self.intensity)
        self._since = t1

    def _finish(self, t: float) -> None:
        self.t = max(self.t, t)
        self._refresh_nodes()
        self._flush_fleet()
        for job in self.running.values():
            job.flush(self.t, self.intensity)

    # ------------------------------------------------------------------ jobs

    def _schedule_queue(self) -> None:
        if not self.queue:
            return
        free_total = sum(len(f) for f in self.free)
        waiting: list[JobSpec] = []
        queue = self.queue
        if self.options.queue_order == "priority":
            queue = sorted(queue, key=lambda spec: _QUEUE_RANK[spec.priority])  # stable: arrival order within
        for spec in queue:
            if free_total >= spec.gpus:
                gpus = self._place(spec)
                if gpus is not None:
                    self._start(spec, gpus)
                    free_total -= spec.gpus
                    continue
            waiting.append(spec)
        self.queue = waiting

    def _place(self, spec: JobSpec) -> list[SimGpu] | None:
        for model in sorted({n.model for n in self.nodes}):
            if spec.workload and not self._runs(model, spec.workload):
                continue
            candidates = [n for n, node in enumerate(self.nodes) if node.model == model and self.free[n]]
            single = [n for n in candidates if len(self.free[n]) >= spec.gpus]
            if single:
                n = min(single, key=lambda i: (len(self.free[i]), i))
                return [self.free[n].pop(0) for _ in range(spec.gpus)]
            if sum(len(self.free[n]) for n in candidates) >= spec.gpus:
                picked: list[SimGpu] = []
                for n in sorted(candidates, key=lambda i: (-len(self.free[i]), i)):
                    while self.free[n] and len(picked) < spec.gpus:
                        picked.append(self.free[n].pop(0))
                return picked
        return None

    def _runs(self, model: str, workload: str) -> bool:
        if is_llm_workload(workload):
            return serves_on(model)
        try:
            self.catalog.workload(model, workload)
        except KeyError:
            return False
        return True

    def _start(self, spec: JobSpec, gpus: list[SimGpu]) -> None:
        model = gpus[0].model.name
        if is_llm_workload(spec.workload):
            # The serving model replaces the curve; a transformer curve stays as the job's nominal unit.
            curve = self.catalog.workload(model, pick_workload(spec.id, self.catalog.families(model)))
            workload = Workload(spec.workload, spec.workload, model, curve.curve, "wattplane.sim.inference")
        else:
            workload = self.catalog.workload(
                model, spec.workload or pick_workload(spec.id, self.catalog.families(model))
            )
        if spec.epochs is not None:
            work = spec.epochs
        elif spec.kind == "training":
            assert spec.duration_s is not None
            work = spec.duration_s / workload.curve.time_per_unit(gpus[0].model.default_watts)
        else:
            work = math.inf
        by_node: dict[int, list[SimGpu]] = {}
        for g in gpus:
            by_node.setdefault(g.node_index, []).append(g)
        namespace = "training" if spec.kind == "training" else "serving"
        pods = tuple((namespace, f"{spec.id}-{k}") for k in range(len(by_node)))
        job = RunningJob(
            spec=spec,
            workload=workload,
            gpus=gpus,
            pods=pods,
            pod_gpus=tuple(tuple(v) for v in by_node.values()),
            start_s=self.t,
            work=work,
            since=self.t,
        )
        if spec.kind == "inference":
            assert spec.demand is not None
            job.demand = spec.demand.at(0.0)
            if spec.llm is not None and serves_on(model):
                job.serving = LlmService(spec.llm, self.options.serving_slo, len(gpus))
            if spec.duration_s is not None:
                job.end_s = self.t + spec.duration_s
            self._push(self.t + _next_demand_change(spec, 0.0), DEMAND, job)
        if self._stopped_services:
            job.extra["window_progress"] = 0.0  # a training job that starts in the drain did nothing in the run
        for g in gpus:
            g.job = job
        self.running[spec.id] = job
        self._reoperate(job)
        self.controller.job_started(self, job)
        self._trigger_plan()

    def _reoperate(self, job: RunningJob) -> None:
        """Flush, recompute rate and power, and (re)schedule the job's own events."""
        job.flush(self.t, self.intensity)
        job.operate(self.t)
        nodes = {g.node_index for g in job.gpus}
        self._dirty_nodes.update(nodes)
        for n in nodes:
            if self.node_budget[n] is not None:
                self._want_tick(n)
        self._push(job.completion_time(self.t), COMPLETE, (job, job.version))
        self._push(job.backlog_cleared_time(self.t), BACKLOG, (job, job.version))

    def _set_demand(self, job: RunningJob) -> None:
        assert job.spec.demand is not None
        job.flush(self.t, self.intensity)
        elapsed = self.t - job.start_s
        job.demand = job.spec.demand.at(elapsed)
        if job.serving is not None:
            assert job.spec.llm is not None
            job.serving.load = job.spec.llm.at(elapsed)
        self._reoperate(job)
        self._push(job.start_s + _next_demand_change(job.spec, elapsed + 1e-9), DEMAND, job)

    def _complete(self, job: RunningJob) -> None:
        job.flush(self.t, self.intensity)
        if job.training:
            job.progress = job.work  # the completion event lands where the work ends; remove float dust
        job.finished_s = self.t
        del self.running[job.spec.id]
        self.finished[job.spec.id] = job
        for g in job.gpus:
            g.job = None
            g.set_power(g.model.idle_watts, 0.0, False, self.t)
            self.free[g.node_index].append(g)
        for n in {g.node_index for g in job.gpus}:
            self.free[n].sort(key=lambda g: g.identity.index)
            self._dirty_nodes.add(n)
            if self.node_budget[n] is not None:
                self._want_tick(n)
        self.controller.job_finished(self, job)
        self._trigger_plan()
        self._schedule_queue()

    def _stop_services(self) -> None:
        """At the end of the run: services stop, queued training submitted in time still runs.

        Services still waiting for GPUs are dropped rather than started after the run: a service exists
        to serve demand during the run, and one started in the drain would add work and energy outside
        it (and, without a lifetime, run until the drain horizon), which no other run of the comparison
        has. Every job's progress at this instant is its work within the run.
        """
        self._stopped_services = True
        self.unstarted_services += [s for s in self.queue if s.kind == "inference"]
        self.queue = [s for s in self.queue if s.kind != "inference"]
        for job in self.running.values():
            job.extra["window_progress"] = job.progress_at(self.t)
        for job in sorted(self.running.values(), key=lambda j: j.spec.id):
            if not job.training:
                self._complete(job)

    def _limit_changed(self, gpu: SimGpu) -> None:
        job = self.job_of(gpu)
        self._dirty_nodes.add(gpu.node_index)
        if job is not None and job.finished_s is None:
            self._reoperate(job)

    # ------------------------------------------------------------------ the control plane

    def request_plan(self) -> None:
        """Ask for a planning round soon (after the debounce), as a watch event would."""
        self._trigger_plan()

    def _trigger_plan(self) -> None:
        if self.controller.plan_interval_s is None or self._plan_triggered:
            return
        self._plan_triggered = True
        self._push(self.t + self.options.plan_debounce_s, PLAN, self._plan_gen)

    def _plan_round(self) -> None:
        self._plan_gen += 1
        self._plan_triggered = False
        self.plan_rounds += 1
        self.controller.plan_round(self)
        interval = self.controller.plan_interval_s
        if interval is not None and not (self._stopped_services and not self.running and not self.queue):
            self._push(self.t + interval, PLAN, self._plan_gen)

    def _want_tick(self, node: int) -> None:
        self._tick_nodes.add(node)
        if not self._tick_pending:
            self._tick_pending = True
            tick = self.options.tick_s
            self._push((math.floor(self.t / tick) + 1) * tick, TICK, None)

    def _ticks(self) -> None:
        nodes = sorted(self._tick_nodes)
        self._tick_nodes.clear()
        for n in nodes:
            before = self.engines[n].budget
            self._tick(n)
            after = self.engines[n].budget
            if (
                not self.options.skip_idle_ticks
                or not _settled(before, after, self.options.budget_params)
                or self.engines[n].budget_ramping
            ):
                self._want_tick(n)

    def _tick(self, node: int) -> None:
        self.agent_ticks += 1
        self.engines[node].reconcile(
            self.node_targets[node],
            node_budget_watts=self.node_budget[node],
            budget_priorities=self.node_priorities[node],
            budget_ramp_watts_per_second=self.node_ramp[node],
            now=self.t,
        )


def _settled(before: BudgetDecision | None, after: BudgetDecision | None, params: BudgetParams) -> bool:
    """Whether another tick with unchanged inputs would change nothing (see the module docstring)."""
    if after is None or after.budget_watts is None:
        return True
    if before is None:
        return False
    old, new = before.state, after.state
    if dict(old.limits) != dict(new.limits):
        return False
    return not new.limits or new.calm_ticks == old.calm_ticks or old.calm_ticks >= params.restore_after_ticks


def _next_demand_change(spec: JobSpec, elapsed: float) -> float:
    """When a service's demand or LLM load next changes, seconds since it started."""
    assert spec.demand is not None
    nxt = spec.demand.next_change(elapsed)
    return min(nxt, spec.llm.next_change(elapsed)) if spec.llm is not None else nxt


def pick_workload(job_id: str, families: Sequence[str]) -> str:
    """A workload family for a job that named none: a deterministic function of its id."""
    if not families:
        raise KeyError("no workload curves to pick from")
    return random.Random(job_id).choice(sorted(families))
