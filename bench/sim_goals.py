"""The simulator's policy goals, as ratios against the uncapped run (and the oracles) of the same scenario.

``python bench/sim_goals.py [--quick] [--only carbon|efficiency|budget]``

* **Carbon** (Chase with a 24 h forecast, US-CAL-CISO and DE-LU 2023, Zeus A40 and V100 workloads): carbon
  reduction of the carbon-aware policies against the carbon-oracle's (per-job slowdown budget 2.5 %),
  next to their mean JCT increase. Goal: ≥ 85 % of the oracle's reduction at ≤ 2.5 % mean JCT increase.
  The Electricity Maps traces carry no forecasts, so the policies see the trace's own future (perfect
  foresight), as the oracle does.
* **Efficiency** (Zeus online profiling, profiling cost included, eta 0.5): energy saving of the ``zeus``
  policy against the zeus-oracle's (best static limit per job in hindsight, same eta and floor).
  Goal: ≥ 90 %.
* **Budget** (POLCA-style, 70 % of nameplate, training at low/normal priority plus high-priority
  inference): longest stretch over budget (goal ≤ 2 s) and high-priority slowdown (goal ≤ 1 %).

Every scenario is seeded; the printed commands reproduce each one with ``wattplane simulate``.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from wattplane.cli.simulate import shipped_trace
from wattplane.sim.carbon import CarbonTrack
from wattplane.sim.catalog import Catalog
from wattplane.sim.engine import SimOptions
from wattplane.sim.fleet import expand, parse_fleet
from wattplane.sim.jobs import JobSpec, synthetic_training, training_beside_services
from wattplane.sim.results import RunResult, compare, savings_share
from wattplane.sim.scenario import RunSpec, Scenario, load_policies, resolve_workloads, run_all, run_specs
from wattplane.sim.traces import azure_demand

CATALOG = Catalog.builtin()
TRACES = {
    "US-CAL-CISO": "electricitymaps_US-CAL-CISO_2023_hourly.csv",
    "DE-LU": "electricitymaps_DE-LU_2023_hourly.csv",
}
#: Arrivals of the high-priority inference services (Azure LLM inference trace 2023, CC-BY-4.0), shipped
#: with the simulator; see operator/wattplane/sim/data/NOTICE.md.
AZURE = "azure_llm_inference_trace_2023_conv.csv"

#: Chase composed with Zeus: the efficient limit is each job's own lowest-energy limit within 1.5 % of its
#: fastest (profiled online), full power in the cleanest 70 % of the look-ahead.
CHASE_ZEUS = Path(__file__).parent / "policies" / "chase-zeus.yaml"
DATA = "operator/wattplane/sim/data/"


def shipped_data(name: str) -> Path:
    """A data file shipped with the simulator; the goals are measured on real traces or not at all."""
    path = shipped_trace(name)
    if not path.is_file():
        raise SystemExit(f"sim_goals: {path} is missing (it ships with the simulator, in {DATA})")
    return path


def scenario(
    fleet: str, zone: str, start: str, hours: float, jobs: list[JobSpec], *, budget_fraction: float = 0.7
) -> Scenario:
    nodes = expand(parse_fleet(fleet))
    carbon = CarbonTrack.load(shipped_data(TRACES[zone]), datetime.fromisoformat(start).replace(tzinfo=UTC))
    return Scenario(
        nodes=nodes,
        catalog=CATALOG,
        jobs=resolve_workloads(jobs, CATALOG, nodes),
        carbon=carbon,
        options=SimOptions(duration_s=hours * 3600.0),
        budget_fraction=budget_fraction,
    )


def training(fleet: str, hours: float, seed: int, utilisation: float, median_hours: float = 2.0) -> list[JobSpec]:
    nodes = expand(parse_fleet(fleet))
    return synthetic_training(
        seed=seed,
        duration_s=hours * 3600.0,
        fleet_gpus=sum(n.gpus for n in nodes),
        workloads=CATALOG.families(nodes[0].model),
        utilisation=utilisation,
        median_hours=median_hours,
    )


def pct(x: float | None) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x * 100:+.2f}%"


def share(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:.0f}%"


def carbon_goal(quick: bool) -> None:
    print("\n## Carbon-aware capping vs the carbon-oracle (per-job slowdown budget 2.5 %)\n")
    windows = ["2023-06-10"] if quick else ["2023-03-01", "2023-06-10", "2023-09-15", "2023-12-01"]
    hours = 24.0 if quick else 72.0
    models = ["A40"] if quick else ["A40", "V100"]
    zones = ["US-CAL-CISO"] if quick else ["US-CAL-CISO", "DE-LU"]
    print(
        "| zone | GPUs | start | policy | carbon Δ | mean JCT Δ | oracle carbon Δ | oracle JCT Δ | share of oracle"
        " | energy-oracle carbon Δ |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    totals: dict[str, list[float]] = {}
    for zone in zones:
        for model in models:
            fleet = f"8x8x{model}"
            for start in windows:
                s = scenario(fleet, zone, start, hours, training(fleet, hours, seed=1, utilisation=0.5))
                specs = [
                    *run_specs(s, ["chase", "carbon-oracle", "energy-oracle"], {}),
                    RunSpec("chase-zeus", load_policies(CHASE_ZEUS.read_text())),
                ]
                base, chase, oracle, energy, chase_zeus = run_all(s, specs)
                o, e = compare(oracle, base), compare(energy, base)
                for run in (chase, chase_zeus):
                    c = compare(run, base)
                    got = savings_share(c, o, key="carbon")
                    totals.setdefault(run.name, []).extend([-c.carbon_change, -o.carbon_change, c.mean_jct_change or 0])
                    print(
                        f"| {zone} | {fleet} | {start} {hours:g} h | {run.name} | {pct(c.carbon_change)} |"
                        f" {pct(c.mean_jct_change)} | {pct(o.carbon_change)} | {pct(o.mean_jct_change)} |"
                        f" {share(got)} | {pct(e.carbon_change)} |"
                    )
                print(
                    f"<!-- wattplane simulate --fleet {fleet} --carbon-trace {DATA}{TRACES[zone]}"
                    f" --start {start}T00:00Z --duration {hours:g}h --utilisation 0.5 --seed 1 --baseline chase"
                    " --baseline carbon-oracle --baseline energy-oracle --policy bench/policies/chase-zeus.yaml -->"
                )
    print()
    for name, values in totals.items():
        got = sum(values[0::3])
        best = sum(values[1::3])
        jct = sum(values[2::3]) / len(values[2::3])
        print(f"{name}: {got / best:.0%} of the oracle's carbon reduction over all scenarios, mean JCT {pct(jct)}")


def efficiency_goal(quick: bool) -> None:
    print("\n## Zeus online profiling vs the zeus-oracle (eta 0.5, profiling included)\n")
    print("| GPUs | hours | zeus energy Δ | zeus JCT Δ | oracle energy Δ | oracle JCT Δ | share of oracle |")
    print("|---|---|---|---|---|---|---|")
    hours = 12.0 if quick else 24.0
    for model in ["A40"] if quick else ["A40", "V100"]:
        fleet = f"8x8x{model}"
        s = scenario(fleet, "US-CAL-CISO", "2023-06-10", hours, training(fleet, hours, seed=2, utilisation=0.6))
        base, zeus, oracle = run_all(s, run_specs(s, ["zeus", "zeus-oracle"], {}))
        z, o = compare(zeus, base), compare(oracle, base)
        print(
            f"| {fleet} | {hours:g} | {pct(z.energy_change)} | {pct(z.mean_jct_change)} | {pct(o.energy_change)} |"
            f" {pct(o.mean_jct_change)} | {share(savings_share(z, o, key='energy'))} |"
        )
        print(
            f"<!-- wattplane simulate --fleet {fleet} --start 2023-06-10T00:00Z --duration {hours:g}h --utilisation 0.6"
            " --seed 2 --baseline zeus --baseline zeus-oracle -->"
        )


def budget_goal(quick: bool) -> None:
    print("\n## Power budget at 70 % of nameplate (POLCA-style), training + high-priority inference\n")
    hours = 6.0 if quick else 24.0
    fleet = "8x8xA40"
    gpus = 64
    jobs = training_beside_services(
        seed=3,
        duration_s=hours * 3600.0,
        fleet_gpus=gpus,
        services=16,
        workloads=CATALOG.families("A40"),
        demand=azure_demand(shipped_data(AZURE)),
        service_workload="squad/bert_base_uncased",
    )
    s = scenario(fleet, "US-CAL-CISO", "2023-06-10", hours, jobs)
    base, polca = run_all(s, run_specs(s, ["polca"], {}))
    report_budget(base, polca, s, "Azure LLM trace 2023")


def report_budget(base: RunResult, polca: RunResult, s: Scenario, demand: str) -> None:
    c = compare(polca, base)
    scope = polca.scopes[0]
    uncapped_scope = base.scopes[0]
    served = {r.id: r for r in polca.receipts if r.kind == "inference"}
    backlog = sum(r.backlog_gpu_s for r in served.values())
    asked = sum(r.demand_gpu_s for r in served.values())
    print(
        f"budget {scope.watts / 1000:.1f} kW = {s.budget_fraction:.0%} of {s.nameplate_watts / 1000:.1f} kW nameplate;"
        f" inference demand: {demand}"
    )
    print("| run | peak kW | seconds over budget | longest over (s) | high-priority work | low/normal JCT Δ |")
    print("|---|---|---|---|---|---|")
    for run, sc, cmp in ((base, uncapped_scope, compare(base, base)), (polca, scope, c)):
        print(
            f"| {run.name} | {sc.max_watts / 1000:.1f} | {sc.over_s:.1f} | {sc.longest_over_s:.2f} |"
            f" {cmp.high_priority_throughput or 0:.4f} | {pct(cmp.mean_jct_change)} |"
        )
    print(f"inference backlog left at the end: {backlog:.1f} of {asked:.0f} GPU-seconds asked ({backlog / asked:.3%})")
    unstarted = f"{base.unstarted_services} uncapped, {polca.unstarted_services} polca"
    print(f"services that never got GPUs within the run: {unstarted}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one small scenario per goal")
    parser.add_argument("--only", choices=["carbon", "efficiency", "budget"])
    args = parser.parse_args(argv)
    for name in [*TRACES.values(), AZURE]:  # before minutes of simulation, not after
        shipped_data(name)
    started = time.perf_counter()
    if args.only in (None, "carbon"):
        carbon_goal(args.quick)
    if args.only in (None, "efficiency"):
        efficiency_goal(args.quick)
    if args.only in (None, "budget"):
        budget_goal(args.quick)
    print(f"\n({time.perf_counter() - started:.0f} s wall)")


if __name__ == "__main__":
    main()
