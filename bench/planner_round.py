"""Planner round cost on a synthetic fleet, against the cost of building its input snapshot.

Fleet: N GPUs on N/8 nodes (8 per node), N/2 pods (one or two GPUs each), 50 policies mixing static
caps, carbon (with a 24 h forecast), budgets over racks of 25 nodes, efficiency profiles and straggler
caps, all on the real planner. The baseline is building the ``FleetSnapshot`` (the operator does that
every round too), timed in the same run.

Two rounds are timed: a *full* round (a fresh :func:`~wattplane.planner.plan.plan`, what the operator
pays after a policy edit or a restart) and an *incremental* round of a long-lived
:class:`~wattplane.planner.plan.Planner` after one pod event (a pod replaced by another on the same
GPUs, one second later), what the operator pays for most events.

    python bench/planner_round.py                 # 10,000 GPUs, then 100,000
    python bench/planner_round.py --gpus 10000 --repeat 9
    python bench/planner_round.py --default-gc    # CPython's collector thresholds, not the operator's

The rounds run under the operator's garbage-collector thresholds (:mod:`wattplane.operator.gctuning`),
as ``wattplane-operator`` sets them; ``--default-gc`` keeps CPython's.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from wattplane.api.v1alpha1.energypolicy import EnergyPolicySpec, JobProfile, ProfilePoint
from wattplane.operator.gctuning import tune_gc
from wattplane.planner.context import CarbonInput, PlanContext
from wattplane.planner.plan import Planner, plan
from wattplane.planner.snapshot import FleetSnapshot, GpuView, PodView, PolicyView, SnapshotDelta

NOW = datetime(2026, 11, 21, 12, tzinfo=UTC)


def _policies(n: int, carbon_mode: str = "Curve") -> list[PolicyView]:
    out = []
    for i in range(n):
        kind = i % 5
        spec: dict[str, object] = {"selector": {"podSelector": {"matchLabels": {"team": f"t{i}"}}}, "priority": i % 7}
        if kind == 0:
            spec["limits"] = {"maxFractionOfDefault": 0.6 + 0.01 * (i % 20), "minFractionOfDefault": 0.4}
        elif kind == 1:
            spec["carbon"] = {
                "mode": carbon_mode,
                "source": {"provider": "trace", "zone": f"z{i}", "tracePath": "/dev/null"},
            }
        elif kind == 2:
            spec["efficiency"] = {"eta": 0.5}
        elif kind == 3:
            spec["stragglers"] = {"tolerance": 0.05}
            spec["limits"] = {"maxWatts": 280}
        else:
            spec["budget"] = {"watts": 25 * 8 * 220.0, "nodeSelector": {"matchLabels": {"rack": f"r{i // 5}"}}}
            spec["limits"] = {"maxFractionOfDefault": 0.9}
        out.append(PolicyView(name=f"policy-{i:02d}", spec=EnergyPolicySpec.model_validate(spec), generation=1))
    return out


def _raw_fleet(gpus: int, seed: int) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    """Plain dicts, as the operator holds them before a round (the snapshot is built from these)."""
    rng = random.Random(seed)
    gpu_rows: list[dict[str, object]] = []
    pod_rows: list[dict[str, object]] = []
    nodes = gpus // 8
    pod_index = 0
    for n in range(nodes):
        node = f"node-{n:05d}"
        slot = 0
        while slot < 8:
            width = 2 if rng.random() < 0.25 and slot < 7 else 1
            pod = ("ns-" + str(pod_index % 40), f"pod-{pod_index:06d}")
            pod_rows.append(
                {
                    "key": pod,
                    "node": node,
                    "labels": {"team": f"t{rng.randrange(50)}"},
                    "annotations": {"wattplane.io/job": f"job-{pod_index // 4}", "wattplane.io/priority": "normal"},
                }
            )
            for _ in range(width):
                gpu_rows.append(
                    {
                        "node": node,
                        "uuid": f"GPU-{n:05d}-{slot}",
                        "index": slot,
                        "pod": pod,
                        "power": rng.uniform(80, 300),
                    }
                )
                slot += 1
            pod_index += 1
    return gpu_rows, pod_rows


def build_snapshot(gpu_rows: list[dict[str, object]], pod_rows: list[dict[str, object]]) -> FleetSnapshot:
    """The snapshot from plain rows, every view built anew (the full-round baseline)."""
    gpus = tuple(
        GpuView(
            node=str(g["node"]),
            uuid=str(g["uuid"]),
            index=int(g["index"]),  # type: ignore[call-overload]
            model="A40",
            min_watts=100.0,
            max_watts=300.0,
            default_watts=300.0,
            power_watts=float(g["power"]),  # type: ignore[arg-type]
            energy_joules=1e6,
            pods=(g["pod"],),  # type: ignore[arg-type]
        )
        for g in gpu_rows
    )
    pods = {
        p["key"]: PodView(
            namespace=p["key"][0],  # type: ignore[index]
            name=p["key"][1],  # type: ignore[index]
            node=str(p["node"]),
            labels=p["labels"],  # type: ignore[arg-type]
            annotations=p["annotations"],  # type: ignore[arg-type]
        )
        for p in pod_rows
    }
    nodes = tuple(sorted({g.node for g in gpus}))
    return FleetSnapshot(
        gpus=gpus,
        pods=pods,  # type: ignore[arg-type]
        namespace_labels={f"ns-{i}": {} for i in range(40)},
        nodes=nodes,
        node_labels={n: {"rack": f"r{i // 25}"} for i, n in enumerate(nodes)},
    )


def _context(policies: list[PolicyView]) -> PlanContext:
    forecast = tuple((NOW + timedelta(hours=h), 200.0 + 10 * (h % 12)) for h in range(1, 25))
    carbon = {
        p.name: CarbonInput(intensity=250.0, time=NOW, forecast=forecast, source="trace/x")
        for p in policies
        if p.spec.carbon is not None
    }
    points = [ProfilePoint(watts=w, seconds_per_unit=300 / w, joules_per_unit=w * 0.9) for w in (300, 250, 200, 150)]
    profiles = {
        (f"ns-{i % 40}/job-{i}", "A40"): JobProfile(
            job=f"ns-{i % 40}/job-{i}", gpu_model="A40", state="Done", points=points, chosen_watts=200.0
        )
        for i in range(0, 20000, 3)
    }
    return PlanContext(now=NOW, carbon=carbon, profiles=profiles)


def _median_seconds(fn: object, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _one_pod_event(snapshot: FleetSnapshot, step: int) -> FleetSnapshot:
    """``snapshot`` with one pod replaced by a new one on the same GPUs, as the operator's state has it.

    Unchanged nodes keep their GPU tuples and unchanged pods their views (the operator's state holds
    them between rounds); only the node of the event gets a new tuple.
    """
    by_node = dict(snapshot.gpus_by_node)
    node = sorted(by_node)[(step * 7919) % len(by_node)]
    gpus = by_node[node]
    old_key = gpus[0].pods[0]
    old = snapshot.pods[old_key]
    new_key = (old.namespace, f"{old.name}-r{step}")
    pods = dict(snapshot.pods)
    del pods[old_key]
    pods[new_key] = replace(old, name=new_key[1], uid=f"uid-{step}")
    by_node[node] = tuple(replace(g, pods=(new_key,)) if g.pods == (old_key,) else g for g in gpus)
    version = (snapshot.version or 0) + 1
    # The operator's state knows what its watch events touched since the last snapshot.
    delta = SnapshotDelta(since=version - 1, pods=frozenset({old_key, new_key}), nodes=frozenset({node}))
    return replace(snapshot, gpus=(), pods=pods, by_node=by_node, version=version, delta=delta)


def incremental(gpus: int, repeat: int, carbon_mode: str = "Curve") -> float:
    """Median incremental round after one pod event on a long-lived planner, ms printed, seconds returned."""
    policies = _policies(50, carbon_mode)
    gpu_rows, pod_rows = _raw_fleet(gpus, seed=gpus)
    base = build_snapshot(gpu_rows, pod_rows)
    snapshot = replace(base, gpus=(), by_node=dict(base.gpus_by_node), version=0)
    context = _context(policies)
    planner = Planner()
    result = planner.plan(snapshot, policies, context)
    times, builds, changed = [], [], []
    for step in range(1, repeat + 1):
        started = time.perf_counter()
        snapshot = _one_pod_event(snapshot, step)
        builds.append(time.perf_counter() - started)
        context = replace(
            context,
            now=context.now + timedelta(seconds=1),
            carbon_budgets=result.carbon_budgets,
            budget_rebalances=result.budget_rebalances,
            previous_node_budgets=result.node_budgets,
        )
        started = time.perf_counter()
        result = planner.plan(snapshot, policies, context)
        times.append(time.perf_counter() - started)
        changed.append(len(result.changed_nodes))
    median = statistics.median(times)
    print(
        f"{gpus:>7} GPUs, {carbon_mode} carbon: incremental round after one pod event {median * 1000:7.2f} ms "
        f"(median of {repeat}; snapshot update {statistics.median(builds) * 1000:.2f} ms; "
        f"{statistics.median(changed):.0f} node(s) changed per round)"
    )
    return median


def run(gpus: int, repeat: int, carbon_mode: str = "Curve") -> float:
    policies = _policies(50, carbon_mode)
    gpu_rows, pod_rows = _raw_fleet(gpus, seed=gpus)
    snapshot = build_snapshot(gpu_rows, pod_rows)
    context = _context(policies)
    result = plan(snapshot, policies, context)
    # Later rounds continue the jobs' slowdown accounts (ten minutes on) rather than opening them.
    context = replace(context, now=NOW + timedelta(minutes=10), carbon_budgets=result.carbon_budgets)
    targets = sum(len(t) for t in result.nodes.values())
    build = _median_seconds(lambda: build_snapshot(gpu_rows, pod_rows), repeat)
    round_ = _median_seconds(lambda: plan(snapshot, policies, context), repeat)
    print(
        f"{gpus:>7} GPUs / {gpus // 8:>6} nodes / {len(pod_rows):>6} pods / 50 policies: "
        f"plan {round_ * 1000:8.1f} ms (median of {repeat}), snapshot build {build * 1000:7.1f} ms, "
        f"ratio {round_ / build:5.2f}x; {targets} targets, {len(result.node_budgets)} node budgets"
        + (f", {len(result.carbon_budgets)} budgeted carbon jobs" if carbon_mode == "Budgeted" else "")
    )
    return round_


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpus", type=int, action="append", help="fleet size(s); default 10000 and 100000")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--events", type=int, default=50, help="pod events timed in the incremental rounds")
    parser.add_argument(
        "--budgeted",
        action="store_true",
        help="also time the round with the carbon policies in mode Budgeted (per-job slowdown accounts), "
        "against the same fleet with mode Curve",
    )
    parser.add_argument("--default-gc", action="store_true", help="keep CPython's collector thresholds")
    args = parser.parse_args()
    if not args.default_gc:
        tune_gc()
    print(f"garbage collector thresholds: {gc.get_threshold()}")
    sizes = args.gpus or [10_000, 100_000]
    results = {n: run(n, args.repeat if n <= 20_000 else max(3, args.repeat // 2)) for n in sizes}
    if 10_000 in results and 100_000 in results:
        print(f"scaling: 100k round / 10k round = {results[100_000] / results[10_000]:.1f}x (goal ≤ 10x)")
    if 10_000 in results:
        print(f"goal: 10k round median ≤ 50 ms — measured {results[10_000] * 1000:.1f} ms")
    for n in sizes:
        result = incremental(n, args.events)
        if n == 100_000:
            print(f"goal: incremental round after one pod event at 100k GPUs ≤ 5 ms — measured {result * 1000:.2f} ms")
    if args.budgeted:
        for n, curve in results.items():
            budgeted = run(n, args.repeat if n <= 20_000 else max(3, args.repeat // 2), "Budgeted")
            print(f"{n} GPUs: Budgeted carbon round / Curve carbon round = {budgeted / curve:.2f}x")
            incremental(n, args.events, "Budgeted")


if __name__ == "__main__":
    main()
