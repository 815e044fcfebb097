"""The event loop's physics and books: energy is the integral of power, carbon of power × intensity.

Each check computes the expected figure independently (from the curves and the trace), not from the
simulator's own accumulators.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

import pytest
from wattplane.api.v1alpha1.gpunode import GpuTarget
from wattplane.carbon.trace import load_trace
from wattplane.sim.carbon import CarbonTrack
from wattplane.sim.catalog import Catalog
from wattplane.sim.controllers import CarbonOracleController, NullController, ZeusOracleController
from wattplane.sim.engine import Controller, SimOptions, Simulation
from wattplane.sim.fleet import expand, parse_fleet
from wattplane.sim.jobs import Demand, JobSpec, synthetic_training
from wattplane.sim.physics import RunningJob
from wattplane.sim.results import collect, compare

CATALOG = Catalog.builtin()
CISO = Path(__file__).resolve().parents[3] / "operator" / "wattplane" / "sim" / "data"
CISO /= "electricitymaps_US-CAL-CISO_2023_hourly.csv"
START = datetime(2023, 6, 1, 0, tzinfo=UTC)
TRACK = CarbonTrack.load(CISO, START)
A40 = CATALOG.model("A40")


def simulate(
    jobs: list[JobSpec], controller: Controller | None = None, *, fleet: str = "2x4xA40", hours: float = 6.0
) -> Simulation:
    sim = Simulation(
        nodes=expand(parse_fleet(fleet)),
        catalog=CATALOG,
        jobs=jobs,
        carbon=TRACK,
        controller=controller or NullController(),
        options=SimOptions(duration_s=hours * 3600.0, timeline_step_s=600.0),
    )
    sim.run()
    return sim


def trace_integral(t0: float, t1: float) -> float:
    """∫ intensity dt over virtual seconds [t0, t1), straight from the trace file (g/kWh · s)."""
    series = load_trace(CISO)
    first = series.index_at(START)
    assert first is not None
    total = 0.0
    for h in range(int(t0 // 3600), math.ceil(t1 / 3600)):
        a, b = max(t0, h * 3600.0), min(t1, (h + 1) * 3600.0)
        total += series.values[first + h] * (b - a)
    return total


def test_an_idle_fleet_draws_idle_power_times_time_and_emits_its_integral() -> None:
    sim = simulate([], hours=5.5)
    gpus = 8
    assert sim.t == pytest.approx(5.5 * 3600)
    assert sim.fleet_energy_j == pytest.approx(gpus * A40.idle_watts * 5.5 * 3600, rel=1e-12)
    expected_g = gpus * A40.idle_watts * trace_integral(0, 5.5 * 3600) / 3.6e6
    assert sim.fleet_carbon_g == pytest.approx(expected_g, rel=1e-12)


def test_one_uncapped_job_takes_its_curve_time_and_energy() -> None:
    curve = CATALOG.workload("A40", "imagenet/resnet50").curve
    job = JobSpec(id="j", submit_s=100.0, gpus=1, workload="imagenet/resnet50", epochs=2.0)
    sim = simulate([job])
    done = sim.finished["j"]
    assert done.finished_s == pytest.approx(100.0 + 2 * curve.time_per_unit(300.0), rel=1e-12)
    assert done.energy_j == pytest.approx(2 * curve.energy_per_unit(300.0), rel=1e-12)
    t0, t1 = 100.0, done.finished_s
    assert done.carbon_g == pytest.approx(curve.power(300.0) * trace_integral(t0, t1) / 3.6e6, rel=1e-12)


def test_zeus_oracle_job_runs_at_its_limit_through_the_real_agent() -> None:
    curve = CATALOG.workload("A40", "imagenet/resnet50").curve
    oracle = ZeusOracleController(eta=1.0)
    sim = simulate([JobSpec(id="j", submit_s=0.0, gpus=2, workload="imagenet/resnet50", epochs=1.0)], oracle)
    watts = oracle.chosen["j"]
    assert watts < 300.0
    done = sim.finished["j"]
    assert done.finished_s == pytest.approx(curve.time_per_unit(watts), rel=1e-9)
    assert done.energy_j == pytest.approx(2 * curve.energy_per_unit(watts), rel=1e-9)
    assert sum(e.stats.writes for e in sim.engines) >= 4  # set on start, restored after
    assert all(g.limit == 300.0 for g in sim.gpus)  # the agents restored the prior limit


class OneGpuCapped:
    """Caps only the first GPU of every job (to check the slowest-GPU rule)."""

    name = "one-capped"
    plan_interval_s = None

    def __init__(self, watts: float) -> None:
        self.watts = watts

    def attach(self, sim: Simulation) -> None: ...
    def plan_round(self, sim: Simulation) -> None: ...
    def job_finished(self, sim: Simulation, job: RunningJob) -> None: ...
    def wakeup(self, sim: Simulation, payload: object) -> None: ...

    def job_started(self, sim: Simulation, job: RunningJob) -> None:
        g = job.gpus[0]
        sim.apply(g.node_index, (GpuTarget(uuid=g.identity.uuid, power_limit_watts=self.watts),))


def test_a_data_parallel_job_waits_for_its_slowest_gpu_and_the_others_idle_in_between() -> None:
    curve = CATALOG.workload("A40", "squad/bert_base_uncased").curve
    sim = simulate(
        [JobSpec(id="j", submit_s=0.0, gpus=2, workload="squad/bert_base_uncased", epochs=1.0)], OneGpuCapped(150.0)
    )
    done = sim.finished["j"]
    slow = curve.time_per_unit(150.0)
    assert done.finished_s == pytest.approx(slow, rel=1e-9)
    busy = curve.time_per_unit(300.0) / slow
    fast_power = A40.idle_watts + busy * (curve.power(300.0) - A40.idle_watts)
    assert done.energy_j == pytest.approx((curve.power(150.0) + fast_power) * slow, rel=1e-9)


def test_books_balance_on_a_busy_fleet() -> None:
    jobs = synthetic_training(
        seed=7, duration_s=6 * 3600.0, fleet_gpus=8, workloads=CATALOG.families("A40"), median_hours=1.0
    )
    for controller in (NullController(), ZeusOracleController(), CarbonOracleController(slowdown=0.05)):
        sim = simulate(jobs, controller)
        devices = math.fsum(g.energy_at(sim.t) for g in sim.gpus)
        assert devices == pytest.approx(sim.fleet_energy_j, rel=1e-9)
        jobs_energy = math.fsum(j.energy_j for j in [*sim.finished.values(), *sim.running.values()])
        busy = math.fsum(sim.timeline.busy_gpu_s)
        idle_energy = (8 * sim.t - busy) * A40.idle_watts
        assert jobs_energy + idle_energy == pytest.approx(sim.fleet_energy_j, rel=1e-9)
        assert math.fsum(sim.timeline.energy_j) == pytest.approx(sim.fleet_energy_j, rel=1e-9)
        assert math.fsum(sim.timeline.carbon_g) == pytest.approx(sim.fleet_carbon_g, rel=1e-9)
        assert not sim.running and not sim.queue
        for job in sim.finished.values():
            assert job.progress == pytest.approx(job.work, rel=1e-9)


def test_runs_are_deterministic() -> None:
    jobs = synthetic_training(seed=1, duration_s=4 * 3600.0, fleet_gpus=8, workloads=CATALOG.families("A40"))
    a = collect(simulate(jobs, CarbonOracleController()), "x")
    b = collect(simulate(jobs, CarbonOracleController()), "x")
    assert a == b


def test_an_inference_service_serves_its_demand_and_queues_what_a_cap_leaves_over() -> None:
    demand = Demand(step_s=1800.0, values=(0.5, 0.95))
    service = JobSpec(id="s", submit_s=0.0, gpus=1, workload="squad/bert_base_uncased", kind="inference", demand=demand)
    free = simulate([service], hours=2.0).finished["s"]
    assert free.progress == pytest.approx(free.demand_total, rel=1e-12) and free.backlog == 0.0
    assert free.demand_total == pytest.approx(2 * 1800.0 * (0.5 + 0.95), rel=1e-12)
    curve = CATALOG.workload("A40", "squad/bert_base_uncased").curve
    capacity = curve.rate(200.0) / curve.rate(300.0)
    assert 0.5 < capacity < 0.95
    capped = simulate([service], OneGpuCapped(200.0), hours=2.0).finished["s"]
    assert capped.progress + capped.backlog == pytest.approx(capped.demand_total, rel=1e-9)
    assert capped.backlog > 0 and capped.progress < free.progress
    # Half hours at demand 0.5, 0.95, 0.5, 0.95: the backlog grows by (0.95 - c)·1800 in the busy ones and
    # drains at (c - 0.5) per second in the quiet one between them.
    grow = (0.95 - capacity) * 1800.0
    drained = min(grow, (capacity - 0.5) * 1800.0)
    assert capped.backlog == pytest.approx(2 * grow - drained, rel=1e-9)


def test_high_priority_work_counts_only_what_was_done_within_the_run() -> None:
    """A cap can delay a service past the run's end; it must then count as lost, not as extra work.

    One GPU, one hour: a training job holds it for 50 uncapped minutes, a high-priority service (two-hour
    lifetime, demand 0.5) and a high-priority training job wait behind it. Uncapped, the service gets
    the GPU for the last 10 minutes. At 150 W the training job runs past the hour, so the service never
    runs within it. Counting the drain (as the simulator once did) credited the capped run with the
    service's whole lifetime (3,600 GPU-seconds against 300) and both runs with the training job that
    starts after the hour: a high-priority throughput of 3.7.
    """
    uncapped_s = 3000.0
    jobs = [
        JobSpec(id="a-train", submit_s=0.0, gpus=1, workload="squad/bert_base_uncased", duration_s=uncapped_s),
        JobSpec(
            id="b-serve",
            submit_s=60.0,
            gpus=1,
            workload="squad/bert_base_uncased",
            duration_s=7200.0,
            priority="high",
            kind="inference",
            demand=Demand.constant(0.5),
        ),
        JobSpec(id="c-train", submit_s=120.0, gpus=1, workload="squad/bert_base_uncased", epochs=1.0, priority="high"),
    ]
    curve = CATALOG.workload("A40", "squad/bert_base_uncased").curve
    assert uncapped_s * curve.time_per_unit(150.0) / curve.time_per_unit(300.0) > 3600.0
    free = simulate(jobs, fleet="1x1xA40", hours=1.0)
    capped = simulate(jobs, OneGpuCapped(150.0), fleet="1x1xA40", hours=1.0)
    base, run = collect(free, "uncapped"), collect(capped, "capped")

    served = {r.id: r for r in base.receipts}
    assert served["b-serve"].start_s == pytest.approx(uncapped_s, rel=1e-12)
    assert served["b-serve"].window_work_gpu_s == pytest.approx(0.5 * 600.0, rel=1e-9)
    # The high-priority training job starts only after the run (once the service stops): none of its
    # work is within the run, in either run.
    assert served["c-train"].start_s == pytest.approx(3600.0) and served["c-train"].work_gpu_s > 0
    assert served["c-train"].window_work_gpu_s == 0.0
    assert base.high_priority_work_gpu_s == pytest.approx(300.0, rel=1e-9) and base.unstarted_services == 0

    # Capped: the service was still queued at the end, so it never ran and used no energy.
    assert [s.id for s in capped.unstarted_services] == ["b-serve"] and run.unstarted_services == 1
    assert "b-serve" not in capped.finished and "b-serve" not in capped.running
    assert {r.id for r in run.receipts} == {"a-train", "c-train"}
    assert run.high_priority_work_gpu_s == 0.0
    assert compare(run, base).high_priority_throughput == 0.0
