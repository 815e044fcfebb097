"""Fleet scale: the real operator on a real kube-apiserver with thousands of kwok nodes and simulated agents.

Starts the test tier's control plane (etcd + kube-apiserver + kube-controller-manager + kwok, built by
tests/controlplane/build.sh), creates ``--nodes`` Node objects (kwok keeps them Ready and runs the
pods bound to them) in racks of ``--rack-size``, and one agent swarm process
(tests/support/agentswarm.py: every node's agent at the API level, ``--gpus`` simulated A40s each,
a status report per node every ``--status-interval`` s). Then the real operator process
(``python -m wattplane.operator``, debounce ``--debounce-s``, resync ``--resync-s``) and a policy mix:
a static cap (app=train), carbon on a recorded trace (app=infer), a rack budget over the last rack
(app=batch), efficiency without a progress signal plus a watt cap (app=tune), and a static cap with
a higher priority over the pods of the first ``--latency-nodes`` nodes (the one edited later).

Phases: ``--pods`` pods bound to nodes with free GPUs (1 or 2 GPUs each, annotation ``wattplane.io/job``
= the pod's name); churn: ``--churn-per-s`` pods replaced every second for ``--minutes``; a quiet
window (``--quiet-s``, after a settling time); then the high-priority cap edited back and forth
``--edits`` times, each time waiting until every GPU it governs reports the new limit ``Applied``.

    python bench/fleet_scale.py --nodes 50 --pods 250 --minutes 1            # a quick look
    python bench/fleet_scale.py --nodes 2000 --pods 10000 --minutes 3 --status-interval 30 --json fleet.json
    python bench/fleet_scale.py --nodes 200 --pods 1000 --minutes 0.5 --edits 10   # edit latency

On a small shared machine, 2,000 nodes reporting every 10 s (200 status writes a second) saturate
the API server and the swarm's writes time out; ``--status-interval 30`` keeps the status load
sustainable there, so the figures measure the operator rather than a drowning API server.

Reports (table, and ``--json``):

* operator RSS: after its first round, after the pods are planned, at the end of the churn, at the
  end, and a sample every 10 s (flat or growing);
* operator CPU seconds per pod change (create or delete) over the churn, from /proc/<pid>/stat;
* API writes per node per minute during the churn and in the quiet window: the operator's own
  ``wattplane_operator_api_writes`` counter (GpuNode patches, policy status patches, events) and the
  plan changes the swarm saw through its watch; in the quiet window also spec changes per node per
  planning round;
* watch lag: from a pod's create call returning to the operator's target for that pod's job
  appearing in its node's GpuNode spec (p50/p95; pods of the static cap, carbon and tune policies);
* policy edit → every governed GPU ``Applied`` at the new limit, p50/p95 over the edits (and the
  plan-only part: edit → the last node's new spec);
* planning round duration (``wattplane_operator_round_duration_seconds`` sampled every 10 s).

Baselines measured in the same run, printed as ratios:

* operator CPU per pod change against the kube-apiserver's CPU per pod change over the same churn
  window (the API server must handle every one of those changes anyway);
* the planning round against one LIST of all GpuNodes and all pods by this script (reading the
  fleet once, decoded to JSON): what any controller pays to see the whole fleet.

The machine's load average is printed with the figures: other processes share the cores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "support"))

from agentswarm import SwarmLog, swarm_command  # noqa: E402
from controlplane import ControlPlane, Process, ensure_binaries, free_port, spawn, start_control_plane  # noqa: E402
from faults import http_get, log_problems, rss_mib  # noqa: E402
from kubeapi import GROUP, VERSION, apply_policy, connect, create_namespace, create_node  # noqa: E402
from kubernetes_asyncio import client  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

NS = "fleet"
EDIT_POLICY = "fleet-edit"
EDIT_WATTS = (160.0, 240.0)
#: Apps whose pods always get a target (the watch-lag sample); ``batch`` is planned only on the budget rack.
LAG_APPS = ("train", "infer", "tune")
APPS = ("train", "infer", "batch", "tune", "other")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def metrics(url: str) -> dict[str, float]:
    """Sum of each metric family's samples at ``url`` (empty when unreachable)."""
    try:
        status, body = http_get(url)
    except OSError:
        return {}
    if status != 200:
        return {}
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(body):
        out[family.name] = sum(s.value for s in family.samples if not s.name.endswith("_created"))
    return out


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0-1) by nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def load() -> str:
    """The 1/5/15-minute load averages."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


@dataclass
class PodRecord:
    """A pod this run created."""

    name: str
    node: str
    gpus: int
    app: str
    created_at: float

    @property
    def job(self) -> str:
        """The job as the operator names it in GpuNode targets (``namespace/annotation``)."""
        return f"{NS}/{self.name}"


@dataclass
class Run:
    """State and measurements of one run."""

    args: argparse.Namespace
    cp: ControlPlane
    workdir: Path
    nodes: list[str]
    operator: Process | None = None
    swarm: Process | None = None
    metrics_url: str = ""
    log: SwarmLog | None = None
    free: dict[str, int] = field(default_factory=dict)
    pods: dict[str, PodRecord] = field(default_factory=dict)
    counter: int = 0
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    samples: list[dict[str, float]] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def say(self, line: str) -> None:
        """A progress line with the elapsed time and the load."""
        print(f"[{time.monotonic() - self.started:6.0f} s] {line}  (load {load()})", flush=True)

    def pids(self) -> dict[str, int]:
        """PIDs of the processes whose cost is reported."""
        procs = {"operator": self.operator, "swarm": self.swarm, **self.cp.processes}
        return {k: p.popen.pid for k, p in procs.items() if p is not None and p.popen.poll() is None}

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far per process."""
        return {k: cpu_seconds(pid) for k, pid in self.pids().items()}

    def operator_rss(self) -> float:
        """Operator RSS now, MiB."""
        return rss_mib(self.operator.popen.pid) if self.operator is not None else float("nan")


def _policies(args: argparse.Namespace, trace: Path, budget_rack: str) -> dict[str, dict[str, Any]]:
    def app(name: str) -> dict[str, Any]:
        return {"podSelector": {"matchLabels": {"fleet-app": name}}}

    return {
        "fleet-cap": {"selector": app("train"), "limits": {"maxFractionOfDefault": 0.7}},
        "fleet-carbon": {
            "selector": app("infer"),
            "carbon": {
                "source": {"provider": "trace", "zone": "fleet", "tracePath": str(trace)},
                "curve": {"basis": "Absolute", "points": [{"x": 200, "weight": 1.0}, {"x": 800, "weight": 0.0}]},
            },
        },
        "fleet-budget": {
            "selector": app("batch"),
            "budget": {
                "watts": args.rack_size * args.gpus * 150,
                "nodeSelector": {"matchLabels": {"fleet-rack": budget_rack}},
            },
        },
        "fleet-tune": {"selector": app("tune"), "efficiency": {}, "limits": {"maxWatts": 280}},
        EDIT_POLICY: _edit_policy(200.0),
    }


def _edit_policy(watts: float) -> dict[str, Any]:
    return {
        "selector": {"podSelector": {"matchLabels": {"fleet-group": "lat"}}},
        "priority": 100,
        "limits": {"maxWatts": watts},
    }


def _trace(path: Path) -> Path:
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=1)
    rows = [f"{(start + timedelta(hours=h)).isoformat()},{200 + 150 * (h % 5)}" for h in range(24 * 4)]
    path.write_text("timestamp,gco2_per_kwh\n" + "\n".join(rows) + "\n")
    return path


async def _bounded(jobs: list[Callable[[], Awaitable[None]]], limit: int) -> None:
    gate = asyncio.Semaphore(limit)

    async def one(job: Callable[[], Awaitable[None]]) -> None:
        async with gate:
            await job()

    await asyncio.gather(*(one(j) for j in jobs))


def _pick_node(run: Run, gpus: int, candidates: list[str]) -> str | None:
    for _ in range(30):
        node = run.rng.choice(candidates)
        if run.free[node] >= gpus:
            return node
    roomy = [n for n in candidates if run.free[n] >= gpus]
    return run.rng.choice(roomy) if roomy else None


async def _create_pod(run: Run, core: client.CoreV1Api, candidates: list[str]) -> PodRecord | None:
    gpus = run.rng.choice((1, 1, 2))
    node = _pick_node(run, gpus, candidates) or _pick_node(run, 1, candidates)
    if node is None:
        return None
    gpus = min(gpus, run.free[node])
    run.free[node] -= gpus
    run.counter += 1
    name = f"p{run.counter}"
    latency_node = node in run.nodes[: run.args.latency_nodes]
    app = "train" if latency_node else run.rng.choice(APPS)
    labels = {"fleet-app": app, **({"fleet-group": "lat"} if latency_node else {})}
    body = {
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {
                "wattplane.io/job": name,
                "wattplane.io/priority": run.rng.choice(["low", "normal", "high"]),
            },
        },
        "spec": {
            "nodeName": node,
            "containers": [{"name": "main", "image": "x:1", "resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}],
        },
    }
    try:
        await core.create_namespaced_pod(NS, body, _preload_content=False)
    except client.exceptions.ApiException:
        run.free[node] += gpus
        return None
    record = PodRecord(name, node, gpus, app, time.time())
    run.pods[name] = record
    return record


async def _delete_pod(run: Run, core: client.CoreV1Api, record: PodRecord) -> None:
    run.pods.pop(record.name, None)
    with contextlib.suppress(client.exceptions.ApiException):
        await core.delete_namespaced_pod(record.name, NS, grace_period_seconds=0, _preload_content=False)
    run.free[record.node] += record.gpus


async def _sampler(run: Run) -> None:
    """Every 10 s: operator RSS, round duration, rounds, API writes, CPU of every process."""
    while True:
        numbers = await asyncio.to_thread(metrics, run.metrics_url)
        sample = {
            "t": round(time.monotonic() - run.started, 1),
            "operator_rss_mib": round(run.operator_rss(), 1),
            "round_s": numbers.get("wattplane_operator_round_duration_seconds", float("nan")),
            "rounds": numbers.get("wattplane_operator_rounds", float("nan")),
            "api_writes": numbers.get("wattplane_operator_api_writes", float("nan")),
            "load1": float(load().split()[0]),
        }
        run.samples.append(sample)
        await asyncio.sleep(10.0)


async def _relist_seconds(api: client.ApiClient) -> float:
    """One LIST of every GpuNode and every pod, read and decoded: what seeing the whole fleet costs."""
    started = time.monotonic()
    custom = client.CustomObjectsApi(api)
    response = await custom.list_cluster_custom_object(GROUP, VERSION, "gpunodes", _preload_content=False)
    json.loads(await response.read())
    response = await client.CoreV1Api(api).list_pod_for_all_namespaces(_preload_content=False)
    json.loads(await response.read())
    return time.monotonic() - started


def _lags(log: SwarmLog, records: list[PodRecord]) -> tuple[list[float], int]:
    by_node: dict[str, list[dict[str, Any]]] = {}
    for line in log.specs:
        by_node.setdefault(line["node"], []).append(line)
    lags: list[float] = []
    missing = 0
    for record in records:
        found = None
        for line in by_node.get(record.node, []):
            if line["t"] >= record.created_at - 0.001 and any(t[2] == record.job for t in line["targets"].values()):
                found = float(line["t"])
                break
        if found is None:
            missing += 1
        else:
            lags.append(found - record.created_at)
    return lags, missing


async def _wait_planned(run: Run, records: list[PodRecord], within_s: float) -> float:
    """Seconds until every sampled pod's job has a target in its node's spec (or ``within_s`` passed)."""
    assert run.log is not None
    started = time.monotonic()
    pending = {r.name: r for r in records if r.app in LAG_APPS}
    while pending and time.monotonic() - started < within_s:
        run.log.poll()
        planned = {job for targets in run.log.latest.values() for _, _, job in targets.values()}
        pending = {k: v for k, v in pending.items() if v.job not in planned}
        await asyncio.sleep(1.0)
    if pending:
        run.say(f"{len(pending)} pods still without a plan after {within_s:.0f} s")
    return time.monotonic() - started


async def _edit_latency(run: Run, api: client.ApiClient) -> dict[str, Any]:
    """Edit the high-priority cap back and forth; time each edit until every governed GPU applied it."""
    assert run.log is not None
    run.log.poll()
    affected = {
        (node, uuid)
        for node, targets in run.log.latest.items()
        for uuid, (_, policy, _) in targets.items()
        if policy == EDIT_POLICY
    }
    nodes = sorted({n for n, _ in affected})
    run.say(f"edits: {len(affected)} GPUs on {len(nodes)} nodes under {EDIT_POLICY}")
    applied_s: list[float] = []
    planned_s: list[float] = []
    per_node: list[float] = []
    timeouts = 0
    for k in range(run.args.edits):
        watts = EDIT_WATTS[k % 2]
        t0 = time.time()
        await apply_policy(api, EDIT_POLICY, _edit_policy(watts))
        spec_done: dict[str, float] = {}
        applied_done: dict[str, float] = {}
        deadline = time.monotonic() + run.args.edit_timeout_s
        while time.monotonic() < deadline and len(applied_done) < len(nodes):
            await asyncio.sleep(0.05)
            run.log.poll()
            for line in run.log.specs[-5000:]:
                if line["t"] >= t0 and line["node"] not in spec_done:
                    mine = [t for u, t in line["targets"].items() if (line["node"], u) in affected]
                    if mine and all(t[0] == watts for t in mine):
                        spec_done[line["node"]] = line["t"] - t0
            for line in run.log.applied[-5000:]:
                node = line["node"]
                if line["t"] >= t0 and node not in applied_done:
                    mine = [g for u, g in line["gpus"].items() if (node, u) in affected]
                    if mine and all(g[0] == watts and g[1] == "Applied" for g in mine):
                        applied_done[node] = line["t"] - t0
        if len(applied_done) < len(nodes):
            timeouts += 1
            run.say(f"edit {k + 1}: only {len(applied_done)}/{len(nodes)} nodes applied {watts:g} W in time")
            continue
        applied_s.append(max(applied_done.values()))
        planned_s.append(max(spec_done.values()) if len(spec_done) == len(nodes) else float("nan"))
        per_node.extend(applied_done.values())
        run.say(f"edit {k + 1}: {watts:g} W applied on all {len(nodes)} nodes in {applied_s[-1]:.2f} s")
        await asyncio.sleep(2.0)
    return {
        "governed GPUs": len(affected),
        "governed nodes": len(nodes),
        "edits": run.args.edits,
        "timeouts": timeouts,
        "edit->all Applied p50 s": round(percentile(applied_s, 0.5), 3),
        "edit->all Applied p95 s": round(percentile(applied_s, 0.95), 3),
        "edit->last spec p50 s": round(percentile(planned_s, 0.5), 3),
        "edit->node Applied p50 s": round(percentile(per_node, 0.5), 3),
        "edit->node Applied p95 s": round(percentile(per_node, 0.95), 3),
    }


async def _drive(run: Run) -> None:
    args = run.args
    async with await connect(run.cp.kubeconfig) as api:
        api.configuration.connection_pool_maxsize = 32
        core = client.CoreV1Api(api)
        racks = max(1, (len(run.nodes) + args.rack_size - 1) // args.rack_size)
        budget_rack = f"r{racks - 1}"
        started = time.monotonic()

        def node_job(i: int, name: str) -> Callable[[], Awaitable[None]]:
            labels = {"fleet-rack": f"r{i // args.rack_size}"}
            return lambda: create_node(api, name, gpus=args.gpus, labels=labels)

        await _bounded([node_job(i, n) for i, n in enumerate(run.nodes)], args.concurrency)
        run.say(f"{len(run.nodes)} nodes created in {time.monotonic() - started:.1f} s")
        await create_namespace(api, NS)

        ready = run.workdir / "swarm.ready"
        run.log = SwarmLog(run.workdir / "swarm.jsonl")
        argv = swarm_command(
            run.cp.kubeconfig,
            [f"fleet-n:{len(run.nodes)}"],
            gpus=args.gpus,
            status_interval_s=args.status_interval,
            pod_sync_s=args.pod_sync,
            log=run.log.path,
            stats=run.workdir / "swarm.stats.json",
            ready_file=ready,
        )
        run.swarm = spawn("agentswarm", argv, run.workdir, run.cp.python_env())
        started = time.monotonic()
        while not ready.exists():
            if run.swarm.popen.poll() is not None:
                raise RuntimeError(f"swarm exited:\n{run.swarm.tail()}")
            await asyncio.sleep(0.5)
        run.say(
            f"swarm playing {len(run.nodes)} agents ({args.gpus} GPUs each) after {time.monotonic() - started:.1f} s"
        )

        for name, spec in _policies(args, _trace(run.workdir / "grid.csv"), budget_rack).items():
            await apply_policy(api, name, spec)
        port = free_port()
        run.metrics_url = f"http://127.0.0.1:{port}/metrics"
        run.operator = run.cp.spawn_python(
            "operator",
            "wattplane.operator",
            [],
            WATTPLANE_OPERATOR_DEBOUNCE_S=str(args.debounce_s),
            WATTPLANE_OPERATOR_RESYNC_INTERVAL_S=str(args.resync_s),
            WATTPLANE_OPERATOR_METRICS_HOST="127.0.0.1",
            WATTPLANE_OPERATOR_METRICS_PORT=str(port),
            WATTPLANE_OPERATOR_WRITE_CONCURRENCY=str(args.write_concurrency),
        )
        started = time.monotonic()
        while metrics(run.metrics_url).get("wattplane_operator_rounds", 0) < 1:
            if run.operator.popen.poll() is not None:
                raise RuntimeError(f"operator exited:\n{run.operator.tail()}")
            await asyncio.sleep(0.5)
        rss: dict[str, float] = {"first round": round(run.operator_rss(), 1)}
        run.say(f"operator's first round after {time.monotonic() - started:.1f} s; RSS {rss['first round']} MiB")
        sampler = asyncio.create_task(_sampler(run))
        try:
            run.free = dict.fromkeys(run.nodes, args.gpus)
            started = time.monotonic()
            initial: list[PodRecord] = []

            async def create_initial() -> None:
                record = await _create_pod(run, core, run.nodes)
                if record is not None:
                    initial.append(record)

            await _bounded([create_initial for _ in range(args.pods)], args.concurrency)
            created_s = time.monotonic() - started
            run.say(f"{len(initial)} pods created in {created_s:.1f} s; waiting for their plans")
            planned_after = await _wait_planned(run, initial, args.plan_timeout_s)
            rss["pods planned"] = round(run.operator_rss(), 1)
            relist = [await _relist_seconds(api) for _ in range(3)]
            run.say(f"pods planned {planned_after:.1f} s after the last create; RSS {rss['pods planned']} MiB")

            # Churn: replace pods off the latency nodes, so the edit phase governs a stable set.
            churn_nodes = run.nodes[args.latency_nodes :] or run.nodes
            latency_set = set(run.nodes[: args.latency_nodes]) if churn_nodes is not run.nodes else set()
            cpu0, m0, t0 = run.cpu(), metrics(run.metrics_url), time.time()
            spec_lines0 = len(run.log.specs)
            churned: list[PodRecord] = []
            changes = 0
            started = time.monotonic()
            next_line = started + 30
            while time.monotonic() - started < args.minutes * 60:
                tick = time.monotonic()
                movable = [r for r in run.pods.values() if r.node not in latency_set]
                batch = min(max(1, round(args.churn_per_s)), len(movable))
                victims = run.rng.sample(movable, batch)
                await asyncio.gather(*(_delete_pod(run, core, v) for v in victims))
                created = await asyncio.gather(*(_create_pod(run, core, churn_nodes) for _ in victims))
                churned.extend(r for r in created if r is not None)
                changes += len(victims) + sum(1 for r in created if r is not None)
                if time.monotonic() >= next_line:
                    next_line += 30
                    run.say(
                        f"churn {time.monotonic() - started:.0f} s: {changes} pod changes, "
                        f"RSS {run.operator_rss():.1f} MiB"
                    )
                await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
            churn_s = time.time() - t0
            cpu1, m1 = run.cpu(), metrics(run.metrics_url)
            run.log.poll()
            rss["end of churn"] = round(run.operator_rss(), 1)
            spec_lines_churn = len(run.log.specs) - spec_lines0
            run.say(f"churn done: {changes} pod changes in {churn_s:.0f} s; settling {args.settle_s:.0f} s")

            await asyncio.sleep(args.settle_s)
            run.log.poll()
            q_lines0, qm0, qt0 = len(run.log.specs), metrics(run.metrics_url), time.time()
            await asyncio.sleep(args.quiet_s)
            run.log.poll()
            qm1, quiet_s = metrics(run.metrics_url), time.time() - qt0
            quiet_specs = Counter(line["node"] for line in run.log.specs[q_lines0:])
            quiet_rounds = qm1.get("wattplane_operator_rounds", 0) - qm0.get("wattplane_operator_rounds", 0)

            edits = await _edit_latency(run, api) if args.edits else {}
            run.log.poll()
            rss["end"] = round(run.operator_rss(), 1)
            lags, missing = _lags(run.log, [r for r in churned if r.app in LAG_APPS])
            init_lags, init_missing = _lags(run.log, [r for r in initial if r.app in LAG_APPS])
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler

        n = len(run.nodes)
        minutes = churn_s / 60
        op_cpu = cpu1["operator"] - cpu0["operator"]
        api_cpu = cpu1["kube-apiserver"] - cpu0["kube-apiserver"]
        rounds = [s["round_s"] for s in run.samples if s["round_s"] == s["round_s"]]
        writes_churn = m1.get("wattplane_operator_api_writes", 0) - m0.get("wattplane_operator_api_writes", 0)
        writes_quiet = qm1.get("wattplane_operator_api_writes", 0) - qm0.get("wattplane_operator_api_writes", 0)
        relist_s = statistics.median(relist)
        swarm_stats = json.loads((run.workdir / "swarm.stats.json").read_text())
        run.figures = {
            "nodes": n,
            "gpus": n * args.gpus,
            "pods": len(initial),
            "pods created per s": round(len(initial) / created_s, 1),
            "pods planned after last create s": round(planned_after, 1),
            "load average at end": load(),
            "operator RSS MiB": rss,
            "operator RSS samples MiB (every 10 s)": [s["operator_rss_mib"] for s in run.samples],
            "churn s": round(churn_s, 1),
            "pod changes": changes,
            "operator CPU s per pod change": round(op_cpu / max(1, changes), 5),
            "kube-apiserver CPU s per pod change": round(api_cpu / max(1, changes), 5),
            "operator / kube-apiserver CPU": round(op_cpu / api_cpu, 2) if api_cpu else float("nan"),
            "CPU s over the churn": {k: round(cpu1[k] - cpu0.get(k, 0.0), 1) for k in cpu1},
            "operator API writes / node / min (churn)": round(writes_churn / n / minutes, 3),
            "plan changes / node / min (churn, swarm watch)": round(spec_lines_churn / n / minutes, 3),
            "quiet s": round(quiet_s, 1),
            "quiet rounds": quiet_rounds,
            "operator API writes / node / min (quiet)": round(writes_quiet / n / (quiet_s / 60), 3),
            "plan changes in quiet (all nodes)": sum(quiet_specs.values()),
            "plan changes per node per round (quiet, max)": round(
                max(quiet_specs.values(), default=0) / max(1.0, quiet_rounds), 3
            ),
            "watch lag p50 s (churn)": round(percentile(lags, 0.5), 3),
            "watch lag p95 s (churn)": round(percentile(lags, 0.95), 3),
            "watch lag samples / never planned (churn)": [len(lags), missing],
            "watch lag p50 / p95 s (initial burst)": [
                round(percentile(init_lags, 0.5), 2),
                round(percentile(init_lags, 0.95), 2),
            ],
            "initial never planned": init_missing,
            "round s p50 / max (samples)": [
                round(percentile(rounds, 0.5), 3),
                round(max(rounds, default=float("nan")), 3),
            ],
            "relist GpuNodes+pods s (baseline)": round(relist_s, 3),
            "round / relist": round(percentile(rounds, 0.5) / relist_s, 2) if relist_s else float("nan"),
            "round errors": qm1.get("wattplane_operator_round_errors", float("nan")),
            "operator log problems": len(log_problems(run.operator)) if run.operator else -1,
            "swarm": swarm_stats,
            "edit latency": edits,
            "settings": {k: v for k, v in vars(args).items() if k != "json"},
        }


def _table(figures: dict[str, Any]) -> str:
    rows: list[tuple[str, str]] = []
    for key, value in figures.items():
        if key in ("settings", "swarm", "operator RSS samples MiB (every 10 s)"):
            continue
        if isinstance(value, dict):
            for sub, v in value.items():
                rows.append((f"{key}: {sub}", str(v)))
        else:
            rows.append((key, str(value)))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def main() -> int:
    """Run the bench and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=2000)
    parser.add_argument("--gpus", type=int, default=8, help="GPUs per node")
    parser.add_argument("--pods", type=int, default=10000)
    parser.add_argument("--minutes", type=float, default=3.0, help="churn duration")
    parser.add_argument("--churn-per-s", type=float, default=5.0, help="pods replaced per second")
    parser.add_argument("--latency-nodes", type=int, default=200, help="nodes whose pods the edited policy governs")
    parser.add_argument("--edits", type=int, default=6, help="policy edits to time (0: none)")
    parser.add_argument("--edit-timeout-s", type=float, default=180.0)
    parser.add_argument("--rack-size", type=int, default=40, help="nodes per rack (the last rack is budgeted)")
    parser.add_argument("--status-interval", type=float, default=10.0, help="swarm status report interval, s")
    parser.add_argument("--pod-sync", type=float, default=1.0, help="swarm delay from a pod change to its status, s")
    parser.add_argument("--debounce-s", type=float, default=0.3, help="operator debounce")
    parser.add_argument("--resync-s", type=float, default=30.0, help="operator resync interval")
    parser.add_argument("--write-concurrency", type=int, default=16, help="operator GpuNode writes in flight")
    parser.add_argument("--settle-s", type=float, default=20.0, help="after the churn, before the quiet window")
    parser.add_argument("--quiet-s", type=float, default=60.0, help="quiet window counted")
    parser.add_argument("--plan-timeout-s", type=float, default=600.0, help="wait for the initial pods' plans")
    parser.add_argument("--concurrency", type=int, default=24, help="parallel creates")
    parser.add_argument("--workdir", type=Path, help="keep logs here (default: a temporary folder)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    args.latency_nodes = min(args.latency_nodes, args.nodes)

    ensure_binaries()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="wattplane-fleet-"))
    workdir.mkdir(parents=True, exist_ok=True)
    cp = start_control_plane(workdir / "cp")
    nodes = [f"fleet-n{i}" for i in range(args.nodes)]
    run = Run(args, cp, workdir, nodes)
    run.say(f"control plane up; logs in {workdir}")
    try:
        asyncio.run(_drive(run))
    finally:
        for process in (run.operator, run.swarm):
            if process is not None:
                process.stop()
        cp.stop()
    print(_table(run.figures))
    print("swarm:", json.dumps(run.figures.get("swarm")))
    if args.json:
        args.json.write_text(json.dumps(run.figures, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
