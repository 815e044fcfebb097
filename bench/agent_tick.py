"""Agent tick cost on 8 simulated GPUs, against the bare backend reads measured in the same run.

What one tick costs is the real agent tick (``AgentLoop.safe_tick``): pod attribution, device reads,
the node budget decision, reconcile (clamped, journaled, idempotent writes), status build (and an
in-memory status write when due) plus, by default, one Prometheus scrape of the agent's collector per
tick. The baseline is the cheapest thing an agent could do: read the same 8 GPUs once per tick.

Then the budget reaction: the GPUs' load is stepped up between ticks so node power jumps over the
budget, and the bench records the tick that first measured the breach, whether that tick lowered
limits, and how long after the tick started the last limit was written.

Run ``python bench/agent_tick.py --help``; ``--fast`` runs ticks back to back for a quick figure.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import wattplane.agent.__main__  # noqa: F401  (every module the agent process loads, so RSS compares)
from prometheus_client import CollectorRegistry, generate_latest
from wattplane.agent.engine import NodeEngine
from wattplane.agent.gpu.simulated import SimulatedBackend, SimulatedGpu
from wattplane.agent.journal import Journal
from wattplane.agent.kube import NodeObjects
from wattplane.agent.loop import AgentLoop, budget_params
from wattplane.agent.metrics import AgentCollector
from wattplane.agent.settings import AgentSettings
from wattplane.api.v1alpha1.gpunode import PodRef

NODE = "bench-node"
GOAL_MCPU = 5.0
GOAL_RSS_MIB = 80.0
#: What the agent's imports alone cost, measured each in a fresh interpreter: the floor under RSS.
IMPORT_STEPS = (
    ("python", ""),
    ("+ pydantic, wattplane.api", "import wattplane.api.v1alpha1.gpunode"),
    ("+ prometheus-client, aiohttp", "import prometheus_client, aiohttp"),
    ("+ simulated GPUs, engine, budget", "import wattplane.agent.engine, wattplane.agent.gpu.simulated"),
    ("+ grpc (PodResources client)", "import wattplane.agent.podresources"),
    ("+ API client (lightkube)", "import wattplane.agent.kube"),
    ("+ the rest (whole agent)", "import wattplane.agent.__main__"),
)


class InMemoryGpuNode:
    """The agent's GpuNode without an API server: status writes land here (their I/O is not measured)."""

    def __init__(self) -> None:
        self.writes = 0

    async def ensure_gpunode(self) -> dict[str, Any]:
        """An empty GpuNode: the bench sets the plan itself."""
        return {"metadata": {"name": NODE}, "spec": {}, "status": {}}

    async def patch_status(self, status: dict[str, Any]) -> None:
        """Count the write; the status was built and serialised by then."""
        self.writes += 1

    async def list_pods(self) -> list[dict[str, Any]]:
        """No pods listed: the bench assigns GPUs to pods itself."""
        return []

    async def watch_gpunode(self) -> AsyncIterator[dict[str, Any]]:
        """A watch on which nothing ever happens."""
        await asyncio.Event().wait()
        yield {}


def rss_mib() -> float:
    """Resident set size now, MiB (/proc/self/statm)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def max_rss_mib() -> float:
    """Peak resident set size of the process, MiB (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def import_footprint() -> list[tuple[str, float]]:
    """Peak RSS (VmHWM) of a fresh interpreter after each cumulative import step, MiB."""
    out: list[tuple[str, float]] = []
    code = ""
    for label, statement in IMPORT_STEPS:
        code = f"{code}; {statement}" if statement else "pass"
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork and exec, so a child would report ours.
        probe = f"{code}; print(open('/proc/self/status').read().split('VmHWM:')[1].split()[0])"
        result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
        out.append((label, int(result.stdout.split()[-1]) / 1024))
    return out


def process_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def build_agent(args: argparse.Namespace, workdir: Path) -> tuple[AgentLoop, SimulatedBackend, CollectorRegistry]:
    """The agent's parts, wired as ``wattplane-agent`` wires them, over ``args.gpus`` simulated GPUs."""
    workdir.mkdir(parents=True, exist_ok=True)
    settings = AgentSettings(
        node_name=NODE,
        backend="sim",
        pod_mapper="sim",
        tick_s=max(0.1, args.tick),
        sim_load=0.9,
        journal_path=workdir / "journal.json",
    )
    backend = SimulatedBackend(node_name=NODE, gpu_count=args.gpus, model=args.model, state_file=None)
    engine = NodeEngine(backend, Journal(settings.journal_path), budget_params=budget_params(settings))
    pods = {
        d.identity.uuid: [PodRef(namespace="bench", name=f"job-{d.identity.index}", uid=f"u{d.identity.index}")]
        for d in backend.devices()
    }

    async def assignment() -> dict[str, list[PodRef]]:
        return pods

    loop = AgentLoop(settings, engine, cast(NodeObjects, InMemoryGpuNode()), assignment_source=assignment)
    registry = CollectorRegistry()
    registry.register(AgentCollector(NODE, loop.snapshot))
    return loop, backend, registry


def plan_for(backend: SimulatedBackend, budget_watts: float | None) -> dict[str, Any]:
    """Targets at 90 % of each GPU's range, priorities 0-3, and the node budget."""
    gpus = []
    for d in backend.devices():
        c = d.constraints()
        gpus.append(
            {
                "uuid": d.identity.uuid,
                "powerLimitWatts": c.min_watts + 0.9 * (c.max_watts - c.min_watts),
                "priority": d.identity.index % 4,
            }
        )
    spec: dict[str, Any] = {"planGeneration": 1, "gpus": gpus}
    if budget_watts is not None:
        spec["nodeBudgetWatts"] = budget_watts
    return spec


def node_power(backend: SimulatedBackend) -> float:
    return sum(d.read().power_watts for d in backend.devices())


@dataclass
class CostRun:
    """Per-tick CPU of the agent and of the baseline, and memory, over one run."""

    ticks: int = 0
    wall_s: float = 0.0
    tick_cpu_s: list[float] = field(default_factory=list)
    base_cpu_s: list[float] = field(default_factory=list)
    process_cpu_s: float = 0.0
    rss_start_mib: float = 0.0
    rss_end_mib: float = 0.0
    rss_peak_now_mib: float = 0.0


async def measure_cost(args: argparse.Namespace, workdir: Path) -> CostRun:
    loop, backend, registry = build_agent(args, workdir)
    await loop.safe_tick()  # settle: loads set by pods, first writes done
    budget = round(0.85 * node_power(backend), 1)  # the budget loop stays engaged: some GPUs held back
    loop._adopt({"spec": plan_for(backend, budget)})
    for _ in range(5):
        await loop.safe_tick()
    devices = list(backend.devices())
    run = CostRun(rss_start_mib=rss_mib())
    started_wall = time.perf_counter()
    started_cpu = process_cpu_s()
    deadline = started_wall
    while time.perf_counter() - started_wall < args.duration:
        c0 = time.process_time()
        for device in devices:  # the baseline: bare reads of the same GPUs
            device.read()
        c1 = time.process_time()
        await loop.safe_tick()
        if args.scrape_every and run.ticks % args.scrape_every == 0:
            generate_latest(registry)
        c2 = time.process_time()
        run.base_cpu_s.append(c1 - c0)
        run.tick_cpu_s.append(c2 - c1)
        run.ticks += 1
        run.rss_peak_now_mib = max(run.rss_peak_now_mib, rss_mib()) if run.ticks % 50 == 0 else run.rss_peak_now_mib
        if not args.fast:
            deadline += args.tick
            await asyncio.sleep(max(0.0, deadline - time.perf_counter()))
    run.wall_s = time.perf_counter() - started_wall
    run.process_cpu_s = process_cpu_s() - started_cpu
    run.rss_end_mib = rss_mib()
    run.rss_peak_now_mib = max(run.rss_peak_now_mib, run.rss_end_mib)
    if loop.stats.tick_errors:
        raise SystemExit(f"{loop.stats.tick_errors} tick(s) failed during the run")
    return run


@dataclass
class Breach:
    """One load step over the budget, and how the agent answered it."""

    reacted_in_tick: bool
    reaction_ms: float
    tick_ms: float
    ticks_to_within_budget: int


async def measure_breaches(args: argparse.Namespace, workdir: Path) -> list[Breach]:
    loop, backend, _ = build_agent(args, workdir)
    devices = list(backend.devices())
    writes: list[float] = []

    def timed(device: SimulatedGpu) -> Callable[[float], None]:
        real = device.set_power_limit_watts

        def set_limit(watts: float) -> None:
            real(watts)
            writes.append(time.perf_counter())

        return set_limit

    for device in devices:
        device.set_power_limit_watts = timed(device)  # type: ignore[method-assign]
    loop.settings.sim_load = 1.0
    await loop.safe_tick()
    full = node_power(backend)
    loop.settings.sim_load = 0.1
    await loop.safe_tick()
    idle = node_power(backend)
    budget = idle + 0.6 * (full - idle)  # light load fits; full load breaches it
    loop._adopt({"spec": plan_for(backend, budget)})
    results: list[Breach] = []
    for _ in range(args.breach_trials):
        loop.settings.sim_load = 0.1
        for _ in range(400):  # quiet: the budget loop gives every limit back, step by step
            await loop.safe_tick()
            if loop.engine.budget is not None and not loop.engine.budget.limits:
                break
        assert loop.engine.budget is not None and not loop.engine.budget.limits, "limits not restored"
        loop.settings.sim_load = 1.0  # the step: node power jumps over the budget before the next tick
        writes.clear()
        started = time.perf_counter()
        await loop.safe_tick()
        ended = time.perf_counter()
        in_tick = list(writes)
        decision = loop.engine.budget
        assert decision is not None and decision.measured_watts > budget, "the step did not breach the budget"
        within = 0
        while node_power(backend) > budget and within < 20:
            within += 1
            await loop.safe_tick()
        results.append(
            Breach(
                reacted_in_tick=decision.action == "cut",
                reaction_ms=1000 * (max(in_tick) - started) if in_tick else float("nan"),
                tick_ms=1000 * (ended - started),
                ticks_to_within_budget=1 + within,
            )
        )
    return results


def report(args: argparse.Namespace, run: CostRun, breaches: list[Breach], footprint: list[tuple[str, float]]) -> None:
    tick_ms = 1000 * statistics.fmean(run.tick_cpu_s)
    base_ms = 1000 * statistics.fmean(run.base_cpu_s)
    p99 = sorted(run.tick_cpu_s)[int(0.99 * (len(run.tick_cpu_s) - 1))] * 1000
    tick_mcpu = 1000 * sum(run.tick_cpu_s) / run.wall_s
    base_mcpu = 1000 * sum(run.base_cpu_s) / run.wall_s
    process_mcpu = 1000 * (run.process_cpu_s - sum(run.base_cpu_s)) / run.wall_s
    mode = "back to back (--fast)" if args.fast else f"every {args.tick:g} s"
    print(f"agent tick bench: {args.gpus} simulated {args.model} GPUs, ticks {mode}")
    print(f"measured {run.ticks} ticks over {run.wall_s:.1f} s wall; scraped every {args.scrape_every} tick(s)")
    print()
    print(f"{'':34} {'agent tick':>12} {'bare reads':>12} {'ratio':>8}")
    print(f"{'CPU per tick, mean (ms)':34} {tick_ms:12.3f} {base_ms:12.3f} {tick_ms / base_ms:8.1f}")
    print(f"{'CPU per tick, p99 (ms)':34} {p99:12.3f}")
    print(f"{'average CPU over the run (mCPU)':34} {tick_mcpu:12.2f} {base_mcpu:12.2f} {tick_mcpu / base_mcpu:8.1f}")
    print(f"{'whole process less baseline (mCPU)':34} {process_mcpu:12.2f}")
    print()
    print(f"{'RSS when the run started (MiB)':34} {run.rss_start_mib:12.1f}")
    print(f"{'RSS at the end (MiB)':34} {run.rss_end_mib:12.1f}")
    print(f"{'RSS growth over the run (MiB)':34} {run.rss_end_mib - run.rss_start_mib:12.1f}")
    print(f"{'peak RSS, ru_maxrss (MiB)':34} {max_rss_mib():12.1f}")
    if footprint:
        print("import footprint, fresh interpreter, peak RSS (MiB):")
        for label, mib in footprint:
            print(f"  {label:32} {mib:12.1f}")
    print()
    if not args.fast:
        mcpu_ok = "meets" if process_mcpu <= GOAL_MCPU else "MISSES"
        print(f"goal <= {GOAL_MCPU:g} mCPU average: {mcpu_ok} ({process_mcpu:.2f} mCPU, whole process less baseline)")
    else:
        print(f"(--fast: mCPU at 1 Hz would be {tick_ms:.2f} ms of CPU per second = {tick_ms:.2f} mCPU)")
    rss_ok = "meets" if max_rss_mib() <= GOAL_RSS_MIB else "MISSES"
    print(f"goal <= {GOAL_RSS_MIB:g} MiB RSS: {rss_ok} (peak {max_rss_mib():.1f} MiB)")
    if breaches:
        reacted = sum(b.reacted_in_tick for b in breaches)
        react = [b.reaction_ms for b in breaches]
        ticks = [b.ticks_to_within_budget for b in breaches]
        print()
        print(f"budget breach, {len(breaches)} load steps from 10 % to 100 % load over a fixed budget:")
        print(f"  limits lowered in the tick that measured the breach: {reacted}/{len(breaches)}")
        print(
            f"  tick start -> last limit written (ms): median {statistics.median(react):.3f}, max {max(react):.3f}"
            f"; whole tick median {statistics.median(b.tick_ms for b in breaches):.3f} ms"
        )
        print(f"  ticks until measured power is within budget: median {statistics.median(ticks):g}, max {max(ticks)}")
        print(
            f"  a breach waits at most one tick interval to be measured: worst case {args.tick * 1000:.0f} ms"
            f" + {max(react):.1f} ms at --tick {args.tick:g}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of ticking to measure (600)")
    parser.add_argument("--tick", type=float, default=1.0, help="tick interval, seconds (1.0)")
    parser.add_argument("--fast", action="store_true", help="run ticks back to back instead of on the interval")
    parser.add_argument("--gpus", type=int, default=8, help="simulated GPUs (8)")
    parser.add_argument("--model", default="A40", help="simulated GPU model (A40)")
    parser.add_argument("--scrape-every", type=int, default=1, help="scrape the collector every N ticks (1; 0: never)")
    parser.add_argument("--breach-trials", type=int, default=20, help="budget breach steps to time (20)")
    parser.add_argument("--no-footprint", action="store_true", help="skip the import-footprint probes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="wattplane-bench-") as tmp:
        workdir = Path(tmp)
        run = asyncio.run(measure_cost(args, workdir / "cost"))
        breaches = asyncio.run(measure_breaches(args, workdir / "breach")) if args.breach_trials else []
    report(args, run, breaches, [] if args.no_footprint else import_footprint())


if __name__ == "__main__":
    main()
