"""The operator's planning round in virtual time.

:class:`PolicyController` is the operator's planning round in virtual time, with the operator's own
pieces: a :class:`~wattplane.planner.snapshot.FleetSnapshot` of the virtual fleet, the policies as the
API models parse them, a :class:`~wattplane.planner.context.PlanContext` (carbon signal from the trace,
Zeus profiles, straggler caps, the previous node budgets), :func:`wattplane.planner.plan.plan`,
:func:`wattplane.operator.decisions.node_spec_update` for what is written to each GpuNode, and the
operator's :class:`~wattplane.operator.observe.JobObserver` fed with the jobs' simulated progress
counters instead of HTTP scrapes. The nodes' agents then apply the specs (see :mod:`wattplane.sim.engine`).

Under a policy with a ``serving`` section, the operator's
:class:`~wattplane.operator.servingcontrol.ServingController` reads every governed LLM service's pods
every ``serving_interval_s`` virtual seconds: each read is the metrics page the serving model's state
gives (:meth:`wattplane.sim.llm.LlmService.sample`) and the energy counters of the pod's GPUs, as the
operator joins them. The knobs it holds go to the planner as ``PlanContext.serving_knobs``; a knob that
moved asks for a round at once, as the operator's reconciler does.

Simulated pods carry the labels the shipped example policies select on (``wattplane.io/workload``;
training pods also ``wattplane.io/energy: efficient`` and ``wattplane.io/carbon: aware``, multi-pod jobs
``wattplane.io/distributed: "true"``) and the annotations a real pod would (job, priority, workload,
a progress metric), so a policy file works unchanged in the simulator.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping, Sequence
from datetime import datetime

from wattplane.agent.engine import GpuOutcome
from wattplane.agent.gpu.base import GpuIdentity, PowerConstraints
from wattplane.api.annotations import JOB, PRIORITY, PROGRESS_METRIC, SERVING_METRICS, WORKLOAD, parse_pod_annotations
from wattplane.api.v1alpha1.energypolicy import CarbonSpec
from wattplane.api.v1alpha1.gpunode import GpuNodeSpec
from wattplane.operator.decisions import node_spec_update, quota_caps_in_force
from wattplane.operator.observe import JobObserver
from wattplane.operator.progress import ProgressSample
from wattplane.operator.servingcontrol import ServingController, ServingGpu
from wattplane.planner.context import CarbonInput, PlanContext
from wattplane.planner.plan import Plan, Planner
from wattplane.planner.snapshot import FleetSnapshot, GpuView, PodKey, PodView, PolicyView
from wattplane.price.cost import cost_input
from wattplane.sim.engine import Simulation
from wattplane.sim.physics import RunningJob
from wattplane.sim.price import PriceTrack

#: The progress metric simulated pods announce (never scraped: the simulator reads its own counter).
SIM_PROGRESS_METRIC = "9090:/metrics#wattplane_sim_epochs_total"
#: TTL the simulated operator writes into plans (the operator's default).
PLAN_TTL_S = 600
#: Where simulated inference pods announce their engine's metrics (never fetched: the model is read).
SIM_SERVING_METRICS = "8000"
#: Wake-up payload of the serving controller's reads.
_SERVING_READ = "serving-read"


class PolicyController:
    """The operator's planning round, run by the simulator (see the module docstring)."""

    def __init__(
        self,
        name: str,
        policies: Sequence[PolicyView],
        *,
        plan_interval_s: float = 30.0,
        price: PriceTrack | None = None,
        serving_interval_s: float = 15.0,
    ) -> None:
        self.name = name
        #: The price trace a policy's ``carbon.price`` section reads (day-ahead knowledge, see sim.price).
        self.price = price
        self.policies = list(policies)
        self._interval = plan_interval_s
        self._by_name = {p.name: p for p in self.policies}
        self._quotas = any(p.spec.quota is not None for p in self.policies)
        #: The jobs' simulated progress counters, read by the operator's own observer instead of HTTP.
        self.counters: dict[PodKey, float] = {}
        self.observer = JobObserver(read_progress=self._read_counter)
        self._loop = asyncio.new_event_loop()
        self._specs: list[GpuNodeSpec] = []
        self._pods: dict[str, dict[PodKey, PodView]] = {}
        self._carbon_cache: dict[tuple[int, float], CarbonInput] = {}
        self._cost_cache: dict[tuple[object, ...], CarbonInput] = {}
        self.last_plan: Plan | None = None
        #: Re-decides only what changed since its last round (the simulated fleet changes a little at a time).
        self.planner = Planner()
        self.node_budgets: dict[str, float] = {}
        #: Virtual times a round is already scheduled for (budget windows starting, ending, ramps lapsing).
        self._wakeups: set[float] = set()
        #: The operator's serving controller, on virtual seconds (only policies with a ``serving`` section use it).
        self._serving_on = any(p.spec.serving is not None for p in self.policies)
        self._serving_interval = serving_interval_s
        self._virtual_s = 0.0
        self.serving = ServingController(clock=lambda: self._virtual_s)

    async def _read_counter(self, snapshot: FleetSnapshot, key: PodKey) -> ProgressSample | None:
        value = self.counters.get(key)
        return None if value is None else ProgressSample(value=value, series=1, url="sim://" + "/".join(key))

    @property
    def plan_interval_s(self) -> float | None:
        """The operator's resync interval."""
        return self._interval

    def attach(self, sim: Simulation) -> None:
        """Start every node with an empty plan."""
        self._specs = [GpuNodeSpec() for _ in sim.nodes]
        if self._serving_on:
            sim.schedule(self._serving_interval, _SERVING_READ)

    def close(self) -> None:
        """Release the observer's event loop."""
        self._loop.close()

    def job_started(self, sim: Simulation, job: RunningJob) -> None:
        """Create the job's pod objects (they never change while it runs)."""
        self._pods[job.spec.id] = _pods_of(sim, job)

    def job_finished(self, sim: Simulation, job: RunningJob) -> None:
        """Its pods are gone."""
        self._pods.pop(job.spec.id, None)

    def wakeup(self, sim: Simulation, payload: object) -> None:
        """A budget window turns: plan then, as the operator's loop wakes for it (or the serving pods are read)."""
        if payload == _SERVING_READ:
            self._read_serving(sim)
            if sim.t + self._serving_interval < sim.options.duration_s:
                sim.schedule(sim.t + self._serving_interval, _SERVING_READ)
            return
        if isinstance(payload, float):
            self._wakeups.discard(payload)
        sim.request_plan()

    def plan_round(self, sim: Simulation) -> None:
        """One operator round: snapshot, context, plan, GpuNode specs, then observe the jobs."""
        now = sim.carbon.time_of(sim.t)
        snapshot = self.snapshot(sim)
        context = PlanContext(
            now=now,
            carbon=self._carbon(sim),
            profiles=self.observer.profiles,
            straggler_caps=self.observer.straggler_caps,
            previous_node_budgets={
                sim.nodes[n].name: s.node_budget_watts
                for n, s in enumerate(self._specs)
                if s.node_budget_watts is not None
            },
            budget_rebalances=self.last_plan.budget_rebalances if self.last_plan is not None else {},
            budget_interval_s=self._interval,
            carbon_budgets=self.last_plan.carbon_budgets if self.last_plan is not None else {},
            previous_quota_caps=quota_caps_in_force(self._specs) if self._quotas else {},
            serving_knobs=self.serving.snapshot() if self._serving_on else {},
        )
        result = self.planner.plan(snapshot, self.policies, context)
        self.last_plan = result
        for n, node in enumerate(sim.nodes):
            update = node_spec_update(
                self._specs[n],
                result.nodes.get(node.name, ()),
                now=now,
                ttl_seconds=PLAN_TTL_S,
                node_budget_watts=result.node_budgets.get(node.name),
                budget_priorities=result.budget_priorities.get(node.name, ()),
                budget_ramp_watts_per_second=result.node_budget_ramps.get(node.name),
            )
            if update is not None:
                self._specs[n] = update
                priorities = {p.uuid: p.priority for p in update.budget_priorities or ()}
                ramp = update.node_budget_ramp_watts_per_second
                sim.apply(n, tuple(update.gpus), update.node_budget_watts, priorities, ramp)
        self.node_budgets = dict(result.node_budgets)
        due = result.next_change_at
        if due is not None and due > now:
            at = sim.t + (due - now).total_seconds()
            if at not in self._wakeups:
                self._wakeups.add(at)
                sim.schedule(at, at)
        if any(p.spec.efficiency is not None or p.spec.stragglers is not None for p in self.policies):
            self._observe(sim, result, snapshot, now)

    def _read_serving(self, sim: Simulation) -> None:
        """One read of every LLM service pod under a ``serving`` section, through the operator's controller."""
        plan = self.last_plan
        if plan is None:
            return
        self._virtual_s = sim.t
        now = sim.carbon.time_of(sim.t)
        policy_of = {key: job.policy for job in plan.jobs.values() for key in job.pods}
        served: list[PodKey] = []
        moved = False
        for job in sorted(sim.running.values(), key=lambda j: j.spec.id):
            if job.serving is None:
                continue
            views = self._pods.get(job.spec.id) or _pods_of(sim, job)
            job.flush(sim.t, sim.intensity)  # the counters up to now (integrals of constants: exact)
            for key, gpus in zip(job.pods, job.pod_gpus, strict=True):
                policy = self._by_name.get(policy_of.get(key, ""))
                spec = policy.spec.serving if policy is not None else None
                if spec is None:
                    continue
                served.append(key)
                pod = views[key]
                sample = job.serving.sample("sim://" + "/".join(key), share=len(gpus) / len(job.gpus))
                c = gpus[0].constraints_
                moved |= self.serving.update(
                    key,
                    pod.uid,
                    spec,
                    parse_pod_annotations(pod.annotations),
                    ServingGpu(model=gpus[0].model.name, min_watts=c.min_watts, max_watts=c.max_watts),
                    sample,
                    math.fsum(g.energy_at(sim.t) for g in gpus),
                    now,
                )
        self.serving.retain(served)
        if moved:
            sim.request_plan()

    def _observe(self, sim: Simulation, result: Plan, snapshot: FleetSnapshot, now: datetime) -> None:
        counters: dict[PodKey, float] = {}
        for job in sim.running.values():
            if not job.training:
                continue
            progress = job.progress_at(sim.t)
            for key, gpus in zip(job.pods, job.pod_gpus, strict=True):
                counters[key] = progress * len(gpus) / len(job.gpus)
        self.counters = counters
        self._loop.run_until_complete(self.observer.observe(result, snapshot, self._by_name, now))

    def _carbon(self, sim: Simulation) -> Mapping[str, CarbonInput]:
        out: dict[str, CarbonInput] = {}
        row = sim.carbon._index(sim.t)
        for p in self.policies:
            if p.spec.carbon is None:
                continue
            key = (row, p.spec.carbon.lookahead_hours)
            signal = self._carbon_cache.get(key)
            if signal is None:
                if len(self._carbon_cache) > 64:
                    self._carbon_cache.clear()
                signal = sim.carbon.input_at(
                    sim.t, lookahead_h=p.spec.carbon.lookahead_hours, history_h=p.spec.carbon.lookahead_hours
                )
                self._carbon_cache[key] = signal
            out[p.name] = self._cost(sim, p.spec.carbon, signal) if p.spec.carbon.price is not None else signal
        return out

    def _cost(self, sim: Simulation, spec: CarbonSpec, signal: CarbonInput) -> CarbonInput:
        """The cost series of a section with a price part (computed once per carbon row and price step)."""
        price = spec.price
        assert price is not None
        if self.price is None:
            return cost_input(signal, None, weight=price.weight, now=sim.carbon.time_of(sim.t), lookahead_hours=1.0)
        key = (sim.carbon._index(sim.t), self.price._index(sim.t), spec.lookahead_hours, price.weight)
        cached = self._cost_cache.get(key)
        if cached is None:
            if len(self._cost_cache) > 64:
                self._cost_cache.clear()
            cached = self._cost_cache[key] = cost_input(
                signal,
                self.price.series_at(sim.t, history_h=spec.lookahead_hours),
                weight=price.weight,
                now=sim.carbon.time_of(sim.t),
                lookahead_hours=spec.lookahead_hours,
                price_max_staleness_s=price.max_staleness_seconds,
                price_source=f"trace/{self.price.name}",
            )
        return cached

    def snapshot(self, sim: Simulation) -> FleetSnapshot:
        """The fleet as the operator would see it from fresh GpuNode status and pod watches."""
        t = sim.t
        pod_of: dict[str, PodKey] = {}
        pods: dict[PodKey, PodView] = {}
        for job in sim.running.values():
            views = self._pods.get(job.spec.id)
            if views is None:
                views = self._pods[job.spec.id] = _pods_of(sim, job)
            pods.update(views)
            for key, gpus in zip(job.pods, job.pod_gpus, strict=True):
                for g in gpus:
                    pod_of[g.identity.uuid] = key
        gpus_view = []
        for node, devices, engine in zip(sim.nodes, sim.node_gpus, sim.engines, strict=True):
            outcomes = engine.outcomes
            for g in devices:
                ident = g.identity
                owner = pod_of.get(ident.uuid)
                gpus_view.append(
                    engine_gpu_view(
                        node.name,
                        ident,
                        g.constraints_,
                        power_watts=g.power,
                        energy_joules=g.energy_at(t),
                        limit_watts=g.limit,
                        pods=(owner,) if owner is not None else (),
                        outcome=outcomes.get(ident.uuid),
                    )
                )
        return FleetSnapshot(
            gpus=tuple(gpus_view),
            pods=pods,
            nodes=tuple(n.name for n in sim.nodes),
            node_labels={n.name: n.labels for n in sim.nodes},
        )


def engine_gpu_view(
    node: str,
    identity: GpuIdentity,
    constraints: PowerConstraints,
    *,
    power_watts: float,
    energy_joules: float | None,
    limit_watts: float,
    pods: tuple[PodKey, ...],
    outcome: GpuOutcome | None,
) -> GpuView:
    """A GPU driven by an in-process agent engine, as the planner sees it (what a GpuNode status says).

    Shared by the simulator and ``wattplane run``; ``budget_limited`` is what the agent reports as
    ``budgetLimitWatts``: its budget loop holds the GPU below its target.
    """
    return GpuView(
        node=node,
        uuid=identity.uuid,
        index=identity.index,
        model=identity.model,
        min_watts=constraints.min_watts,
        max_watts=constraints.max_watts,
        default_watts=constraints.default_watts,
        power_watts=power_watts,
        energy_joules=energy_joules,
        limit_watts=limit_watts,
        pods=pods,
        mig_enabled=identity.mig_enabled,
        budget_limited=outcome is not None and outcome.budget_limit_watts is not None,
    )


def _pods_of(sim: Simulation, job: RunningJob) -> dict[PodKey, PodView]:
    spec = job.spec
    labels = {"wattplane.io/workload": spec.kind, "app": job.workload.family.replace("/", "-")}
    if job.training:
        labels |= {"wattplane.io/energy": "efficient", "wattplane.io/carbon": "aware"}
        if len(job.pods) > 1:
            labels["wattplane.io/distributed"] = "true"
    annotations = {JOB: spec.id, PRIORITY: spec.priority, WORKLOAD: spec.kind}
    if job.training:
        annotations[PROGRESS_METRIC] = SIM_PROGRESS_METRIC
    if job.serving is not None:
        annotations[SERVING_METRICS] = SIM_SERVING_METRICS
    out = {}
    for key, gpus in zip(job.pods, job.pod_gpus, strict=True):
        out[key] = PodView(
            namespace=key[0],
            name=key[1],
            uid=f"uid-{key[1]}",
            node=sim.nodes[gpus[0].node_index].name,
            labels=labels,
            annotations=annotations,
            owner=f"Job/{spec.id}",
        )
    return out
