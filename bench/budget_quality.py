"""How close the ``polca`` budget comes to the most work its watts allow: the budget-oracle on a held-out mix.

``python bench/budget_quality.py [--hours 24] [--budget 0.6 --budget 0.7] [--queue fifo|priority]``

The mix is the held-out one of ``docs/results.md``: the Alibaba cluster-trace-gpu-v2023 pod list
(Weng et al., USENIX ATC'23, Apache-2.0; shipped with the simulator, see its NOTICE.md) replayed at 0.9 of the
fleet's GPU-seconds, plus the Azure LLM inference trace 2023 (Patel et al., ISCA'24, CC-BY-4.0, shipped
with the simulator) on 8 always-on high-priority services, on 64 A40 (``8x8xA40``). The same jobs run
uncapped and under ``polca`` at each budget (a fraction of nameplate over every node); the
budget-oracle (:mod:`wattplane.sim.budgetoracle`) then gives, on the uncapped run's schedule, the most
work the same budget allows with priorities respected.

Printed per budget: work done within the run over the oracle's (overall and per priority class; goal
≥ 90 %), high-priority throughput against uncapped (goal in [0.99, 1]; the oracle's own figure next to
it), mean and p95 JCT change and job energy change against uncapped, and the time over budget.
``--smoke`` runs the 120-pod test slice on 8 A40 for 2 h instead (seconds; for checking the script).
``--queue priority`` orders the pending queue by priority, as kube-scheduler does with PriorityClasses
(the default, ``fifo``, lets services wait behind training that the budget slows down).
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from wattplane.cli.simulate import shipped_trace
from wattplane.sim.budgetoracle import CLASSES, BudgetQuality, budget_quality
from wattplane.sim.carbon import CarbonTrack
from wattplane.sim.catalog import Catalog
from wattplane.sim.engine import SimOptions
from wattplane.sim.fleet import expand, parse_fleet
from wattplane.sim.jobs import JobSpec
from wattplane.sim.results import RunResult, compare
from wattplane.sim.scenario import RunSpec, Scenario, resolve_workloads, run_all, shipped_policy, with_budget
from wattplane.sim.traces import ALIBABA_DEFAULT_OFFSET_S, read_jobs

ROOT = Path(__file__).resolve().parents[1]
AZURE = "azure_llm_inference_trace_2023_conv.csv"
CARBON = "electricitymaps_US-CAL-CISO_2023_hourly.csv"
SLICE = ROOT / "tests" / "unit" / "sim" / "data" / "alibaba_pods_slice.csv"
SLICE_OFFSET_S = 10_368_000.0  # the slice's first creation time


def build(
    alibaba: Path, *, fleet: str, hours: float, utilisation: float, offset_s: float | None, queue: str = "fifo"
) -> Scenario:
    """The held-out mix on ``fleet`` (jobs as ``wattplane simulate --jobs ALIBABA --jobs AZURE`` reads them)."""
    catalog = Catalog.builtin()
    nodes = expand(parse_fleet(fleet))
    gpus = sum(n.gpus for n in nodes)
    duration = hours * 3600.0
    offset = ALIBABA_DEFAULT_OFFSET_S if offset_s is None else offset_s
    jobs: list[JobSpec] = read_jobs(
        alibaba, duration_s=duration, fleet_gpus=gpus, utilisation=utilisation, alibaba_offset_s=offset
    )
    jobs += read_jobs(shipped_trace(AZURE), duration_s=duration, fleet_gpus=gpus)
    carbon = CarbonTrack.load(shipped_trace(CARBON), datetime(2023, 6, 10, tzinfo=UTC))
    return Scenario(
        nodes=nodes,
        catalog=catalog,
        jobs=resolve_workloads(jobs, catalog, nodes),
        carbon=carbon,
        options=SimOptions(duration_s=duration, queue_order="priority" if queue == "priority" else "fifo"),
    )


def pct(x: float | None) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x * 100:+.2f}%"


def ratio(x: float | None) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:.4f}"


def report(scenario: Scenario, base: RunResult, runs: Sequence[tuple[float, RunResult]]) -> list[BudgetQuality]:
    """Print one table row per budget, then the oracle's own figures; return the qualities."""
    print(
        "| budget | kW | work / oracle | "
        + " | ".join(f"{c} / oracle" for c in CLASSES)
        + " | HP throughput | oracle HP | oracle / uncapped | mean JCT Δ | p95 JCT Δ | job energy Δ"
        " | over budget s (longest) |"
    )
    print("|---" * (10 + len(CLASSES)) + "|")
    out = []
    for fraction, run in runs:
        watts = fraction * scenario.nameplate_watts
        q = budget_quality(base, run, scenario, watts)
        c = compare(run, base)
        # Every run measures every budget's scope; this run is judged on its own.
        own = [s for s in run.scopes if math.isclose(s.watts, watts)]
        over = f"{own[0].over_s:.1f} ({own[0].longest_over_s:.1f})" if own else "-"
        per_class = " | ".join(ratio(q.work_ratio_by_priority.get(k)) for k in CLASSES)
        print(
            f"| {fraction:.0%} | {watts / 1000:.2f} | {ratio(q.work_ratio)} | {per_class} |"
            f" {ratio(q.high_priority_throughput)} | {ratio(q.oracle_high_priority_throughput)} |"
            f" {ratio(q.oracle_vs_uncapped)} | {pct(c.mean_jct_change)} | {pct(c.p95_jct_change)} |"
            f" {pct(c.energy_change)} | {over} |"
        )
        out.append(q)
    print()
    for (fraction, run), q in zip(runs, out, strict=True):
        watts = fraction * scenario.nameplate_watts
        peak = max((s.max_watts for s in base.scopes if math.isclose(s.watts, watts)), default=math.nan)
        both = _high_started_in_both(base, run)
        served = _high_served(run)
        print(
            f"{fraction:.0%}: uncapped peak {peak / 1000:.2f} kW against {watts / 1000:.2f} kW; high-priority"
            f" throughput of the jobs that started in both runs {ratio(both)} (late starts included); high-priority"
            f" services served {ratio(served)} of the demand they saw while running (capping alone)"
        )
        o = q.oracle
        print(
            f"{fraction:.0%}: oracle {o.work_gpu_s:,.0f} GPU-s (binding {o.binding_s / 3600:.1f} h,"
            f" infeasible {o.infeasible_s:.0f} s, {o.segments} segments), run {q.run_work_gpu_s:,.0f},"
            f" uncapped {q.uncapped_work_gpu_s:,.0f}; oracle without a budget {q.unbudgeted_vs_uncapped:.4f}"
            f" of uncapped, at default limits {q.default_check:.6f} (self-check);"
            f" services never started: {base.unstarted_services} uncapped,"
            f" {run.unstarted_services} {run.name}"
        )
    return out


def _high_started_in_both(base: RunResult, run: RunResult) -> float | None:
    """High-priority work of jobs that started within the run in both runs, run over uncapped.

    Separates what capping cost the high class from what queueing cost it: a job that got no GPUs
    within the run in one of them (slowed training holds GPUs longer) is left out of both sums.
    """
    duration = base.duration_s
    started = {r.id for r in run.receipts if r.priority == "high" and r.start_s < duration}
    ours = {r.id: r.window_work_gpu_s for r in run.receipts if r.id in started}
    theirs = {r.id: r.window_work_gpu_s for r in base.receipts if r.id in started and r.start_s < duration}
    common = ours.keys() & theirs.keys()
    total = math.fsum(theirs[i] for i in common)
    return math.fsum(ours[i] for i in common) / total if total > 0 else None


def _high_served(run: RunResult) -> float | None:
    """Demand the high-priority services served over the demand they saw while running (1: no backlog left)."""
    asked = math.fsum(r.demand_gpu_s for r in run.receipts if r.priority == "high" and r.kind == "inference")
    left = math.fsum(r.backlog_gpu_s for r in run.receipts if r.priority == "high" and r.kind == "inference")
    return 1.0 - left / asked if asked > 0 else None


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--alibaba",
        type=Path,
        default=shipped_trace("alibaba_gpu_v2023_openb_pod_list_default.csv"),
        help="Alibaba cluster-trace-gpu-v2023 pod list (default: the copy shipped with the simulator)",
    )
    parser.add_argument("--queue", choices=("fifo", "priority"), default="fifo", help="pending-queue order")
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--utilisation", type=float, default=0.9)
    parser.add_argument("--budget", type=float, action="append", help="fraction of nameplate (repeatable)")
    parser.add_argument("--smoke", action="store_true", help="the 120-pod test slice, 8 A40, 2 h")
    args = parser.parse_args(argv)
    budgets = args.budget or [0.6, 0.7]
    if args.smoke:
        scenario = build(SLICE, fleet="1x8xA40", hours=2.0, utilisation=1.6, offset_s=SLICE_OFFSET_S, queue=args.queue)
        source = f"{SLICE.name} (test slice), 1.6 load, 8 A40, 2 h"
    else:
        if not args.alibaba.is_file():
            raise SystemExit(f"budget_quality: {args.alibaba} is missing (it ships with the simulator)")
        scenario = build(
            args.alibaba,
            fleet="8x8xA40",
            hours=args.hours,
            utilisation=args.utilisation,
            offset_s=None,
            queue=args.queue,
        )
        source = (
            f"{args.alibaba.name} at {args.utilisation:g} load + {AZURE} on 8 services, 64 A40, {args.hours:g} h,"
            f" {args.queue} queue"
        )
    print(f"## polca vs the budget-oracle: {source}\n")
    started = time.perf_counter()
    policy = shipped_policy("polca")
    specs = [RunSpec("uncapped", baseline="uncapped")]
    specs += [
        RunSpec(f"polca-{f:.0%}", with_budget(policy, f * scenario.nameplate_watts), baseline="polca") for f in budgets
    ]
    base, *runs = run_all(scenario, specs)
    report(scenario, base, list(zip(budgets, runs, strict=True)))
    print(f"\n({time.perf_counter() - started:.0f} s wall, {len(scenario.jobs)} jobs)")


if __name__ == "__main__":
    main()
