"""What a run measured, and how a run compares with the uncapped run of the same scenario.

Scopes, so that every run is compared on the same work:

* ``energy_kwh`` / ``carbon_kg``: energy and emissions of the GPUs while jobs held them, every job from
  start to finish (training jobs submitted during the run are run to completion, so every run does the
  same training work; services run for the run's duration);
* ``fleet_energy_kwh`` / ``fleet_carbon_kg``: every GPU, idle ones included, over the run's duration only;
* ``cost`` (with a price trace): the jobs' energy times the price in force, same scope as ``energy_kwh``,
  in ``cost_currency`` (negative prices count: energy bought then earns money);
* JCT changes compare each training job with itself in the uncapped run (jobs that finished in both);
* high-priority throughput: work of ``high`` jobs done within the duration (``[0, duration_s)``), in
  uncapped GPU-seconds (training: epochs × uncapped seconds per epoch × GPUs; inference: demand
  served), over the same in the uncapped run. Work done after the duration counts in neither run: a
  training job that starts in the drain contributes nothing, and a service that got no GPUs within the
  duration never runs (``unstarted_services``). A GPU never serves more than its uncapped rate, so the
  ratio can exceed 1 only where the FCFS scheduler hands a service its GPUs earlier than uncapped did.
* LLM services (``serving``, only when some ran on the serving model; **modelled**): per service its
  output tokens, GPU energy, joules per output token and the minutes in which any replica's p90 TPOT or
  p90 TTFT was above the run's objectives (or it fell behind its requests).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from wattplane.sim.engine import Simulation
from wattplane.sim.physics import RunningJob

_J_PER_KWH = 3.6e6


@dataclass(frozen=True)
class JobReceipt:
    """One job's bill."""

    id: str
    kind: str
    priority: str
    gpus: int
    gpu_model: str
    workload: str
    submit_s: float
    start_s: float
    end_s: float | None
    jct_s: float | None
    energy_kwh: float
    carbon_kg: float
    mean_limit_watts: float
    #: Work in uncapped GPU-seconds: done in total, and done within the run's duration (0 for a job
    #: that started after it).
    work_gpu_s: float
    window_work_gpu_s: float
    #: Inference only: demand (uncapped GPU-seconds) and backlog left at the end.
    demand_gpu_s: float = 0.0
    backlog_gpu_s: float = 0.0
    #: Energy cost in the price trace's currency (``None`` without one).
    cost: float | None = None

    @property
    def completed(self) -> bool:
        """Whether the job finished its work (services: ran to the end of the run)."""
        return self.end_s is not None


@dataclass(frozen=True)
class ServingResult:
    """One LLM service's serving figures (modelled: :mod:`wattplane.sim.llm`)."""

    id: str
    gpus: int
    output_tokens: float
    energy_kwh: float
    #: GPU energy per output token (``None`` when it served none).
    joules_per_token: float | None
    #: Clock minutes whose p90 TPOT or p90 TTFT (over that minute) was above the objective, or with
    #: requests backlogged.
    slo_minutes: float
    #: Clock minutes the service ran in.
    minutes: float
    #: Seconds in which the steady-state p90 of a replica was above an objective (finer than minutes).
    seconds_above_slo: float = 0.0


@dataclass(frozen=True)
class ScopeResult:
    """A power budget's record over the run."""

    name: str
    watts: float
    over_s: float
    longest_over_s: float
    max_watts: float


@dataclass(frozen=True)
class RunResult:
    """Everything one run measured."""

    name: str
    duration_s: float
    end_s: float
    energy_kwh: float
    carbon_kg: float
    fleet_energy_kwh: float
    fleet_carbon_kg: float
    fleet_energy_all_kwh: float
    idle_energy_kwh: float
    scopes: tuple[ScopeResult, ...]
    receipts: tuple[JobReceipt, ...]
    unfinished_jobs: int
    queued_jobs: int
    #: Services still waiting for GPUs when the run ended, which therefore never ran.
    unstarted_services: int
    plan_rounds: int
    agent_ticks: int
    events: int
    timeline_step_s: float
    timeline_power_w: tuple[float, ...]
    timeline_max_w: tuple[float, ...]
    timeline_mean_limit_w: tuple[float | None, ...]
    timeline_intensity: tuple[float, ...]
    wall_s: float = 0.0
    notes: tuple[str, ...] = field(default_factory=tuple)
    cost: float | None = None
    cost_currency: str = ""
    #: LLM services (empty without any): per-service serving figures.
    serving: tuple[ServingResult, ...] = ()
    #: The objectives ``slo_minutes`` are counted against: (p90 TPOT, p90 TTFT), seconds.
    serving_slo_s: tuple[float, float] = (0.1, 2.0)

    @property
    def output_tokens(self) -> float:
        """Output tokens of every LLM service."""
        return math.fsum(s.output_tokens for s in self.serving)

    @property
    def serving_joules_per_token(self) -> float | None:
        """GPU energy of every LLM service over their output tokens (``None`` without tokens)."""
        tokens = self.output_tokens
        return math.fsum(s.energy_kwh for s in self.serving) * _J_PER_KWH / tokens if tokens > 0 else None

    @property
    def slo_minutes(self) -> float:
        """Service-minutes above an objective, all LLM services."""
        return math.fsum(s.slo_minutes for s in self.serving)

    @property
    def serving_minutes(self) -> float:
        """Service-minutes of every LLM service."""
        return math.fsum(s.minutes for s in self.serving)

    @property
    def high_priority_work_gpu_s(self) -> float:
        """Work of high-priority jobs done within the duration."""
        return math.fsum(r.window_work_gpu_s for r in self.receipts if r.priority == "high")


def collect(sim: Simulation, name: str, *, wall_s: float = 0.0, notes: Sequence[str] = ()) -> RunResult:
    """Read a finished simulation's accounting into a :class:`RunResult`."""
    jobs = [*sim.finished.values(), *sim.running.values()]
    receipts = tuple(sorted((_receipt(sim, j) for j in jobs), key=lambda r: r.id))
    job_energy = math.fsum(j.energy_j for j in jobs)
    price = getattr(sim.carbon, "price", None)  # a PricedCarbonTrack's (wattplane.sim.price)
    tl = sim.timeline
    mean_limit = tuple(
        (lim / busy) if busy > 0 else None for lim, busy in zip(tl.busy_limit_ws, tl.busy_gpu_s, strict=True)
    )
    return RunResult(
        name=name,
        duration_s=sim.options.duration_s,
        end_s=sim.t,
        energy_kwh=job_energy / _J_PER_KWH,
        carbon_kg=math.fsum(j.carbon_g for j in jobs) / 1000.0,
        fleet_energy_kwh=sim.window_energy_j / _J_PER_KWH,
        fleet_carbon_kg=sim.window_carbon_g / 1000.0,
        fleet_energy_all_kwh=sim.fleet_energy_j / _J_PER_KWH,
        idle_energy_kwh=(sim.fleet_energy_j - job_energy) / _J_PER_KWH,
        scopes=tuple(
            ScopeResult(s.name, s.watts, st.over_s, st.longest_over_s, st.max_watts)
            for s, st in zip(sim.scopes, sim.scope_stats, strict=True)
        ),
        receipts=receipts,
        unfinished_jobs=sum(1 for j in sim.running.values() if j.training),
        queued_jobs=len(sim.queue),
        unstarted_services=len(sim.unstarted_services),
        plan_rounds=sim.plan_rounds,
        agent_ticks=sim.agent_ticks,
        events=sim.events,
        timeline_step_s=tl.step_s,
        timeline_power_w=tuple(e / c if c > 0 else 0.0 for e, c in zip(tl.energy_j, tl.covered_s, strict=True)),
        timeline_max_w=tuple(tl.max_watts),
        timeline_mean_limit_w=mean_limit,
        timeline_intensity=tuple(i / c if c > 0 else 0.0 for i, c in zip(tl.intensity_s, tl.covered_s, strict=True)),
        wall_s=wall_s,
        notes=tuple(notes),
        cost=math.fsum(j.cost for j in jobs) if price is not None else None,
        cost_currency=price.currency if price is not None else "",
        serving=tuple(_serving(sim, j) for j in sorted(jobs, key=lambda j: j.spec.id) if j.serving is not None),
        serving_slo_s=(sim.options.serving_slo.tpot_p90_s, sim.options.serving_slo.ttft_p90_s),
    )


def _serving(sim: Simulation, job: RunningJob) -> ServingResult:
    serving = job.serving
    assert serving is not None
    tokens = serving.output_tokens
    return ServingResult(
        id=job.spec.id,
        gpus=len(job.gpus),
        output_tokens=tokens,
        energy_kwh=job.energy_j / _J_PER_KWH,
        joules_per_token=job.energy_j / tokens if tokens > 0 else None,
        slo_minutes=float(serving.slo_minutes),
        minutes=float(serving.minutes_seen),
        seconds_above_slo=serving.above_slo_s,
    )


def _receipt(sim: Simulation, job: RunningJob) -> JobReceipt:
    unit = job.workload.uncapped_seconds_per_epoch * len(job.gpus) if job.training else 1.0
    at_window_end = job.extra.get("window_progress", job.progress)
    busy = (job.finished_s if job.finished_s is not None else sim.t) - job.start_s
    return JobReceipt(
        id=job.spec.id,
        kind=job.spec.kind,
        priority=job.spec.priority,
        gpus=len(job.gpus),
        gpu_model=job.gpus[0].model.name,
        workload=job.workload.name,
        submit_s=job.spec.submit_s,
        start_s=job.start_s,
        end_s=job.finished_s,
        jct_s=(job.finished_s - job.spec.submit_s) if job.finished_s is not None else None,
        energy_kwh=job.energy_j / _J_PER_KWH,
        carbon_kg=job.carbon_g / 1000.0,
        mean_limit_watts=job.limit_seconds / busy if busy > 0 else job.limits_mean,
        work_gpu_s=job.progress * unit,
        window_work_gpu_s=at_window_end * unit,
        demand_gpu_s=job.demand_total,
        backlog_gpu_s=job.backlog,
        cost=job.cost if job.price_at is not None else None,
    )


@dataclass(frozen=True)
class Comparison:
    """One run against the uncapped run of the same scenario (changes are fractions, −0.1 = 10 % less)."""

    name: str
    energy_change: float
    carbon_change: float
    fleet_energy_change: float
    fleet_carbon_change: float
    mean_jct_change: float | None
    p95_jct_change: float | None
    p99_jct_change: float | None
    max_jct_change: float | None
    #: Run time (start to end, queueing left out): what a per-job slowdown promise controls. JCT also
    #: carries queueing, which a slower job causes for the jobs waiting for its GPUs.
    p99_run_time_change: float | None
    max_run_time_change: float | None
    high_priority_jct_change: float | None
    high_priority_throughput: float | None
    seconds_over_budget: float
    longest_over_budget_s: float
    compared_jobs: int
    #: Change of the jobs' energy cost (``None`` without a price trace or with a base cost ≤ 0).
    cost_change: float | None = None
    #: Change of the LLM services' joules per output token (``None`` without LLM services).
    joules_per_token_change: float | None = None
    #: Service-minutes above an objective, minus the same in the uncapped run (``None`` without LLM services).
    slo_minutes_change: float | None = None


def compare(run: RunResult, base: RunResult) -> Comparison:
    """``run`` relative to ``base`` (the uncapped run)."""
    base_jct = {r.id: r.jct_s for r in base.receipts if r.kind == "training" and r.jct_s}
    base_run = {r.id: r.end_s - r.start_s for r in base.receipts if r.kind == "training" and r.end_s is not None}
    runs = [
        (r.end_s - r.start_s) / base_run[r.id] - 1.0
        for r in run.receipts
        if r.kind == "training" and r.end_s is not None and base_run.get(r.id, 0.0) > 0
    ]
    changes: list[float] = []
    high: list[float] = []
    for r in run.receipts:
        ref = base_jct.get(r.id)
        if r.kind != "training" or r.jct_s is None or ref is None:
            continue
        changes.append(r.jct_s / ref - 1.0)
        if r.priority == "high":
            high.append(r.jct_s / ref - 1.0)
    base_high = base.high_priority_work_gpu_s
    return Comparison(
        name=run.name,
        energy_change=_change(run.energy_kwh, base.energy_kwh),
        carbon_change=_change(run.carbon_kg, base.carbon_kg),
        fleet_energy_change=_change(run.fleet_energy_kwh, base.fleet_energy_kwh),
        fleet_carbon_change=_change(run.fleet_carbon_kg, base.fleet_carbon_kg),
        mean_jct_change=math.fsum(changes) / len(changes) if changes else None,
        p95_jct_change=percentile(changes, 95) if changes else None,
        p99_jct_change=percentile(changes, 99) if changes else None,
        max_jct_change=max(changes) if changes else None,
        p99_run_time_change=percentile(runs, 99) if runs else None,
        max_run_time_change=max(runs) if runs else None,
        high_priority_jct_change=math.fsum(high) / len(high) if high else None,
        high_priority_throughput=(run.high_priority_work_gpu_s / base_high) if base_high > 0 else None,
        seconds_over_budget=math.fsum(s.over_s for s in run.scopes),
        longest_over_budget_s=max((s.longest_over_s for s in run.scopes), default=0.0),
        compared_jobs=len(changes),
        cost_change=(
            run.cost / base.cost - 1.0 if run.cost is not None and base.cost is not None and base.cost > 0 else None
        ),
        joules_per_token_change=(
            jpt / base_jpt - 1.0
            if (jpt := run.serving_joules_per_token) is not None and (base_jpt := base.serving_joules_per_token)
            else None
        ),
        slo_minutes_change=run.slo_minutes - base.slo_minutes if run.serving and base.serving else None,
    )


def _change(value: float, base: float) -> float:
    return value / base - 1.0 if base > 0 else 0.0


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile with linear interpolation between closest ranks."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    pos = (len(ordered) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def savings_share(run: Comparison, oracle: Comparison, *, key: str) -> float | None:
    """How much of the oracle's reduction ``run`` achieved (``key``: ``energy``, ``carbon`` or ``cost``)."""
    attr: Mapping[str, str] = {"energy": "energy_change", "carbon": "carbon_change", "cost": "cost_change"}
    best_value, got_value = getattr(oracle, attr[key]), getattr(run, attr[key])
    if best_value is None or got_value is None:
        return None
    best = -float(best_value)
    got = -float(got_value)
    return got / best if best > 0 else None
