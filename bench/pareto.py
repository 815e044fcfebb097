"""Carbon cut against mean JCT increase for policy families, with the carbon-oracle's frontier.

``python bench/pareto.py [--zone US-CAL-CISO|DE-LU] [--hours 24] [--out docs/img/pareto.png]``

One scenario (8 × 8 A40, Zeus training mix at 50 % load, seed 1, 2023-06-10), simulated uncapped and with:
static caps at 90/80/70/60 % of default, Zeus at eta 0.25/0.5/1, Chase (shipped curve, and over each
job's Zeus optimum), the budgeted carbon mode at per-job budgets of 1/2.5/5/10 %, and the carbon-oracle
swept over per-job budgets (the frontier). Prints one table row per run (carbon and energy change, mean,
p99 and max JCT change) and writes the figure. Results contain data from Electricity Maps (ODbL); GPU
curves from Zeus (Apache-2.0).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from wattplane.cli.simulate import shipped_trace
from wattplane.planner.snapshot import PolicyView
from wattplane.sim.carbon import CarbonTrack
from wattplane.sim.catalog import Catalog
from wattplane.sim.engine import SimOptions
from wattplane.sim.fleet import expand, parse_fleet
from wattplane.sim.jobs import synthetic_training
from wattplane.sim.pareto import FRONTIER_BUDGETS, oracle_frontier, write_pareto
from wattplane.sim.results import compare
from wattplane.sim.scenario import (
    RunSpec,
    Scenario,
    load_policies,
    resolve_workloads,
    run_all,
    shipped_policy,
    with_slowdown,
)

CATALOG = Catalog.builtin()
TRACES = {
    "US-CAL-CISO": "electricitymaps_US-CAL-CISO_2023_hourly.csv",
    "DE-LU": "electricitymaps_DE-LU_2023_hourly.csv",
}
CHASE_ZEUS = Path(__file__).parent / "policies" / "chase-zeus.yaml"


def renamed(views: Sequence[PolicyView], spec_update: dict[str, object]) -> tuple[PolicyView, ...]:
    """``views`` with their spec sections replaced (the policy name stays: selection is by label)."""
    return tuple(replace(v, spec=v.spec.model_copy(update=spec_update)) for v in views)


def variants() -> list[RunSpec]:
    """Every policy point of the figure."""
    out = [RunSpec("uncapped", baseline="uncapped")]
    static = shipped_policy("static-cap")
    for fraction in (0.9, 0.8, 0.7, 0.6):
        limits = static[0].spec.limits
        assert limits is not None
        update = {"limits": limits.model_copy(update={"max_fraction_of_default": fraction})}
        out.append(RunSpec(f"static-cap {fraction:.0%}", renamed(static, update)))
    zeus = shipped_policy("zeus")
    for eta in (0.25, 0.5, 1.0):
        section = zeus[0].spec.efficiency
        assert section is not None
        out.append(RunSpec(f"zeus eta={eta:g}", renamed(zeus, {"efficiency": section.model_copy(update={"eta": eta})})))
    out.append(RunSpec("chase", shipped_policy("chase")))
    out.append(RunSpec("chase-zeus", load_policies(CHASE_ZEUS.read_text(encoding="utf-8"))))
    budgeted = shipped_policy("carbon-budget")
    for budget in (0.01, 0.025, 0.05, 0.1):
        out.append(RunSpec(f"carbon-budget {budget:.1%}", with_slowdown(budgeted, budget)))
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zone", choices=sorted(TRACES), default="US-CAL-CISO")
    parser.add_argument("--start", default="2023-06-10")
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--out", type=Path, default=Path("wattplane-pareto.png"))
    args = parser.parse_args(argv)
    started = time.perf_counter()
    fleet = "8x8xA40"
    nodes = expand(parse_fleet(fleet))
    jobs = synthetic_training(
        seed=1,
        duration_s=args.hours * 3600.0,
        fleet_gpus=sum(n.gpus for n in nodes),
        workloads=CATALOG.families("A40"),
        utilisation=0.5,
        median_hours=2.0,
    )
    carbon = CarbonTrack.load(shipped_trace(TRACES[args.zone]), datetime.fromisoformat(args.start).replace(tzinfo=UTC))
    scenario = Scenario(
        nodes=nodes,
        catalog=CATALOG,
        jobs=resolve_workloads(jobs, CATALOG, nodes),
        carbon=carbon,
        options=SimOptions(duration_s=args.hours * 3600.0),
    )
    results = run_all(scenario, variants())
    base = results[0]
    comps = [compare(r, base) for r in results[1:]]
    frontier = oracle_frontier(scenario, base, FRONTIER_BUDGETS)
    print("| run | carbon Δ | energy Δ | mean JCT Δ | p99 JCT Δ | max JCT Δ |")
    print("|---|---|---|---|---|---|")
    for c in comps:
        print(
            f"| {c.name} | {c.carbon_change:+.2%} | {c.energy_change:+.2%} | {c.mean_jct_change or 0:+.2%} |"
            f" {c.p99_jct_change or 0:+.2%} | {c.max_jct_change or 0:+.2%} |"
        )
    for p in frontier:
        print(f"| carbon-oracle {p.budget:.1%} | {p.carbon_change:+.2%} | | {p.mean_jct_change:+.2%} | | |")
    title = f"{args.zone} {args.start}, {args.hours:g} h, 64 A40: carbon cut against slowdown"
    attribution = ["Contains data from Electricity Maps, ODbL.", "GPU curves: Zeus (ml-energy/zeus), Apache-2.0."]
    path = write_pareto(comps, frontier, args.out, title=title, attribution=attribution)
    print(f"\nfigure: {path} ({time.perf_counter() - started:.0f} s wall)")


if __name__ == "__main__":
    main()
