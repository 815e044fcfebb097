"""A demand-response event in the simulator: cut a 256-GPU fleet's power by 25 % for 3 h with a 30 s ramp.

``python bench/demand_response.py [--quick] [--mix alibaba|azure]``

The scenario follows the shape of Emerald AI's field test (a 256-GPU cluster held 25 % below its draw
for three hours). The fleet is 32 nodes × 8 A40 (measured power curves); two job mixes:

* **alibaba**: pods of the Alibaba GPU trace v2023 at 0.9 utilisation (LS pods are high-priority
  inference, BE low, the rest normal);
* **azure**: a synthetic training mix at low/normal priority on 224 GPUs plus 32 high-priority
  one-GPU inference services following the Azure LLM inference trace 2023.

Each mix runs twice from the same seed: uncapped, and under an EnergyPolicy whose ``budget.schedule``
holds one window: from 1 h to 4 h, a target of 75 % of the power the uncapped run drew over those
three hours, with a ramp rate of that 25 % cut per 30 s. The pending queue is ordered by priority, as
kube-scheduler orders pods by their PriorityClass (with first-come-first-served, high-priority pods
wait behind training that the cut slows, and the event shows up as lost high-priority work).
Figures, per mix (all simulated):

* time from the window's start until fleet power is at or below the target (goal: ramp + one planning
  interval, 30 s + 30 s);
* seconds over the target later than 2 s after the ramp, until the window ends (goal: 0);
* high-priority (and inference) work done during the window, as a fraction of uncapped (goal ≥ 0.99);
* low/normal work during the window, the same way (what gave the watts);
* after the end: seconds until fleet power is back within 1 % of the uncapped run's, and until no
  node holds a budget any more (goal: within the ramp).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from wattplane.api.v1alpha1.energypolicy import BudgetSpec, BudgetWindow, EnergyPolicySpec
from wattplane.cli.simulate import shipped_trace
from wattplane.planner.snapshot import PolicyView
from wattplane.sim.carbon import CarbonTrack
from wattplane.sim.catalog import Catalog
from wattplane.sim.controllers import NullController
from wattplane.sim.engine import BudgetScope, SimOptions, Simulation
from wattplane.sim.fleet import expand, parse_fleet
from wattplane.sim.jobs import JobSpec, training_beside_services
from wattplane.sim.planning import PolicyController
from wattplane.sim.scenario import Scenario, resolve_workloads
from wattplane.sim.traces import azure_demand, read_alibaba

CATALOG = Catalog.builtin()
FLEET = "32x8xA40"
START = datetime(2023, 6, 10, tzinfo=UTC)
EVENT_START_S = 3600.0
EVENT_S = 3 * 3600.0
CUT = 0.25
RAMP_S = 30.0
#: Agents' tick and operator's planning interval (the shipped defaults).
TICK_S = 1.0
PLAN_S = 30.0


def jobs_for(mix: str, hours: float) -> list[JobSpec]:
    """The job mix, before workloads are resolved against the fleet."""
    gpus = 256
    if mix == "alibaba":
        return read_alibaba(
            shipped_trace("alibaba_gpu_v2023_openb_pod_list_default.csv"),
            duration_s=hours * 3600.0,
            fleet_gpus=gpus,
            utilisation=0.9,
        )
    return training_beside_services(
        seed=7,
        duration_s=hours * 3600.0,
        fleet_gpus=gpus,
        services=32,
        workloads=CATALOG.families("A40"),
        demand=azure_demand(shipped_trace("azure_llm_inference_trace_2023_conv.csv")),
        service_workload="squad/bert_base_uncased",
    )


def scenario(mix: str, hours: float) -> Scenario:
    nodes = expand(parse_fleet(FLEET))
    return Scenario(
        nodes=nodes,
        catalog=CATALOG,
        jobs=resolve_workloads(jobs_for(mix, hours), CATALOG, nodes),
        carbon=CarbonTrack.load(shipped_trace("electricitymaps_US-CAL-CISO_2023_hourly.csv"), START),
        options=SimOptions(duration_s=hours * 3600.0, tick_s=TICK_S, queue_order="priority"),
    )


def work_by_class(sim: Simulation, t: float) -> dict[str, float]:
    """Work done by ``t`` (uncapped GPU-seconds), by class: ``high`` (high priority or inference) and ``rest``."""
    out = {"high": 0.0, "rest": 0.0}
    for job in [*sim.running.values(), *sim.finished.values()]:
        done = job.progress_at(t) if job.finished_s is None else job.progress
        key = "high" if job.spec.priority == "high" or job.spec.kind == "inference" else "rest"
        out[key] += done
    return out


def spare_watts(sim: Simulation) -> tuple[float, float]:
    """What low/normal GPUs could give (draw above their minimum limit) and what high/inference GPUs draw, now."""
    sim.power_now()
    spare = high = 0.0
    for gpus in sim.node_gpus:
        for gpu in gpus:
            job = sim.job_of(gpu)
            if job is None:
                continue
            if job.spec.priority == "high" or job.spec.kind == "inference":
                high += gpu.power
            else:
                spare += max(gpu.power - gpu.model.min_watts, 0.0)
    return spare, high


def policy(target_watts: float, rate: float) -> PolicyView:
    window = BudgetWindow(
        name="dr-event",
        start=START + timedelta(seconds=EVENT_START_S),
        end=START + timedelta(seconds=EVENT_START_S + EVENT_S),
        watts=target_watts,
        ramp_watts_per_second=rate,
    )
    return PolicyView(name="grid", spec=EnergyPolicySpec(priority=100, budget=BudgetSpec(schedule=[window])))


def step_through(sim: Simulation, t0: float, t1: float, sample: list[tuple[float, float, float | None]]) -> None:
    """Advance second by second, recording (t, fleet power, summed budget in force)."""
    t = t0
    while t <= t1:
        sim.run_until(t)
        budgets = [e.budget_in_force_watts for e in sim.engines]
        held = [b for b in budgets if b is not None]
        sample.append((t, sim.power_now(), math.fsum(held) if held else None))
        t += 1.0


def run_mix(mix: str, hours: float) -> None:
    s = scenario(mix, hours)
    start, end = EVENT_START_S, EVENT_START_S + EVENT_S

    base = Simulation(
        nodes=s.nodes, catalog=s.catalog, jobs=s.jobs, carbon=s.carbon, controller=NullController(), options=s.options
    )
    base.start()
    base.run_until(start)
    p_start = base.power_now()
    base_work_start = work_by_class(base, start)
    e0 = base.fleet_energy_at(start)
    base.run_until(start + EVENT_S / 2)
    spare_mid, high_mid = spare_watts(base)
    base.run_until(end)
    p_event = (base.fleet_energy_at(end) - e0) / EVENT_S
    base_work_end = work_by_class(base, end)
    p_end = base.power_now()
    base_after: list[tuple[float, float, float | None]] = []
    step_through(base, end, end + 600.0, base_after)

    target = (1.0 - CUT) * p_event
    rate = CUT * p_event / RAMP_S  # the cut, from the mean draw, in 30 s
    scope = BudgetScope("dr-event", target, tuple(range(len(s.nodes))), start_s=start + RAMP_S + 2.0, end_s=end)
    controller = PolicyController("grid", [policy(target, rate)], plan_interval_s=PLAN_S)
    run = Simulation(
        nodes=s.nodes,
        catalog=s.catalog,
        jobs=s.jobs,
        carbon=s.carbon,
        controller=controller,
        options=s.options,
        scopes=(scope,),
    )
    run.start()
    run.run_until(start - 1.0)
    ramp: list[tuple[float, float, float | None]] = []
    step_through(run, start - 1.0, start + 300.0, ramp)
    run_work_start = work_by_class(run, start)
    run.run_until(end)
    run_work_end = work_by_class(run, end)
    after: list[tuple[float, float, float | None]] = []
    step_through(run, end, end + 600.0, after)
    controller.close()

    reached = next((t - start for t, p, _ in ramp if t >= start and p <= target * (1 + 1e-9)), math.inf)
    stats = run.scope_stats[0]
    high = (run_work_end["high"] - run_work_start["high"]) / max(base_work_end["high"] - base_work_start["high"], 1e-9)
    rest = (run_work_end["rest"] - run_work_start["rest"]) / max(base_work_end["rest"] - base_work_start["rest"], 1e-9)
    back = next((t - end for (t, p, _), (_, pb, _) in zip(after, base_after, strict=True) if p >= 0.99 * pb), math.inf)
    released = next((t - end for t, _, b in after if b is None), math.inf)
    print(f"\n### {mix} mix, {FLEET} ({len(s.jobs)} jobs), event 3 h from t = 1 h (simulated)\n")
    print(
        f"uncapped draw at the start {p_start / 1000:.1f} kW, mean over the event {p_event / 1000:.1f} kW;"
        f" target {target / 1000:.1f} kW, ramp {rate:.0f} W/s (the cut in {RAMP_S:.0f} s)"
    )
    print(
        f"half-way through the event (uncapped): low/normal GPUs could give {spare_mid / 1000:.1f} kW above their"
        f" minimum limits, high-priority and inference GPUs draw {high_mid / 1000:.1f} kW;"
        f" the cut is {(p_event - target) / 1000:.1f} kW"
    )
    print("| figure | measured | goal |")
    print("|---|---|---|")
    print(f"| target reached after the start | {reached:.1f} s | ≤ {RAMP_S + PLAN_S:.0f} s |")
    print(
        f"| seconds over target from ramp + 2 s to the end | {stats.over_s:.1f} s"
        f" (longest {stats.longest_over_s:.1f} s, peak {stats.max_watts / 1000:.2f} kW) | 0 |"
    )
    print(f"| high-priority + inference work during the event | {high:.4f} of uncapped | ≥ 0.99 |")
    print(f"| low/normal work during the event | {rest:.4f} of uncapped | (gives the watts) |")
    climb = max(p_end - target, 0.0) / rate
    print(
        f"| power back within 1 % of uncapped after the end | {back:.0f} s |"
        f" the ramp's rate allows it after {climb:.0f} s (uncapped {p_end / 1000:.1f} kW at the end) |"
    )
    print(f"| no node budget in force after the end | {released:.0f} s | - |")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mix", choices=("alibaba", "azure"), action="append")
    parser.add_argument("--quick", action="store_true", help="a shorter tail after the event")
    args = parser.parse_args(argv)
    hours = 4.5 if args.quick else 5.0
    for mix in args.mix or ("alibaba", "azure"):
        run_mix(mix, hours)


if __name__ == "__main__":
    main()
