"""Hindsight budget-oracle: the most work a power budget allows on a given schedule, priorities respected.

A budgeted run is judged against what *any* controller could have done under the same budget. The
oracle takes the schedule of the uncapped run (which jobs hold GPUs when, from its receipts) and, at
every instant, gives the budget to the running jobs so as to maximise work, lexicographically by
priority: the highest class gets all the watts it can turn into work first, then the next, and within
a class the watts go where they buy the most work (marginal work per watt).

**Per instant, greedy is exact.** A job's GPUs run at one limit ``l`` in ``[min, default]`` (a training
job advances at its slowest GPU, so equal limits are best; a service's GPUs share its demand equally).
Per GPU that gives a work rate ``w(l)`` (uncapped GPU-seconds per second, the unit of
:mod:`wattplane.sim.results`) and a draw ``p(l)``, from the simulator's own physics
(:mod:`wattplane.sim.physics`):

* training: ``w = r(l) / r_uncapped``, ``p = P(l)`` (the GPU works flat out);
* a service with demand ``d``: it serves ``s = min(d, c(l))`` with ``c = r(l) / r_uncapped``, works
  ``s / c`` of the time and draws ``idle + (s / c)(P(l) − idle)``; ``w = s``.

Switching between two limits within an instant (which a power limit can do, as the carbon-oracle
assumes) makes every point on the upper concave envelope of ``(p, w)`` reachable, so each job's work
is a concave, piecewise-linear function of its watts. Maximising a sum of concave functions under one
watt constraint is a fractional knapsack: start every job at its least-power point, then take the
envelope segments in decreasing work per watt (each job's own segments come in order because its
envelope is concave). Doing that class by class, highest first, is the lexicographic optimum.

The budget covers every GPU of the fleet (the ``polca`` scope: all nodes); GPUs without a job draw
their idle power, as in the simulator. Simplifications, each in the oracle's favour or neutral:
services carry no backlog (what a budget leaves unserved at one instant is lost, not served later: this
is the only place the oracle can be beaten, by a run that serves a backlog later within the window),
and the schedule is the uncapped one (a budgeted run that slows jobs runs them for longer, possibly
more at once, which can let it do more work per watt than the oracle's schedule allows; the ratio can
then exceed 1, see :func:`budget_quality`). Work is counted within ``[0, duration)``, as the run's.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from wattplane.agent.gpu.workloads import LimitCurve
from wattplane.api.annotations import PRIORITY_NAMES
from wattplane.planner.budget import budget_rank
from wattplane.sim.jobs import Demand
from wattplane.sim.results import RunResult
from wattplane.sim.scenario import Scenario

#: Priority classes in report order.
CLASSES = ("high", "normal", "low")


@dataclass(frozen=True)
class Vertex:
    """One point of a GPU's work-power envelope: extra watts above idle, work rate (uncapped GPU-s/s)."""

    extra_watts: float
    work: float


@dataclass(frozen=True)
class OracleJob:
    """A job of the uncapped schedule, as the oracle uses it."""

    id: str
    priority: str
    rank: int
    gpus: int
    curve: LimitCurve
    min_watts: float
    max_watts: float
    idle_watts: float
    start_s: float
    end_s: float
    demand: Demand | None = None

    def demand_at(self, t: float) -> float:
        """A service's demand at virtual time ``t`` (0 for training, which has none)."""
        return self.demand.at(t - self.start_s) if self.demand is not None else 0.0


@dataclass(frozen=True)
class OracleResult:
    """What the oracle achieves under ``budget_watts`` over ``[0, duration_s)``."""

    budget_watts: float
    duration_s: float
    work_gpu_s: float
    work_by_priority: Mapping[str, float]
    #: Seconds in which even every job at its least-power point exceeded the budget.
    infeasible_s: float
    #: Seconds in which the budget bound (some job below its most productive point).
    binding_s: float
    segments: int


def envelope(curve: LimitCurve, *, lo: float, hi: float, idle: float, demand: float | None) -> list[Vertex]:
    """The upper concave envelope of work over extra watts for one GPU (see the module docstring).

    ``demand`` ``None``: training. Vertices are sorted by watts; the first is the least-power point,
    the last the most work at the least power; work and watts strictly increase between them.
    """
    unit = curve.uncapped_seconds_per_unit
    limits = sorted({lo, hi, *(x for x in curve.limits if lo < x < hi)})
    points: list[tuple[float, float]] = []
    for limit in limits:
        capacity = curve.rate(limit) * unit
        busy_watts = max(curve.power(limit) - idle, 0.0)
        if demand is None:
            points.append((busy_watts, capacity))
        else:
            served = min(max(demand, 0.0), capacity)
            share = served / capacity if capacity > 0 else 0.0
            points.append((share * busy_watts, served))
    points.sort(key=lambda p: (p[0], -p[1]))
    frontier: list[tuple[float, float]] = []
    for watts, work in points:  # Pareto: more watts only for more work (ties: the most work comes first)
        if not frontier or (work > frontier[-1][1] + 1e-15 and watts > frontier[-1][0]):
            frontier.append((watts, work))
    hull: list[tuple[float, float]] = []
    for point in frontier:  # upper concave hull: drop a middle point below the chord
        while len(hull) >= 2 and _cross(hull[-2], hull[-1], point) >= 0:
            hull.pop()
        hull.append(point)
    return [Vertex(w, r) for w, r in hull]


def _cross(a: tuple[float, float], b: tuple[float, float], c: tuple[float, float]) -> float:
    """> 0 when ``b`` lies below the chord ``a → c`` (work over watts): not concave there."""
    return (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])


def jobs_from_run(uncapped: RunResult, scenario: Scenario) -> list[OracleJob]:
    """The uncapped run's schedule (receipts) with each job's curve, limits and demand, within the run."""
    specs = {j.id: j for j in scenario.jobs}
    duration = scenario.options.duration_s
    out = []
    for r in uncapped.receipts:
        if r.start_s >= duration:
            continue
        model = scenario.catalog.model(r.gpu_model)
        workload = scenario.catalog.workload(r.gpu_model, r.workload)
        end = duration if r.end_s is None else min(r.end_s, duration)
        spec = specs.get(r.id)
        demand = spec.demand if spec is not None and r.kind == "inference" else None
        if r.kind == "inference" and demand is None:
            raise ValueError(f"service {r.id}: no demand in the scenario")
        out.append(
            OracleJob(
                id=r.id,
                priority=r.priority,
                rank=budget_rank(PRIORITY_NAMES[r.priority], r.kind, True),
                gpus=r.gpus,
                curve=workload.curve,
                min_watts=model.min_watts,
                max_watts=model.default_watts,
                idle_watts=model.idle_watts,
                start_s=r.start_s,
                end_s=end,
                demand=demand,
            )
        )
    return out


def oracle_work(
    jobs: Sequence[OracleJob],
    *,
    budget_watts: float,
    fleet_idle_watts: float,
    duration_s: float,
    at_default: bool = False,
) -> OracleResult:
    """The oracle's work under ``budget_watts`` (``inf``: no budget) over ``[0, duration_s)``.

    ``fleet_idle_watts`` is every GPU of the budget's scope at idle: a busy GPU adds its extra watts.
    ``at_default``: every job at its default limit instead (no choice): with no budget this is the
    uncapped run's work exactly, which checks that this module's physics is the simulator's.
    """
    bounds = {0.0, duration_s}
    for job in jobs:
        bounds.update((job.start_s, job.end_s))
        if job.demand is not None and not math.isinf(job.demand.step_s) and len(job.demand.values) > 1:
            t = job.start_s
            while t < job.end_s:
                t = job.start_s + job.demand.next_change(t - job.start_s + 1e-9)
                if t < job.end_s:
                    bounds.add(t)
    times = sorted(b for b in bounds if 0.0 <= b <= duration_s)
    starts = sorted(jobs, key=lambda j: j.start_s)
    cache: dict[tuple[int, float, float, float, float | None], list[Vertex]] = {}
    work_by: dict[str, float] = defaultdict(float)
    infeasible = binding = 0.0
    active: list[OracleJob] = []
    next_job = 0
    for t0, t1 in itertools.pairwise(times):
        dt = t1 - t0
        if dt <= 0:
            continue
        while next_job < len(starts) and starts[next_job].start_s <= t0:
            active.append(starts[next_job])
            next_job += 1
        active = [j for j in active if j.end_s > t0]
        rates, bound, short = _instant(active, t0, budget_watts - fleet_idle_watts, cache, at_default)
        for priority, rate in rates.items():
            work_by[priority] += rate * dt
        binding += dt if bound else 0.0
        infeasible += dt if short else 0.0
    return OracleResult(
        budget_watts=budget_watts,
        duration_s=duration_s,
        work_gpu_s=math.fsum(work_by.values()),
        work_by_priority={c: work_by.get(c, 0.0) for c in sorted(work_by, key=_class_order)},
        infeasible_s=infeasible,
        binding_s=binding,
        segments=len(times) - 1,
    )


def _instant(
    active: Sequence[OracleJob],
    t: float,
    spare: float,
    cache: dict[tuple[int, float, float, float, float | None], list[Vertex]],
    at_default: bool = False,
) -> tuple[dict[str, float], bool, bool]:
    """Work rate per priority class at one instant; whether the budget bound, whether it was short."""
    rates: dict[str, float] = defaultdict(float)
    curves: list[tuple[OracleJob, list[Vertex]]] = []
    for job in active:
        demand = job.demand_at(t) if job.demand is not None else None
        key = (id(job.curve), job.min_watts, job.max_watts, job.idle_watts, demand)  # curves outlive the cache
        env = cache.get(key)
        if env is None:
            lo = job.max_watts if at_default else job.min_watts
            env = cache[key] = envelope(job.curve, lo=lo, hi=job.max_watts, idle=job.idle_watts, demand=demand)
        curves.append((job, env))
        rates[job.priority] += job.gpus * env[0].work
        spare -= job.gpus * env[0].extra_watts
    if spare < 0:
        return dict(rates), True, True
    bound = False
    by_rank: dict[int, list[tuple[float, float, float, str]]] = defaultdict(list)
    for job, env in curves:
        for a, b in itertools.pairwise(env):
            watts = job.gpus * (b.extra_watts - a.extra_watts)
            work = job.gpus * (b.work - a.work)
            by_rank[job.rank].append((work / watts, watts, work, job.priority))
    for rank in sorted(by_rank, reverse=True):
        for _, watts, work, priority in sorted(by_rank[rank], key=lambda e: -e[0]):
            if bound:
                break
            if watts <= spare:
                rates[priority] += work
                spare -= watts
            else:
                rates[priority] += work * spare / watts
                spare = 0.0
                bound = True
    return dict(rates), bound, False


def _class_order(priority: str) -> int:
    return CLASSES.index(priority) if priority in CLASSES else len(CLASSES)


@dataclass(frozen=True)
class BudgetQuality:
    """A budgeted run against the budget-oracle and the uncapped run of the same scenario.

    Attributes:
        budget_watts: The budget.
        work_ratio: The run's work within the duration over the oracle's.
        work_ratio_by_priority: The same per priority class (classes the oracle did work in).
        high_priority_throughput: The run's high-priority work over the uncapped run's (≤ 1 expected).
        oracle_high_priority_throughput: The oracle's high-priority work over the uncapped run's.
        oracle_vs_uncapped: The oracle's work over the uncapped run's (how much the budget costs at best).
        unbudgeted_vs_uncapped: The oracle without a budget over the uncapped run's work. Above 1 only
            because some measured curves are not monotone (Zeus's ``movielens-1m/ncf`` is 6 % faster at
            some caps than uncapped, ``librispeech/deepspeech2`` 0.4 % at 275 W): the physics lets a
            cap speed a job up, and the oracle takes that.
        default_check: Every job at its default limit over the uncapped run's work: 1 to float
            rounding when this module's physics and schedule are the simulator's (a self-check).
        run_work_gpu_s / oracle / uncapped: The totals behind the ratios.
    """

    budget_watts: float
    work_ratio: float
    work_ratio_by_priority: Mapping[str, float]
    high_priority_throughput: float | None
    oracle_high_priority_throughput: float | None
    oracle_vs_uncapped: float
    unbudgeted_vs_uncapped: float
    default_check: float
    run_work_gpu_s: float
    oracle: OracleResult
    uncapped_work_gpu_s: float


def run_work_by_priority(run: RunResult) -> dict[str, float]:
    """Work within the duration per priority class (uncapped GPU-seconds), from the receipts."""
    out: dict[str, float] = defaultdict(float)
    for r in run.receipts:
        out[r.priority] += r.window_work_gpu_s
    return dict(out)


def fleet_idle_watts(scenario: Scenario) -> float:
    """Every GPU of the scenario at idle, watts."""
    return math.fsum(n.gpus * scenario.catalog.model(n.model).idle_watts for n in scenario.nodes)


def budget_quality(uncapped: RunResult, run: RunResult, scenario: Scenario, budget_watts: float) -> BudgetQuality:
    """Compare ``run`` (under ``budget_watts`` over the whole fleet) with the oracle and ``uncapped``."""
    jobs = jobs_from_run(uncapped, scenario)
    idle = fleet_idle_watts(scenario)
    duration = scenario.options.duration_s
    oracle = oracle_work(jobs, budget_watts=budget_watts, fleet_idle_watts=idle, duration_s=duration)
    free = oracle_work(jobs, budget_watts=math.inf, fleet_idle_watts=idle, duration_s=duration)
    fixed = oracle_work(jobs, budget_watts=math.inf, fleet_idle_watts=idle, duration_s=duration, at_default=True)
    got = run_work_by_priority(run)
    base = run_work_by_priority(uncapped)
    run_total = math.fsum(got.values())
    base_total = math.fsum(base.values())
    base_high = base.get("high", 0.0)
    return BudgetQuality(
        budget_watts=budget_watts,
        work_ratio=run_total / oracle.work_gpu_s if oracle.work_gpu_s > 0 else math.nan,
        work_ratio_by_priority={c: got.get(c, 0.0) / w for c, w in oracle.work_by_priority.items() if w > 0},
        high_priority_throughput=got.get("high", 0.0) / base_high if base_high > 0 else None,
        oracle_high_priority_throughput=oracle.work_by_priority.get("high", 0.0) / base_high if base_high > 0 else None,
        oracle_vs_uncapped=oracle.work_gpu_s / base_total if base_total > 0 else math.nan,
        unbudgeted_vs_uncapped=free.work_gpu_s / base_total if base_total > 0 else math.nan,
        default_check=fixed.work_gpu_s / base_total if base_total > 0 else math.nan,
        run_work_gpu_s=run_total,
        oracle=oracle,
        uncapped_work_gpu_s=base_total,
    )
