"""Soak: many pods churning across many fake nodes under a policy mix, with the real operator and agents.

One run: start ``nodes`` agents and the operator (production intervals: tick 1 s, status every 10 s),
apply four policies (a static cap, a carbon policy on a trace, a rack budget, and an efficiency policy
without a progress signal), create ``pods`` pods, then replace ``churn_per_s`` random pods every second
(new name, new labels, new node, 0 or 1 GPU) for ``churn_s``, and finally leave everything alone: a
settling time (``SETTLE_S``) and then ``quiet_s`` counted. Measured:

* RSS of the operator and of every agent at the end of the warm-up, the end of the churn and the end;
* every write to a GpuNode, from a watch: spec changes (the operator's plans) and status changes (the
  agents' reports), per node, in the churn phase and in the quiet phase;
* trouble: ERROR lines and tracebacks in the logs, failed control ticks and failed planning rounds.

Used by ``tests/reliability/test_soak.py`` (short, in CI) and ``bench/soak.py`` (10 minutes, 50 nodes).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from controlplane import ControlPlane, Process
from faults import FaultFleet, agent_metrics_port, http_get, rss_mib, running_fleet
from kubeapi import GROUP, VERSION, apply_policy, connect, create_namespace
from kubernetes_asyncio import client, watch
from prometheus_client.parser import text_string_to_metric_families

APPS = ("train", "infer", "batch", "tune", "other")
STATUS_INTERVAL_S = 10.0
#: The operator's plan TTL: an unchanged plan is renewed (``issuedAt`` only) every ``TTL × RENEW_FRACTION``.
PLAN_TTL_S = 600
#: The operator's resync interval, which is also its budget interval: measured power alone moves a
#: node's budget share at most once per interval.
RESYNC_INTERVAL_S = 30.0
#: After the churn stops and before the quiet phase is counted: one pod sync (5 s), a round, a status.
SETTLE_S = 10.0


@dataclass
class SoakReport:
    """What a soak run measured."""

    nodes: int
    pods: int
    churn_s: float
    quiet_s: float
    pod_changes: int = 0
    rss_mib: dict[str, dict[str, float]] = field(default_factory=dict)
    """phase → process name → RSS MiB (phases: ``warm``, ``churned``, ``end``)."""
    status_writes: dict[str, Counter[str]] = field(default_factory=dict)
    """phase (``churn``, ``quiet``) → node → GpuNode status writes."""
    spec_writes: dict[str, Counter[str]] = field(default_factory=dict)
    """phase → node → GpuNode spec writes (plans, renewals included)."""
    renewal_writes: dict[str, Counter[str]] = field(default_factory=dict)
    """phase → node → spec writes that only renew the plan (``issuedAt``, same generation)."""
    reshare_writes: dict[str, Counter[str]] = field(default_factory=dict)
    """phase → node → new plan generations that only move the node's budget share."""
    problems_at_warm: int = 0
    problems_at_end: int = 0
    problem_lines: list[str] = field(default_factory=list)
    tick_errors: float = 0.0
    round_errors: float = 0.0
    operator_api_writes: dict[str, float] = field(default_factory=dict)
    quiet_spec_samples: list[tuple[str, str]] = field(default_factory=list)
    """Specs written while nothing changed (node, spec JSON): what keeps changing, if anything."""
    quiet_spec_changes: list[tuple[str, str, list[str]]] = field(default_factory=list)
    """Spec writes while nothing changed: (node, kind, what changed), kind ``renewal``/``reshare``/``plan``."""
    quiet_status_changes: list[tuple[str, list[str]]] = field(default_factory=list)
    """Status writes while nothing changed: (node, what changed beyond power and energy), the first few."""
    budget_cut_gpus: int = 0
    """GPUs of the budgeted rack its agents hold below their target at the end of the quiet period."""

    def rss_summary(self) -> dict[str, dict[str, float]]:
        """Operator RSS and agent RSS (mean, max) per phase, MiB."""
        out: dict[str, dict[str, float]] = {}
        for phase, by_process in self.rss_mib.items():
            agents = [v for k, v in by_process.items() if k.startswith("agent-")]
            out[phase] = {
                "operator": round(by_process.get("operator", float("nan")), 1),
                "agent mean": round(statistics.fmean(agents), 1) if agents else float("nan"),
                "agent max": round(max(agents), 1) if agents else float("nan"),
            }
        return out

    def quiet_spec_kinds(self, node: str) -> dict[str, int]:
        """A node's spec writes in the quiet phase by kind: TTL renewals, budget re-shares, other plans."""
        total = self.spec_writes.get("quiet", Counter())[node]
        renewals = self.renewal_writes.get("quiet", Counter())[node]
        reshares = self.reshare_writes.get("quiet", Counter())[node]
        return {"renewal": renewals, "reshare": reshares, "plan": total - renewals - reshares}

    def writes_per_node_per_minute(self, phase: str, *, budgeted: bool | None = None) -> dict[str, float]:
        """Status and spec writes per node per minute in ``phase`` (mean and max over nodes).

        ``budgeted`` restricts the figures to the rack under the power budget (even nodes) or the rest.
        """
        seconds = self.churn_s if phase == "churn" else self.quiet_s
        names = [f"n{i}" for i in range(self.nodes) if budgeted is None or (i % 2 == 0) == budgeted]
        status = [self.status_writes.get(phase, Counter())[n] * 60 / seconds for n in names]
        spec = [self.spec_writes.get(phase, Counter())[n] * 60 / seconds for n in names]
        return {
            "status mean": round(statistics.fmean(status), 2),
            "status max": round(max(status), 2),
            "spec mean": round(statistics.fmean(spec), 2),
            "spec max": round(max(spec), 2),
        }

    def to_json(self) -> dict[str, Any]:
        """The figures, for printing."""
        return {
            "nodes": self.nodes,
            "pods": self.pods,
            "churn seconds": self.churn_s,
            "quiet seconds": self.quiet_s,
            "pod changes": self.pod_changes,
            "rss MiB": self.rss_summary(),
            "writes per node per minute (churn)": self.writes_per_node_per_minute("churn"),
            "writes per node per minute (quiet, nodes without a budget)": self.writes_per_node_per_minute(
                "quiet", budgeted=False
            ),
            "writes per node per minute (quiet, budgeted rack)": self.writes_per_node_per_minute(
                "quiet", budgeted=True
            ),
            "status interval s": STATUS_INTERVAL_S,
            "budgeted rack: GPUs held by the agents at the end": self.budget_cut_gpus,
            "status changes while quiet, beyond measurements (first 10)": self.quiet_status_changes[:10],
            "spec writes while quiet (first 10)": self.quiet_spec_changes[:10],
            "log problems at warm-up / end": [self.problems_at_warm, self.problems_at_end],
            "tick errors": self.tick_errors,
            "round errors": self.round_errors,
            "operator API writes (warm, churned, end)": self.operator_api_writes,
        }


def _trace(path: Path) -> Path:
    """A grid that varied hour by hour until the current hour and then holds one value for days.

    A step of the grid during the run would re-plan the carbon policy's GPUs, a legitimate new plan;
    the soak counts plans made while nothing changes, so nothing may change, the grid included.
    """
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=1)
    past = 24  # rows before the current hour
    rows = [
        f"{(start + timedelta(hours=h)).isoformat()},{200 + 150 * (h % 5) if h < past else 500}" for h in range(24 * 4)
    ]
    path.write_text("timestamp,gco2_per_kwh\n" + "\n".join(rows) + "\n")
    return path


def _policies(prefix: str, trace: Path) -> dict[str, dict[str, Any]]:
    def sel(app: str) -> dict[str, Any]:
        return {"podSelector": {"matchLabels": {f"{prefix}-app": app}}}

    return {
        f"{prefix}-cap": {"selector": sel("train"), "limits": {"maxFractionOfDefault": 0.7}},
        f"{prefix}-carbon": {
            "selector": sel("infer"),
            "carbon": {
                "source": {"provider": "trace", "zone": "soak", "tracePath": str(trace)},
                "curve": {"basis": "Absolute", "points": [{"x": 200, "weight": 1.0}, {"x": 800, "weight": 0.0}]},
            },
        },
        f"{prefix}-budget": {
            "selector": sel("batch"),
            "budget": {"watts": 4000, "nodeSelector": {"matchLabels": {f"{prefix}-rack": "a"}}},
        },
        f"{prefix}-tune": {"selector": sel("tune"), "efficiency": {}, "limits": {"maxWatts": 280}},
    }


def _pod(prefix: str, name: str, node: str, rng: random.Random) -> dict[str, Any]:
    gpus = rng.choice([0, 1, 1])
    resources = {"limits": {"nvidia.com/gpu": str(gpus)}} if gpus else {}
    return {
        "metadata": {"name": name, "labels": {f"{prefix}-app": rng.choice(APPS)},
                     "annotations": {"wattplane.io/priority": rng.choice(["low", "normal", "high"])}},
        "spec": {"nodeName": node, "containers": [{"name": "main", "image": "x:1", "resources": resources}]},
    }  # fmt: skip


class _Writes:
    """Counts GpuNode spec and status changes per node from a watch."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.phase = "warm"
        self.status: dict[str, Counter[str]] = {}
        self.spec: dict[str, Counter[str]] = {}
        self.renewals: dict[str, Counter[str]] = {}
        self.reshares: dict[str, Counter[str]] = {}
        #: Spec writes while nothing changed: (node, kind, what changed), for the report.
        self.quiet_spec_changes: list[tuple[str, str, list[str]]] = []
        self._last: dict[str, tuple[str, str]] = {}
        #: A few consecutive specs of nodes re-planned while nothing changed (for the report).
        self.quiet_spec_samples: list[tuple[str, str]] = []
        #: What changed in status writes while nothing changed (for the report).
        self.quiet_status_changes: list[tuple[str, list[str]]] = []

    def see(self, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        if not name.startswith(self.prefix + "-"):
            return
        node = name.removeprefix(self.prefix + "-")
        spec = json.dumps(obj.get("spec"), sort_keys=True)
        status = json.dumps(obj.get("status"), sort_keys=True)
        last = self._last.get(node)
        if last is not None:
            if spec != last[0]:
                self.spec.setdefault(self.phase, Counter())[node] += 1
                before, after = json.loads(last[0]) or {}, obj.get("spec") or {}
                kind = spec_change_kind(before, after)
                if kind == "renewal":
                    self.renewals.setdefault(self.phase, Counter())[node] += 1
                elif kind == "reshare":
                    self.reshares.setdefault(self.phase, Counter())[node] += 1
                if self.phase == "quiet" and len(self.quiet_spec_samples) < 6:
                    self.quiet_spec_samples.append((node, spec))
                if self.phase == "quiet" and len(self.quiet_spec_changes) < 40:
                    self.quiet_spec_changes.append((node, kind, _changed(before, after, exempt=frozenset())))
            if status != last[1]:
                self.status.setdefault(self.phase, Counter())[node] += 1
                if self.phase == "quiet" and len(self.quiet_status_changes) < 40:
                    self.quiet_status_changes.append((node, _changed(json.loads(last[1]), obj.get("status"))))
        self._last[node] = (spec, status)

    async def run(self, api: client.ApiClient) -> None:
        custom = client.CustomObjectsApi(api)
        while True:
            with contextlib.suppress(Exception):
                listing = await custom.list_cluster_custom_object(GROUP, VERSION, "gpunodes")
                for obj in listing["items"]:
                    self.see(obj)
                version = listing["metadata"]["resourceVersion"]
                stream = watch.Watch().stream(
                    custom.list_cluster_custom_object,
                    GROUP,
                    VERSION,
                    "gpunodes",
                    resource_version=version,
                    timeout_seconds=60,
                )
                async with stream as events:
                    async for event in events:
                        if event["type"] in ("ADDED", "MODIFIED"):
                            self.see(event["object"])
            await asyncio.sleep(0.5)


#: Status fields that change on every write (measurements and the heartbeat), left out of the diff.
_MEASURED = frozenset(
    {"heartbeat", "powerWatts", "energyJoules", "nodePowerWatts", "temperatureCelsius", "smClockMHz",
     "lastTransitionTime", "podEnergy", "utilization"}
)  # fmt: skip


def _changed(before: Any, after: Any, path: str = "", *, exempt: frozenset[str] = _MEASURED) -> list[str]:
    """Paths where two objects differ, keys in ``exempt`` (by default the status measurements) aside."""
    if isinstance(before, dict) and isinstance(after, dict):
        keys = sorted(set(before) | set(after))
        return [
            p
            for k in keys
            if k not in exempt
            for p in _changed(before.get(k), after.get(k), f"{path}.{k}", exempt=exempt)
        ]
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        return [
            p
            for i, (b, a) in enumerate(zip(before, after, strict=True))
            for p in _changed(b, a, f"{path}[{i}]", exempt=exempt)
        ]
    return [] if before == after else [f"{path}: {before!r} -> {after!r}"[:160]]


def spec_change_kind(before: dict[str, Any], after: dict[str, Any]) -> str:
    """What a GpuNode spec write did: ``renewal``, ``reshare`` or ``plan``.

    A renewal keeps the plan and its generation and moves ``issuedAt`` only (the operator keeps an
    unchanged plan alive every ``TTL × RENEW_FRACTION``). A re-share is a new generation that moves
    nothing but the node's budget share (measured power alone does that at most once per budget
    interval). Anything else (targets, cut order, a budget coming or going, the TTL) is a new plan.
    """
    moved = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    if moved <= {"issuedAt"}:
        return "renewal"
    if (
        moved <= {"issuedAt", "planGeneration", "nodeBudgetWatts"}
        and before.get("nodeBudgetWatts") is not None
        and after.get("nodeBudgetWatts") is not None
    ):
        return "reshare"
    return "plan"


def _rss(fleet: FaultFleet) -> dict[str, float]:
    processes: list[Process] = [*fleet.agents.values(), *([fleet.operator] if fleet.operator else [])]
    return {p.name: rss_mib(p.popen.pid) for p in processes if p.popen.poll() is None}


def _problems(fleet: FaultFleet) -> list[str]:
    processes: list[Process] = [*fleet.agents.values(), *([fleet.operator] if fleet.operator else [])]
    return [f"{p.name}: {line}" for p in processes for line in fleet.problems(p)]


def _metric(url: str, name: str) -> float:
    status, body = http_get(url)
    if status != 200:
        return float("nan")
    return sum(s.value for f in text_string_to_metric_families(body) if f.name == name for s in f.samples)


async def _drive(
    fleet: FaultFleet,
    prefix: str,
    report: SoakReport,
    *,
    churn_per_s: float,
    warmup_s: float,
    seed: int,
    progress: Callable[[str], None],
) -> None:
    rng = random.Random(seed)
    async with await connect(fleet.cp.kubeconfig) as api:
        api.configuration.connection_pool_maxsize = 32
        core = client.CoreV1Api(api)
        ns = f"{prefix}-ns"
        await create_namespace(api, ns, {"team": prefix})
        for name, spec in _policies(prefix, _trace(fleet.workdir / "soak-grid.csv")).items():
            await apply_policy(api, name, spec)
        writes = _Writes(prefix)
        watcher = asyncio.create_task(writes.run(api))
        gate = asyncio.Semaphore(24)
        live: list[str] = []
        counter = 0

        async def create() -> None:
            nonlocal counter
            counter += 1
            name = f"p{counter}"
            node = rng.choice(fleet.nodes)
            async with gate:
                await core.create_namespaced_pod(ns, _pod(prefix, name, node, rng))
            live.append(name)

        async def delete(name: str) -> None:
            async with gate:
                with contextlib.suppress(client.exceptions.ApiException):
                    await core.delete_namespaced_pod(name, ns, grace_period_seconds=0)

        try:
            await asyncio.gather(*(create() for _ in range(report.pods)))
            progress(f"{len(live)} pods created; warming up {warmup_s:.0f} s")
            await asyncio.sleep(warmup_s)
            report.rss_mib["warm"] = _rss(fleet)
            report.problems_at_warm = len(_problems(fleet))
            report.operator_api_writes["warm"] = _metric(fleet.operator_metrics_url, "wattplane_operator_api_writes")
            writes.phase = "churn"
            started = time.monotonic()
            next_report = started + 60
            while time.monotonic() - started < report.churn_s:
                tick = time.monotonic()
                batch = max(1, round(churn_per_s))
                victims = [live.pop(rng.randrange(len(live))) for _ in range(min(batch, len(live)))]
                await asyncio.gather(*(delete(v) for v in victims), *(create() for _ in victims))
                report.pod_changes += 2 * len(victims)
                if time.monotonic() >= next_report:
                    next_report += 60
                    progress(f"churn {time.monotonic() - started:.0f} s, {report.pod_changes} pod changes, "
                             f"RSS {report_rss(fleet)}")  # fmt: skip
                await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
            report.rss_mib["churned"] = _rss(fleet)
            report.operator_api_writes["churned"] = _metric(fleet.operator_metrics_url, "wattplane_operator_api_writes")
            # The last changes still reach the agents (pod sync) and the operator (debounce) for a while.
            writes.phase = "settle"
            progress(
                f"churn done ({report.pod_changes} pod changes); settle {SETTLE_S:.0f} s, quiet {report.quiet_s:.0f} s"
            )
            await asyncio.sleep(SETTLE_S)
            writes.phase = "quiet"
            await asyncio.sleep(report.quiet_s)
            writes.phase = "after"
            report.budget_cut_gpus = await _budget_cut_gpus(api, fleet.nodes[::2])
            report.rss_mib["end"] = _rss(fleet)
            report.operator_api_writes["end"] = _metric(fleet.operator_metrics_url, "wattplane_operator_api_writes")
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        report.status_writes = writes.status
        report.quiet_spec_samples = writes.quiet_spec_samples
        report.quiet_status_changes = writes.quiet_status_changes
        report.spec_writes = writes.spec
        report.renewal_writes = writes.renewals
        report.reshare_writes = writes.reshares
        report.quiet_spec_changes = writes.quiet_spec_changes
        problems = _problems(fleet)
        report.problems_at_end = len(problems)
        report.problem_lines = problems[:20]
        report.tick_errors = sum(
            _metric(f"http://127.0.0.1:{agent_metrics_port(p)}/metrics", "wattplane_agent_tick_errors")
            for p in fleet.agents.values()
        )
        report.round_errors = _metric(fleet.operator_metrics_url, "wattplane_operator_round_errors")
        for name in _policies(prefix, fleet.workdir / "soak-grid.csv"):
            with contextlib.suppress(client.exceptions.ApiException):
                await client.CustomObjectsApi(api).delete_cluster_custom_object(GROUP, VERSION, "energypolicies", name)
        await core.delete_namespace(ns)


async def _budget_cut_gpus(api: client.ApiClient, rack: list[str]) -> int:
    """GPUs of ``rack`` that their agents report held by the node budget (``budgetLimitWatts``)."""
    custom = client.CustomObjectsApi(api)
    held = 0
    for node in rack:
        with contextlib.suppress(client.exceptions.ApiException):
            gn = await custom.get_cluster_custom_object(GROUP, VERSION, "gpunodes", node)
            held += sum(1 for g in (gn.get("status") or {}).get("gpus", []) if g.get("budgetLimitWatts") is not None)
    return held


def report_rss(fleet: FaultFleet) -> str:
    """Operator RSS and the agents' mean RSS now, for progress lines."""
    rss = _rss(fleet)
    agents = [v for k, v in rss.items() if k.startswith("agent-")]
    return f"operator {rss.get('operator', float('nan')):.1f} MiB, agents mean {statistics.fmean(agents):.1f} MiB"


def run_soak(
    cp: ControlPlane,
    workdir: Path,
    *,
    prefix: str = "soak",
    nodes: int = 10,
    pods: int = 200,
    churn_s: float = 60.0,
    quiet_s: float = 25.0,
    churn_per_s: float = 3.0,
    warmup_s: float = 15.0,
    seed: int = 1,
    progress: Callable[[str], None] = lambda _: None,
) -> SoakReport:
    """Run one soak (blocking; starts and stops its own fleet on ``cp``)."""
    names = [f"{prefix}-n{i}" for i in range(nodes)]
    report = SoakReport(nodes=nodes, pods=pods, churn_s=churn_s, quiet_s=quiet_s)
    agent_env = {
        "WATTPLANE_AGENT_STATUS_INTERVAL_S": str(STATUS_INTERVAL_S),
        "WATTPLANE_AGENT_TICK_S": "1",
        "WATTPLANE_AGENT_POD_SYNC_INTERVAL_S": "5",
    }
    operator_env = {
        "WATTPLANE_OPERATOR_DEBOUNCE_S": "0.3",
        "WATTPLANE_OPERATOR_RESYNC_INTERVAL_S": str(RESYNC_INTERVAL_S),
        "WATTPLANE_OPERATOR_PLAN_TTL_S": str(PLAN_TTL_S),
    }
    with running_fleet(cp, workdir, names, agent_env=agent_env, operator_env=operator_env) as fleet:
        _label_racks(cp, names, prefix)
        progress(f"{nodes} agents and the operator started")
        asyncio.run(
            _drive(fleet, prefix, report, churn_per_s=churn_per_s, warmup_s=warmup_s, seed=seed, progress=progress)
        )
    return report


def _label_racks(cp: ControlPlane, names: list[str], prefix: str) -> None:
    """Half the nodes form the budgeted rack."""

    async def label() -> None:
        async with await connect(cp.kubeconfig) as api:
            core = client.CoreV1Api(api)
            for i, name in enumerate(names):
                await core.patch_node(name, {"metadata": {"labels": {f"{prefix}-rack": "a" if i % 2 == 0 else "b"}}})

    asyncio.run(label())
