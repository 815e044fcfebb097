"""``wattplane simulate``: a virtual-time fleet running the real planner and agent on simulated GPUs.

Every input is a file the user can swap: the fleet (``64x8xA40`` or YAML), GPU curves (Zeus-format
CSVs), jobs (simple CSV, the Alibaba GPU pod list, the Azure LLM trace), the carbon trace (Electricity
Maps, SGIP MOER, plain CSV), an electricity price trace (``--price-trace``: price policies' signal and
every run's energy cost) and the EnergyPolicy YAML. Without ``--jobs`` a seeded synthetic training
mix sized to the fleet is used; without ``--carbon-trace`` the shipped California 2023 trace.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any, TextIO

import yaml
from pydantic import ValidationError
from wattplane.api.v1alpha1.energypolicy import BudgetSpec, BudgetWindow, EnergyPolicySpec
from wattplane.planner.snapshot import PolicyView
from wattplane.sim.carbon import CarbonTrack
from wattplane.sim.catalog import Catalog
from wattplane.sim.engine import SimOptions, Simulation
from wattplane.sim.fleet import expand, parse_fleet
from wattplane.sim.jobs import JobSpec, synthetic_training
from wattplane.sim.llm import ServingSlo, serves_on
from wattplane.sim.price import PriceTrack
from wattplane.sim.report import ALIBABA_ATTRIBUTION, AZURE_ATTRIBUTION, ZEUS_ATTRIBUTION, summary, table, to_json
from wattplane.sim.results import RunResult
from wattplane.sim.scenario import (
    BASELINES,
    RunSpec,
    Scenario,
    policy_file_runs,
    resolve_workloads,
    run_all,
    run_specs,
    with_price_weight,
)
from wattplane.sim.traces import detect_jobs_format, read_jobs

DEFAULT_TRACE = "electricitymaps_US-CAL-CISO_2023_hourly.csv"
_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(s|m|h|d)?\s*$")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def duration(text: str) -> float:
    """``90``, ``90s``, ``45m``, ``24h``, ``7d`` → seconds."""
    match = _DURATION.match(text)
    if match is None or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"not a positive duration: {text!r} (e.g. 3600, 45m, 24h, 7d)")
    return float(match.group(1)) * _UNITS[match.group(2)]


def timestamp(text: str) -> datetime:
    """An ISO-8601 time; UTC when it has no offset."""
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO-8601 time: {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def shipped_trace(name: str) -> Path:
    """A carbon trace shipped in the package (``sim/data``)."""
    return Path(str(resources.files("wattplane.sim").joinpath("data", name)))


def add_scenario_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments shared by ``simulate`` and ``demo``."""
    parser.add_argument("--fleet", default="8x8xA40", help="NODESxGPUSxMODEL (joined with +) or a YAML file")
    parser.add_argument(
        "--gpu-profile",
        action="append",
        default=[],
        metavar="[MODEL=]FILE",
        help="Zeus-format power trace adding or overriding workloads of a GPU model (repeatable)",
    )
    parser.add_argument(
        "--jobs",
        action="append",
        type=Path,
        default=[],
        help="simple job CSV, Alibaba pod list or Azure LLM trace (repeatable); default: synthetic training mix",
    )
    parser.add_argument("--carbon-trace", type=Path, help=f"carbon trace (default: shipped {DEFAULT_TRACE})")
    parser.add_argument("--start", type=timestamp, help="virtual start time inside the trace (default: its start)")
    parser.add_argument(
        "--price-trace",
        type=Path,
        help="electricity price CSV (timestamp, price): the signal of price policies and each run's energy cost",
    )
    parser.add_argument(
        "--price-weight",
        type=float,
        help="price weight (0 carbon only … 1 price only) of every policy with a price section (default: theirs)",
    )
    parser.add_argument("--duration", type=duration, default=86400.0, help="simulated time (default 24h)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--utilisation", type=float, default=0.6, help="load of the synthetic or Alibaba jobs")
    parser.add_argument("--inference-gpus", type=int, help="GPUs serving an Azure LLM trace (default: fleet/8)")
    parser.add_argument("--plan-interval", type=duration, default=30.0, help="operator resync interval (30s)")
    parser.add_argument(
        "--slo-tpot-ms",
        type=float,
        default=100.0,
        help="p90 TPOT objective LLM services' minutes above SLO are counted against (100 ms)",
    )
    parser.add_argument(
        "--slo-ttft-ms",
        type=float,
        default=2000.0,
        help="p90 TTFT objective LLM services' minutes above SLO are counted against (2000 ms)",
    )
    parser.add_argument(
        "--serving-interval",
        type=duration,
        default=15.0,
        help="how often the serving controller reads LLM services' metrics (15s)",
    )
    parser.add_argument("--tick", type=duration, default=1.0, help="agent control-loop period (1s)")
    parser.add_argument("--budget-fraction", type=float, default=0.7, help="polca budget / nameplate (0.7)")
    parser.add_argument(
        "--slowdown-budget",
        "--oracle-slowdown",
        dest="slowdown_budget",
        type=float,
        default=0.025,
        help="per-job slowdown budget of carbon-budget and the carbon/energy oracles (0.025)",
    )


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``wattplane simulate``."""
    parser = subparsers.add_parser(
        "simulate",
        help="simulate a GPU fleet in virtual time with the real planner and agents",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_scenario_arguments(parser)
    parser.add_argument(
        "--policy", action="append", type=Path, default=[], help="EnergyPolicy YAML: one run per file (repeatable)"
    )
    parser.add_argument(
        "--baseline",
        action="append",
        default=[],
        choices=BASELINES,
        help="baselines to run besides uncapped (repeatable)",
    )
    parser.add_argument(
        "--dr-events",
        type=Path,
        help="YAML list of demand-response windows (the fields of budget.schedule): adds a run that holds them",
    )
    parser.add_argument("--json", type=Path, help="write the numbers (stable keys) here")
    parser.add_argument("--plots", type=Path, help="write PNG plots into this folder")
    parser.add_argument("--no-receipts", action="store_true", help="leave per-job receipts out of the JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def demand_response_run(path: Path, scenario: Scenario) -> RunSpec:
    """A run under a fleet-wide budget holding the windows in ``path`` (``ValueError`` on bad input)."""
    raw = yaml.safe_load(path.read_text())
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"{path}: expected a non-empty YAML list of windows (name, start, end, watts or fraction)")
    try:
        windows = [BudgetWindow.model_validate(item) for item in raw]
    except ValidationError as exc:
        raise ValueError(f"{path}: {exc.error_count()} invalid window field(s): {exc.errors()[0]['msg']}") from None
    begin = scenario.carbon.start
    end = begin + timedelta(seconds=scenario.options.duration_s)
    outside = [w.name for w in windows if w.end <= begin or w.start >= end]
    if outside:
        raise ValueError(
            f"{path}: window(s) {', '.join(outside)} lie outside the run ({begin:%Y-%m-%dT%H:%MZ} + duration)"
        )
    spec = EnergyPolicySpec(priority=100, budget=BudgetSpec(schedule=windows))
    return RunSpec("demand-response", (PolicyView(name="demand-response", spec=spec),))


@dataclass
class Inputs:
    """A scenario with what the report says about it."""

    scenario: Scenario
    meta: dict[str, Any]
    attribution: list[str] = field(default_factory=list)


def build_scenario(args: argparse.Namespace) -> Inputs:
    """Read every input file into a :class:`Scenario`; ``ValueError`` on bad input."""
    catalog = Catalog.builtin().with_profiles(args.gpu_profile)
    nodes = expand(parse_fleet(args.fleet))
    for n in {n.model for n in nodes}:
        catalog.model(n)
    gpus = sum(n.gpus for n in nodes)
    trace_path = args.carbon_trace or shipped_trace(DEFAULT_TRACE)
    carbon = CarbonTrack.load(trace_path, args.start)
    attribution = [ZEUS_ATTRIBUTION]
    if carbon.attribution:
        attribution.append(carbon.attribution)
    price = PriceTrack.load(args.price_trace, carbon.start) if getattr(args, "price_trace", None) else None
    if price is not None and price.attribution:
        attribution.append(price.attribution)
    jobs: list[JobSpec] = []
    sources: list[str] = []
    for path in args.jobs:
        fmt = detect_jobs_format(path)
        jobs += read_jobs(
            path,
            duration_s=args.duration,
            fleet_gpus=gpus,
            inference_gpus=args.inference_gpus,
            utilisation=args.utilisation,
        )
        sources.append(f"{path.name} ({fmt})")
        if fmt == "alibaba":
            attribution.append(ALIBABA_ATTRIBUTION)
        elif fmt == "azure":
            attribution.append(AZURE_ATTRIBUTION)
    if not args.jobs:
        common = sorted(set.intersection(*(set(catalog.families(n.model)) for n in nodes)))
        jobs = synthetic_training(
            seed=args.seed, duration_s=args.duration, fleet_gpus=gpus, workloads=common, utilisation=args.utilisation
        )
        sources.append(f"synthetic training mix (seed {args.seed}, utilisation {args.utilisation:g})")
    if args.slo_tpot_ms <= 0 or args.slo_ttft_ms <= 0:
        raise ValueError("--slo-tpot-ms and --slo-ttft-ms must be positive")
    options = SimOptions(
        duration_s=args.duration,
        plan_interval_s=args.plan_interval,
        tick_s=args.tick,
        serving_slo=ServingSlo(args.slo_tpot_ms / 1000.0, args.slo_ttft_ms / 1000.0),
        serving_interval_s=args.serving_interval,
    )
    scenario = Scenario(
        nodes=nodes,
        catalog=catalog,
        jobs=resolve_workloads(jobs, catalog, nodes),
        carbon=carbon,
        options=options,
        seed=args.seed,
        budget_fraction=args.budget_fraction,
        oracle_slowdown=args.slowdown_budget,
        price=price,
    )
    meta = {
        "fleet": args.fleet,
        "nodes": len(nodes),
        "gpus": gpus,
        "nameplate_watts": scenario.nameplate_watts,
        "duration_s": args.duration,
        "seed": args.seed,
        "start": carbon.start.isoformat(),
        "carbon_trace": carbon.name,
        "carbon_zone": carbon.series.zone,
        "forecast": carbon.forecast_kind,
        "price_trace": price.name if price is not None else None,
        "price_unit": price.unit if price is not None else None,
        "jobs": len(scenario.jobs),
        "job_sources": sources,
        "plan_interval_s": args.plan_interval,
        "tick_s": args.tick,
    }
    llm = any(j.llm is not None for j in scenario.jobs) and any(serves_on(n.model) for n in nodes)
    if llm:  # only with LLM services: other reports keep their keys
        meta["serving_slo_ms"] = {"tpot_p90": args.slo_tpot_ms, "ttft_p90": args.slo_ttft_ms}
        meta["serving_interval_s"] = args.serving_interval
    return Inputs(scenario, meta, attribution)


class Progress:
    """A one-line progress bar on a terminal (nothing when the stream is not one)."""

    def __init__(self, stream: TextIO, runs: int, *, enabled: bool = True) -> None:
        self.stream = stream
        self.runs = runs
        self.enabled = enabled and stream.isatty()
        self._index = 0
        self._name = ""
        self._started = time.perf_counter()

    def update(self, name: str, sim: Simulation) -> None:
        """Redraw for ``sim`` of run ``name``."""
        if name != self._name:
            self._name, self._index, self._started = name, self._index + 1, time.perf_counter()
        if not self.enabled:
            return
        total = sim.options.duration_s
        frac = min(1.0, sim.t / total)
        bar = "█" * int(frac * 24) + "░" * (24 - int(frac * 24))
        wall = max(time.perf_counter() - self._started, 1e-9)
        self.stream.write(
            f"\r[{self._index}/{self.runs} {name[:16]:<16}] {bar} {frac:4.0%} {sim.t / 3600:6.1f} h"
            f"  {sim.fleet_power / 1000:7.1f} kW  {sim.intensity:5.0f} g/kWh  ×{sim.t / wall:,.0f} real time "
        )
        self.stream.flush()

    def done(self, result: RunResult) -> None:
        """End the line of a finished run."""
        if self.enabled:
            speed = f"×{result.end_s / result.wall_s:,.0f}" if result.wall_s > 0 else ""
            self.stream.write(f"\r{' ' * 110}\r  {result.name}: done in {result.wall_s:.1f} s ({speed} real time)\n")
            self.stream.flush()


def execute(inputs: Inputs, specs: Sequence[RunSpec], args: argparse.Namespace, out: TextIO) -> list[RunResult]:
    """Run every spec with a progress bar, then report (see :func:`execute_results`)."""
    progress = Progress(sys.stderr, len(specs), enabled=not args.quiet)
    results = run_all(inputs.scenario, specs, on_progress=progress.update, on_result=progress.done)
    execute_results(inputs, results, out, json_path=args.json, plots=args.plots, receipts=not args.no_receipts)
    return results


def execute_results(
    inputs: Inputs,
    results: Sequence[RunResult],
    out: TextIO,
    *,
    json_path: Path | None = None,
    plots: Path | None = None,
    receipts: bool = True,
) -> None:
    """Print the table, the summary and the attribution; write JSON and plots when asked."""
    meta = inputs.meta
    print(
        f"\n{meta['gpus']} GPUs on {meta['nodes']} nodes ({meta['fleet']}), {meta['jobs']} jobs, "
        f"{meta['duration_s'] / 3600:g} h from {meta['start']} on {meta['carbon_trace']} "
        f"(forecast: {meta['forecast']})\n",
        file=out,
    )
    print(table(results), file=out)
    print("\n" + summary(results), file=out)
    print("\n" + "\n".join(inputs.attribution), file=out)
    if json_path is not None:
        payload = to_json(meta, results, inputs.attribution, receipts=receipts)
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n")
        print(f"numbers written to {json_path}", file=out)
    if plots is not None:
        from wattplane.sim.plots import write_plots

        try:
            paths = write_plots(results, plots, attribution=inputs.attribution)
        except RuntimeError as exc:  # matplotlib is a dev/plots extra, absent from the runtime image
            print(f"plots skipped: {exc}", file=out)
        else:
            print("plots: " + ", ".join(str(p) for p in paths), file=out)


def run(args: argparse.Namespace) -> int:
    """``wattplane simulate``."""
    try:
        inputs = build_scenario(args)
        specs = run_specs(inputs.scenario, args.baseline, policy_file_runs(args.policy))
        if args.price_weight is not None:
            specs = with_price_weight(specs, args.price_weight)
        if getattr(args, "dr_events", None) is not None:
            specs.append(demand_response_run(args.dr_events, inputs.scenario))
    except (ValueError, KeyError, OSError) as exc:
        print(f"wattplane simulate: {exc}", file=sys.stderr)
        return 2
    execute(inputs, specs, args, sys.stdout)
    return 0
