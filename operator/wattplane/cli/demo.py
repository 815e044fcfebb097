"""``wattplane demo``: a day of a small GPU fleet on a real carbon trace, with the shipped policies.

No cluster, no GPU, nothing downloaded: the fleet (8 nodes × 8 A40 by default) runs a seeded mix of
Zeus training workloads plus always-on inference services, on the real California (or German) 2023
grid trace shipped in the package. The same day is simulated once per policy, in lockstep, with the
real planner and the real node agents: uncapped, a static cap, Zeus online profiling, Chase's
carbon curve, the carbon budget (every job's power schedule within a 2.5 % slowdown promise), the
carbon oracle at the same per-job budget (the best any carbon-aware capping could do, in hindsight)
and a POLCA-style power budget at 70 % of nameplate. A live table shows the fleets side by side; at
the end come the savings report, a fair comparison (each policy next to the oracle allowed the same
worst per-job slowdown), the numbers as JSON and the plots, the carbon-against-slowdown one included.

The simulation itself runs thousands of times faster than real time; the demo paces it to about
``--pace`` seconds of wall time so the table can be watched (``--pace 0`` or ``--quick`` runs flat out).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from wattplane.cli.simulate import Inputs, execute_results, shipped_trace
from wattplane.sim.carbon import CarbonTrack
from wattplane.sim.catalog import Catalog
from wattplane.sim.engine import SimOptions
from wattplane.sim.fleet import expand, parse_fleet
from wattplane.sim.jobs import Demand, inference_services, synthetic_training
from wattplane.sim.pareto import fair_share, oracle_frontier, write_pareto
from wattplane.sim.report import ZEUS_ATTRIBUTION
from wattplane.sim.results import RunResult, compare
from wattplane.sim.scenario import Run, Scenario, prepare, resolve_workloads, run_specs

ZONES = {
    "US-CAL-CISO": ("electricitymaps_US-CAL-CISO_2023_hourly.csv", "2023-06-15"),
    "DE-LU": ("electricitymaps_DE-LU_2023_hourly.csv", "2023-03-08"),
}
BASELINES = ("static-cap", "zeus", "chase", "carbon-budget", "carbon-oracle", "polca")
#: Runs put next to the oracle at their own worst per-job slowdown (those that cap training for carbon or energy).
FAIR = ("static-cap", "zeus", "chase", "carbon-budget")
#: Synthetic diurnal demand of the inference services (fraction of a GPU), hourly from midnight UTC.
DIURNAL = tuple(round(0.45 + 0.35 * max(0.0, math.sin(math.pi * (h - 6) / 16)), 3) for h in range(24))


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``wattplane demo``."""
    parser = subparsers.add_parser(
        "demo",
        help="simulate a day of a GPU fleet under the shipped policies and report what they save",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--zone", choices=sorted(ZONES), default="US-CAL-CISO", help="carbon trace (2023)")
    parser.add_argument("--day", help="UTC day to simulate, YYYY-MM-DD (default: a typical day of the zone)")
    parser.add_argument("--fleet", default="8x8xA40", help="NODESxGPUSxMODEL")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pace", type=float, default=120.0, help="wall seconds for the simulated day (0: no pacing)")
    parser.add_argument("--out", type=Path, default=Path("wattplane-demo"), help="folder for plots and JSON")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument("--quick", action="store_true", help="a small fleet for six hours, unpaced (for tests)")
    parser.set_defaults(func=run)


def demo_inputs(args: argparse.Namespace) -> Inputs:
    """The demo's scenario: shipped trace, shipped curves, seeded jobs."""
    filename, typical_day = ZONES[args.zone]
    fleet = "2x4xA40" if args.quick else args.fleet
    hours = 6.0 if args.quick else 24.0
    day = datetime.fromisoformat(args.day or typical_day).replace(tzinfo=UTC)
    catalog = Catalog.builtin()
    nodes = expand(parse_fleet(fleet))
    gpus = sum(n.gpus for n in nodes)
    carbon = CarbonTrack.load(shipped_trace(filename), day)
    serving = max(1, gpus // 8)
    families = catalog.families(nodes[0].model)
    jobs = synthetic_training(
        seed=args.seed,
        duration_s=hours * 3600.0,
        fleet_gpus=gpus - serving,
        workloads=families,
        utilisation=0.6,
        median_hours=1.5,
    )
    jobs += inference_services(
        count=serving, gpus=1, demand=Demand(3600.0, DIURNAL), workload="squad/bert_base_uncased"
    )
    scenario = Scenario(
        nodes=nodes,
        catalog=catalog,
        jobs=resolve_workloads(jobs, catalog, nodes),
        carbon=carbon,
        options=SimOptions(duration_s=hours * 3600.0, timeline_step_s=900.0),
        seed=args.seed,
    )
    meta = {
        "fleet": fleet,
        "nodes": len(nodes),
        "gpus": gpus,
        "nameplate_watts": scenario.nameplate_watts,
        "duration_s": hours * 3600.0,
        "seed": args.seed,
        "start": carbon.start.isoformat(),
        "carbon_trace": carbon.name,
        "carbon_zone": carbon.series.zone,
        "forecast": carbon.forecast_kind,
        "jobs": len(scenario.jobs),
        "job_sources": [
            f"synthetic training mix (seed {args.seed})",
            f"{serving} inference services (synthetic diurnal demand)",
        ],
        "plan_interval_s": scenario.options.plan_interval_s,
        "tick_s": scenario.options.tick_s,
    }
    return Inputs(scenario, meta, [ZEUS_ATTRIBUTION, carbon.attribution])


class LiveTable:
    """The runs side by side, redrawn in place on a terminal, every few hours elsewhere."""

    def __init__(self, stream: TextIO, runs: list[Run]) -> None:
        self.stream = stream
        self.runs = runs
        self.tty = stream.isatty()
        self._lines = 0
        self._printed_at = -math.inf

    def show(self, t: float, *, final: bool = False) -> None:
        """Draw the state at virtual time ``t``."""
        if not self.tty and not final and t - self._printed_at < 4 * 3600.0:
            return
        self._printed_at = t
        base = self.runs[0].sim
        when = base.carbon.time_of(t).strftime("%Y-%m-%d %H:%M UTC")
        e0, c0 = base.fleet_energy_at(t), base.fleet_carbon_at(t)
        lines = [
            f"{when}   grid {base.carbon.at(min(t, base.t)):.0f} gCO2/kWh   (fleet totals so far, idle GPUs included)",
            f"{'policy':<15} {'power kW':>9} {'mean cap W':>10} {'energy kWh':>11} {'Δ':>7} {'carbon kg':>10} {'Δ':>7}"
            f" {'jobs done':>9}",
        ]
        for run in self.runs:
            sim = run.sim
            energy, carbon = sim.fleet_energy_at(t) / 3.6e6, sim.fleet_carbon_at(t) / 1000.0
            busy = [g.limit for g in sim.gpus if g.job is not None]
            cap = f"{sum(busy) / len(busy):.0f}" if busy else "-"
            de = f"{energy / (e0 / 3.6e6) - 1:+.1%}" if e0 > 0 and run is not self.runs[0] else ""
            dc = f"{carbon / (c0 / 1000.0) - 1:+.1%}" if c0 > 0 and run is not self.runs[0] else ""
            lines.append(
                f"{run.spec.name:<15} {sim.fleet_power / 1000:>9.1f} {cap:>10} {energy:>11.1f} {de:>7}"
                f" {carbon:>10.2f} {dc:>7} {len(sim.finished):>9}"
            )
        if self.tty and self._lines:
            self.stream.write(f"\x1b[{self._lines}A")
        self.stream.write("\n".join(f"{line}\x1b[K" if self.tty else line for line in lines) + "\n")
        if not self.tty:
            self.stream.write("\n")
        self.stream.flush()
        self._lines = len(lines)


def run(args: argparse.Namespace) -> int:
    """Run the demo."""
    inputs = demo_inputs(args)
    scenario = inputs.scenario
    specs = run_specs(scenario, BASELINES, {})
    runs = prepare(scenario, specs)
    meta = inputs.meta
    print(
        f"wattplane demo: {meta['gpus']} simulated A40 GPUs on {meta['nodes']} nodes, {meta['jobs']} jobs, "
        f"{meta['duration_s'] / 3600:g} h of {meta['carbon_zone']} grid from {meta['start']}.\n"
        "Each policy runs the same day with the real planner and node agents; carbon-oracle is the hindsight "
        "optimum for carbon-aware capping.\n"
    )
    pace = 0.0 if args.quick else max(0.0, args.pace)
    live = LiveTable(sys.stdout, runs)
    step = 900.0
    duration = scenario.options.duration_s
    started = time.perf_counter()
    walls = [0.0] * len(runs)
    for run_ in runs:
        run_.sim.start()
    t = 0.0
    while not all(r.sim.done for r in runs):
        t += step
        for k, run_ in enumerate(runs):
            began = time.perf_counter()
            run_.sim.run_until(t)
            walls[k] += time.perf_counter() - began
        if t <= duration:
            live.show(t)
            if pace > 0:
                target = started + pace * t / duration
                delay = target - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
    results: list[RunResult] = []
    for k, run_ in enumerate(runs):
        run_.sim.finish()
        results.append(run_.result(scenario, wall_s=walls[k]))
    live.show(duration, final=True)
    out = args.out
    plots = None if args.no_plots else out
    execute_results(inputs, results, sys.stdout, json_path=out / "results.json", plots=plots)
    compare_fairly(inputs, results, plots)
    return 0


def compare_fairly(inputs: Inputs, results: list[RunResult], plots: Path | None) -> None:
    """Each policy next to the oracle at its own worst per-job slowdown; the Pareto figure."""
    base = results[0]
    comps = {r.name: compare(r, base) for r in results[1:]}
    print("\nFair comparison: each policy next to the carbon-oracle allowed the same worst per-job slowdown")
    print(f"{'policy':<15} {'carbon':>8} {'mean JCT':>9} {'worst job':>9} {'oracle carbon':>13} {'share':>6}")
    for name in FAIR:
        c = comps.get(name)
        if c is None:
            continue
        fair = fair_share(inputs.scenario, base, c)
        oracle, share = ("-", "-") if fair is None else (f"{fair[1].carbon_change:+.1%}", f"{fair[0]:.0%}")
        print(
            f"{name:<15} {c.carbon_change:>+8.1%} {c.mean_jct_change or 0:>+9.2%} {c.max_jct_change or 0:>+9.1%}"
            f" {oracle:>13} {share:>6}"
        )
    if plots is None:
        return
    frontier = oracle_frontier(inputs.scenario, base)
    points = [comps[n] for n in (*FAIR, "carbon-oracle") if n in comps]
    try:
        path = write_pareto(
            points,
            frontier,
            plots / "pareto.png",
            title="Demo day: carbon cut against slowdown",
            attribution=inputs.attribution,
        )
    except RuntimeError as exc:
        print(f"pareto plot skipped: {exc}")
        return
    print(f"pareto: {path}")
