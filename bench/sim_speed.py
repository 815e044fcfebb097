"""How much faster than real time does the fleet simulator run? ``python bench/sim_speed.py``.

A simulated day of 64 nodes × 8 A40 (512 GPUs) with a seeded training mix at 60 % load plus 64 inference
GPUs, on the shipped California 2023 trace, once per controller: uncapped (no planner: the floor of the
event loop), and the real planner + agents with the shipped policies. For each it prints simulated
seconds per wall-clock second (the speed-up over real time; the goal is ≥ 1000×) and the cost relative
to the uncapped run measured in the same process. One core; absolute figures depend on the machine.
The collector runs with the thresholds ``wattplane simulate`` sets (:mod:`wattplane.operator.gctuning`).
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime

from wattplane.cli.simulate import shipped_trace
from wattplane.operator.gctuning import tune_gc
from wattplane.sim.carbon import CarbonTrack
from wattplane.sim.catalog import Catalog
from wattplane.sim.engine import SimOptions
from wattplane.sim.fleet import expand, parse_fleet
from wattplane.sim.jobs import Demand, inference_services, synthetic_training
from wattplane.sim.scenario import Scenario, resolve_workloads, run_all, run_specs

POLICIES = ("static-cap", "chase", "polca", "zeus")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fleet", default="64x8xA40")
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--policies", nargs="*", default=list(POLICIES))
    tune_gc()
    args = parser.parse_args()
    catalog = Catalog.builtin()
    nodes = expand(parse_fleet(args.fleet))
    gpus = sum(n.gpus for n in nodes)
    serving = gpus // 8
    duration = args.hours * 3600.0
    jobs = synthetic_training(
        seed=0, duration_s=duration, fleet_gpus=gpus - serving, workloads=catalog.families("A40"), utilisation=0.6
    )
    jobs += inference_services(
        count=serving, gpus=1, demand=Demand(600.0, (0.5, 0.7, 0.9, 0.6)), workload="squad/bert_base_uncased"
    )
    carbon = CarbonTrack.load(
        shipped_trace("electricitymaps_US-CAL-CISO_2023_hourly.csv"), datetime(2023, 6, 1, tzinfo=UTC)
    )
    scenario = Scenario(
        nodes=nodes,
        catalog=catalog,
        jobs=resolve_workloads(jobs, catalog, nodes),
        carbon=carbon,
        options=SimOptions(duration_s=duration),
    )
    print(f"{gpus} GPUs on {len(nodes)} nodes, {len(jobs)} jobs, {args.hours:g} simulated hours (+ drain)")
    print(
        f"{'controller':<12} {'simulated h':>11} {'wall s':>8} {'× real time':>12} {'vs uncapped':>12}"
        f" {'plan rounds':>11} {'agent ticks':>11} {'events':>8}"
    )
    base_speed = None
    for spec in run_specs(scenario, args.policies, {}):
        started = time.perf_counter()
        (result,) = run_all(scenario, [spec])
        wall = time.perf_counter() - started
        speed = result.end_s / wall
        base_speed = base_speed or speed
        print(
            f"{spec.name:<12} {result.end_s / 3600:>11.1f} {wall:>8.1f} {speed:>12,.0f} {speed / base_speed:>12.4f}"
            f" {result.plan_rounds:>11} {result.agent_ticks:>11} {result.events:>8}"
        )


if __name__ == "__main__":
    main()
