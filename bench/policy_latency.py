"""Policy edit → every affected GPU applied, end to end on the real kube-apiserver, with N agents.

Starts the test tier's control plane (etcd + kube-apiserver + kwok, built by tests/controlplane/build.sh),
N fake GPU nodes each with a real agent process (simulated A40s) and the real operator; one pod on all
GPUs of every node; then edits a static-cap policy back and forth and measures, per GPU, the time from
the edit to the agent reporting the new limit as applied in GpuNode status. Also reads the operator's
own counters to compare API writes per planning round with the number of nodes whose plan changed.

    python bench/policy_latency.py --agents 20 --edits 10

Goal (issue 5): p95 ≤ 2 s with 20 agents; writes per round ≤ changed nodes.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "support"))

from controlplane import ensure_binaries, install_crds, start_control_plane  # noqa: E402
from fleet import Fleet  # noqa: E402
from kubeapi import apply_policy, connect, create_namespace, create_node, create_pod, get_cluster_object  # noqa: E402
from kubernetes_asyncio import client  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

GPUS_PER_NODE = 4


def _operator_counters(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name in ("wattplane_operator_rounds", "wattplane_operator_api_writes"):
            out[family.name] = sum(s.value for s in family.samples if s.name.endswith("_total"))
    return out


async def _applied(api: object, nodes: list[str], watts: float) -> set[str]:
    done: set[str] = set()
    for node in nodes:
        gn = await get_cluster_object(api, "gpunodes", node)  # type: ignore[arg-type]
        for g in gn.get("status", {}).get("gpus", []):
            if g.get("powerLimitWatts") == watts and g.get("state") == "Applied":
                done.add(g["uuid"])
    return done


async def run(agents: int, edits: int, workdir: Path) -> None:
    ensure_binaries()
    cp = start_control_plane(workdir)
    install_crds(cp)
    nodes = [f"lat-n{i:02d}" for i in range(agents)]
    fleet = Fleet(cp, nodes, workdir)
    try:
        async with await connect(cp.kubeconfig) as api:
            for node in nodes:
                await create_node(api, node, gpus=GPUS_PER_NODE)
            for node in nodes:
                fleet.start_agent(node)
            fleet.start_operator()
            await create_namespace(api, "lat", {"team": "lat"})
            for node in nodes:
                await create_pod(api, "lat", f"train-{node}", node=node, gpus=GPUS_PER_NODE, labels={"app": "t"})
            total = agents * GPUS_PER_NODE
            await _wait_attributed(api, nodes, total, fleet)
            await _wait_operator(fleet)
            latencies: list[float] = []
            ratios: list[float] = []
            spec = {"selector": {"podSelector": {"matchLabels": {"app": "t"}}}, "limits": {"maxWatts": 0.0}}
            for i in range(edits):
                watts = 180.0 if i % 2 == 0 else 210.0
                before = _operator_counters(fleet.operator_metrics_url)
                spec["limits"] = {"maxWatts": watts}
                started = time.monotonic()
                await apply_policy(api, "latency-cap", spec)
                seen: dict[str, float] = {}
                while len(seen) < total and time.monotonic() - started < 30:
                    for uuid in await _applied(api, nodes, watts):
                        seen.setdefault(uuid, time.monotonic() - started)
                    await asyncio.sleep(0.05)
                if len(seen) < total:
                    raise SystemExit(f"edit {i}: only {len(seen)}/{total} GPUs applied within 30 s")
                latencies.extend(seen.values())
                await asyncio.sleep(2.0)  # let measurement-only status writes of this edit settle
                after = _operator_counters(fleet.operator_metrics_url)
                rounds = after["wattplane_operator_rounds"] - before["wattplane_operator_rounds"]
                writes = after["wattplane_operator_api_writes"] - before["wattplane_operator_api_writes"]
                # Each edit changes every node's plan once; the policy's status is one more write.
                ratios.append(writes / (agents + 1))
                print(
                    f"edit {i + 1:2d}: {watts:.0f} W on {total} GPUs, p95 {_p95(list(seen.values())):.2f} s, "
                    f"max {max(seen.values()):.2f} s; {writes:.0f} API writes in {rounds:.0f} rounds "
                    f"for {agents} changed nodes + 1 policy status"
                )
            print(
                f"\n{agents} agents × {GPUS_PER_NODE} GPUs, {edits} edits: edit → applied p50 "
                f"{statistics.median(latencies):.2f} s, p95 {_p95(latencies):.2f} s, max {max(latencies):.2f} s "
                f"(goal p95 ≤ 2 s); API writes / (changed nodes + policy status) per edit: "
                f"mean {statistics.mean(ratios):.2f}, max {max(ratios):.2f} (goal ≤ 1)"
            )
    except BaseException:
        print(fleet.logs(), file=sys.stderr)
        raise
    finally:
        for process in [*fleet.agents.values(), *([fleet.operator] if fleet.operator else [])]:
            process.stop()
        cp.stop()


async def _wait_attributed(api: object, nodes: list[str], total: int, fleet: Fleet) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        attributed = 0
        for node in nodes:
            try:
                gn = await get_cluster_object(api, "gpunodes", node)  # type: ignore[arg-type]
            except client.exceptions.ApiException:  # the agent has not created it yet
                continue
            attributed += sum(1 for g in gn.get("status", {}).get("gpus", []) if g.get("pods"))
        if attributed == total:
            return
        await asyncio.sleep(0.5)
    raise SystemExit(f"pods not attributed within 120 s\n{fleet.logs()}")


async def _wait_operator(fleet: Fleet) -> None:
    for _ in range(120):  # the operator may still be importing on a loaded machine
        try:
            _operator_counters(fleet.operator_metrics_url)
            return
        except OSError:
            await asyncio.sleep(0.5)


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=20)
    parser.add_argument("--edits", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="wattplane-latency-") as tmp:
        asyncio.run(run(args.agents, args.edits, Path(tmp)))


if __name__ == "__main__":
    main()
