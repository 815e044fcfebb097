"""The budget-oracle: optimal per instant, priorities first, and the simulator's own physics."""

from __future__ import annotations

import itertools
import math
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wattplane.sim.budgetoracle import (
    OracleJob,
    budget_quality,
    envelope,
    fleet_idle_watts,
    jobs_from_run,
    oracle_work,
)
from wattplane.sim.carbon import CarbonTrack
from wattplane.sim.catalog import Catalog
from wattplane.sim.engine import SimOptions
from wattplane.sim.fleet import expand, parse_fleet
from wattplane.sim.jobs import Demand
from wattplane.sim.results import RunResult
from wattplane.sim.scenario import RunSpec, Scenario, resolve_workloads, run_all, shipped_policy, with_budget
from wattplane.sim.traces import read_jobs

CATALOG = Catalog.builtin()
A40 = CATALOG.model("A40")
FAMILIES = CATALOG.families("A40")
ROOT = Path(__file__).resolve().parents[3]
DATA = ROOT / "operator" / "wattplane" / "sim" / "data"
CARBON = "electricitymaps_US-CAL-CISO_2023_hourly.csv"


def job(name: str, family: str, *, gpus: int = 1, priority: str = "normal", demand: float | None = None) -> OracleJob:
    rank = {"low": 0, "normal": 500, "high": 1000}[priority]
    return OracleJob(
        id=name,
        priority=priority,
        rank=rank,
        gpus=gpus,
        curve=CATALOG.workload("A40", family).curve,
        min_watts=A40.min_watts,
        max_watts=A40.default_watts,
        idle_watts=A40.idle_watts,
        start_s=0.0,
        end_s=1.0,
        demand=None if demand is None else Demand.constant(demand),
    )


def points(j: OracleJob, demand: float | None) -> list[tuple[float, float]]:
    """(extra watts, work) per GPU at every knot, straight from the simulator's physics formulas."""
    c = j.curve
    unit = c.uncapped_seconds_per_unit
    out = []
    for limit in sorted({j.min_watts, j.max_watts, *(x for x in c.limits if j.min_watts < x < j.max_watts)}):
        capacity = c.rate(limit) * unit
        busy = 1.0 if demand is None else min(demand, capacity) / capacity
        work = capacity if demand is None else min(demand, capacity)
        out.append((busy * (c.power(limit) - j.idle_watts), work))
    return out


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("demand", [None, 0.0, 0.3, 0.9])
def test_envelope_is_concave_and_above_every_operating_point(family: str, demand: float | None) -> None:
    j = job("j", family, demand=demand)
    env = envelope(j.curve, lo=j.min_watts, hi=j.max_watts, idle=j.idle_watts, demand=demand)
    watts = [v.extra_watts for v in env]
    work = [v.work for v in env]
    assert watts == sorted(watts) and work == sorted(work)
    slopes = [(b.work - a.work) / (b.extra_watts - a.extra_watts) for a, b in itertools.pairwise(env)]
    assert all(a >= b - 1e-12 for a, b in itertools.pairwise(slopes)) and all(s > 0 for s in slopes)
    pts = points(j, demand)
    assert env[0].extra_watts == pytest.approx(min(p for p, _ in pts))
    assert env[-1].work == pytest.approx(max(w for _, w in pts))
    for p, w in pts:  # every real operating point is on or below the envelope
        if p >= env[-1].extra_watts:
            assert w <= env[-1].work + 1e-12
            continue
        k = max(i for i, v in enumerate(env) if v.extra_watts <= p + 1e-12)
        a, b = env[k], env[min(k + 1, len(env) - 1)]
        on = a.work if b is a else a.work + (p - a.extra_watts) * (b.work - a.work) / (b.extra_watts - a.extra_watts)
        assert w <= on + 1e-9


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(FAMILIES), st.integers(1, 4)), min_size=1, max_size=3),
    st.floats(0.0, 1.0),
)
def test_one_instant_is_optimal(spec: list[tuple[str, int]], fraction: float) -> None:
    """Greedy on the envelopes is at least every fixed choice of limits, and at most the Lagrangian bound."""
    jobs = [job(f"j{i}", fam, gpus=g) for i, (fam, g) in enumerate(spec)]
    pts = [points(j, None) for j in jobs]
    least = sum(j.gpus * min(p for p, _ in ps) for j, ps in zip(jobs, pts, strict=True))
    most = sum(j.gpus * max(p for p, _ in ps) for j, ps in zip(jobs, pts, strict=True))
    spare = least + fraction * (most - least)
    got = oracle_work(jobs, budget_watts=spare, fleet_idle_watts=0.0, duration_s=1.0).work_gpu_s
    best_fixed = max(
        (
            sum(j.gpus * w for j, (_, w) in zip(jobs, choice, strict=True))
            for choice in itertools.product(*pts)
            if sum(j.gpus * p for j, (p, _) in zip(jobs, choice, strict=True)) <= spare + 1e-9
        ),
        default=-math.inf,
    )
    assert got >= best_fixed - 1e-9
    for lam in [k / 2000 for k in range(0, 200)]:  # weak duality: no allocation beats any bound
        bound = lam * spare + sum(j.gpus * max(w - lam * p for p, w in ps) for j, ps in zip(jobs, pts, strict=True))
        assert got <= bound + 1e-9


def test_high_priority_is_served_first_and_low_takes_what_is_left() -> None:
    service = job("svc", "squad/bert_base_uncased", gpus=2, priority="high", demand=0.8)
    train = job("train", "imagenet/resnet50", gpus=2, priority="low")
    env_s = envelope(service.curve, lo=100, hi=300, idle=30, demand=0.8)
    env_t = envelope(train.curve, lo=100, hi=300, idle=30, demand=None)
    need_service = 2 * env_s[-1].extra_watts
    floor_train = 2 * env_t[0].extra_watts
    result = oracle_work([service, train], budget_watts=need_service + floor_train, fleet_idle_watts=0.0, duration_s=1)
    assert result.work_by_priority["high"] == pytest.approx(2 * 0.8)  # the whole demand
    assert result.work_by_priority["low"] == pytest.approx(2 * env_t[0].work)  # at its floor
    assert result.binding_s == 1.0 and result.infeasible_s == 0.0
    short = oracle_work([service, train], budget_watts=0.0, fleet_idle_watts=0.0, duration_s=1)
    assert short.infeasible_s == 1.0


@pytest.fixture(scope="module")
def smoke() -> tuple[Scenario, list[RunResult]]:
    nodes = expand(parse_fleet("1x8xA40"))
    jobs = read_jobs(
        ROOT / "tests" / "unit" / "sim" / "data" / "alibaba_pods_slice.csv",
        duration_s=7200.0,
        fleet_gpus=8,
        utilisation=1.6,
        alibaba_offset_s=10_368_000.0,
    )
    jobs += read_jobs(DATA / "azure_llm_inference_trace_2023_conv.csv", duration_s=7200.0, fleet_gpus=8)
    scenario = Scenario(
        nodes=nodes,
        catalog=CATALOG,
        jobs=resolve_workloads(jobs, CATALOG, nodes),
        carbon=CarbonTrack.load(DATA / CARBON, datetime(2023, 6, 10, tzinfo=UTC)),
        options=SimOptions(duration_s=7200.0),
    )
    specs = [
        RunSpec("uncapped", baseline="uncapped"),
        RunSpec("polca", with_budget(shipped_policy("polca"), 0.6 * scenario.nameplate_watts), baseline="polca"),
    ]
    return scenario, run_all(scenario, specs)


def test_oracle_on_a_simulated_schedule(smoke: tuple[Scenario, list[RunResult]]) -> None:
    scenario, (base, polca) = smoke
    jobs = jobs_from_run(base, scenario)
    idle = fleet_idle_watts(scenario)
    assert idle == 8 * A40.idle_watts
    # At default limits and without a budget the oracle redoes the uncapped run's work exactly.
    fixed = oracle_work(jobs, budget_watts=math.inf, fleet_idle_watts=idle, duration_s=7200.0, at_default=True)
    uncapped = sum(r.window_work_gpu_s for r in base.receipts)
    assert fixed.work_gpu_s == pytest.approx(uncapped, rel=1e-9)
    # More budget never gives less work, and the high class is never cut while it fits.
    works = [
        oracle_work(jobs, budget_watts=f * scenario.nameplate_watts, fleet_idle_watts=idle, duration_s=7200.0)
        for f in (0.4, 0.5, 0.6, 0.8, 1.0)
    ]
    totals = [w.work_gpu_s for w in works]
    assert totals == sorted(totals) and totals[0] < totals[-1]
    high = sum(r.window_work_gpu_s for r in base.receipts if r.priority == "high")
    assert works[2].work_by_priority["high"] == pytest.approx(high, rel=1e-9)

    q = budget_quality(base, polca, scenario, 0.6 * scenario.nameplate_watts)
    assert q.default_check == pytest.approx(1.0, rel=1e-9)
    assert q.oracle.work_gpu_s == pytest.approx(works[2].work_gpu_s)
    assert q.work_ratio == pytest.approx(q.run_work_gpu_s / q.oracle.work_gpu_s)
    assert 0.5 < q.work_ratio <= 1.0
    assert q.high_priority_throughput is not None and q.high_priority_throughput <= 1.0
