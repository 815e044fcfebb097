"""Many simulated agents in one asyncio process, for fleet-scale runs of the operator on a real API server.

A real agent process costs about 50 MiB, so 2,000 fake nodes cannot each run one on a test machine.
This swarm plays their part at the API level instead, with the agent's own building blocks so what
the operator reads cannot drift from what a real agent writes:

* the GpuNode of each node is created the way the agent creates it (owned by the Node, same labels),
  and its status is assembled by :func:`wattplane.agent.status.build_status` from boards that
  implement the agent's :class:`~wattplane.agent.gpu.base.GpuDevice` protocol (UUIDs from
  :func:`~wattplane.agent.gpu.simulated.simulated_gpu_uuid`, constraints of the built-in simulated
  model, A40 by default) and the agent's :class:`~wattplane.agent.podmap.SimulatedPodMapper`;
* a new ``spec.planGeneration`` is "applied" after ``apply_delay_s``: each targeted GPU goes to its
  target clamped into the device's range (state ``Applied``, reason ``Clamped`` when clamped, or
  ``DryRun``), each untargeted one back to its default limit, and the status goes out at once with
  ``observedPlanGeneration`` set, as the agent does;
* a change of the pods bound to a node reaches its status ``pod_sync_s`` later (the agent lists its
  pods every ``podSyncIntervalS``);
* otherwise each node reports every ``status_interval_s`` (first reports spread over one interval),
  with power from a simple model: a GPU held by a pod draws ``min(limit, demand)``, an idle one the
  model's idle power; energy counters integrate that power and stay monotonic.

What differs from real agents, on purpose: ONE cluster-wide watch on ``gpunodes`` and one on
``pods`` (filtered here by node name) replace each agent's field-selected watch and periodic pod
list, and one pooled HTTP client (8 connections) carries every node's writes, so the API server sees
fewer watches and connections than a real fleet would give it. There is no node-budget loop (limits
are the plan's targets; ``BudgetMet`` compares measured power with the budget), no plan-TTL fail-safe,
no faults, and no Prometheus endpoint.

For measurements, ``log`` (JSON lines) records every plan the swarm adopts (``kind: spec``: the time,
node, plan generation and each target's watts, policy and job) and every status written after
applying a plan (``kind: applied``: each GPU's limit, state and policy). ``stats`` is a JSON file of
counters rewritten every few seconds.

Run it as a program::

    python tests/support/agentswarm.py --kubeconfig K --nodes fleet-n:2000 --gpus 8 --log swarm.jsonl

(``--nodes PREFIX:N`` names nodes ``PREFIX0`` … ``PREFIX{N-1}``; repeatable) or use :class:`AgentSwarm`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import random
import signal
import ssl
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import aiohttp
import yaml
from pydantic import ValidationError
from wattplane.agent.engine import GpuOutcome
from wattplane.agent.gpu.base import GpuIdentity, GpuReading, PowerConstraints
from wattplane.agent.gpu.simmodels import SimGpuModel, builtin_catalog
from wattplane.agent.gpu.simulated import simulated_gpu_uuid
from wattplane.agent.loop import POD_ENERGY_RETENTION_S
from wattplane.agent.podmap import GpuRequest, SimulatedPodMapper, gpu_requests_of
from wattplane.agent.status import PodEnergyLedger, build_status
from wattplane.api.conditions import Condition, set_condition
from wattplane.api.v1alpha1.gpunode import CRD, GpuNodeSpec, PodRef

logger = logging.getLogger("agentswarm")

GPUNODES = f"/apis/{CRD.group}/{CRD.version}/{CRD.plural}"
MERGE_PATCH = "application/merge-patch+json"


class HttpError(Exception):
    """The API server answered with an error status."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"HTTP {status}: {text[:300]}")
        self.status = status


@dataclass(frozen=True)
class Cluster:
    """Where the API server is and how to authenticate: a token kubeconfig, as the test tier writes."""

    server: str
    token: str | None = None
    ca_file: str | None = None

    @classmethod
    def from_kubeconfig(cls, path: str | Path) -> Cluster:
        """Read the current context of a kubeconfig that uses a bearer token (and a CA file, if any)."""
        config = yaml.safe_load(Path(path).read_text())
        context = next(c["context"] for c in config["contexts"] if c["name"] == config["current-context"])
        cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
        user: dict[str, Any] = next(
            (u["user"] for u in config.get("users", []) if u["name"] == context.get("user")), {}
        )
        return cls(cluster["server"].rstrip("/"), user.get("token"), cluster.get("certificate-authority"))


class Api:
    """JSON requests and list+watch streams over one pooled aiohttp session (``connections`` wide).

    Deliberately self-contained (not the agent's client, not kubernetes_asyncio): the swarm must stay
    cheap at thousands of nodes, so objects stay plain dicts and nothing is deserialised into models.
    """

    def __init__(self, cluster: Cluster, *, connections: int = 8, timeout_s: float = 60.0) -> None:
        self.cluster = cluster
        ssl_context = ssl.create_default_context(cafile=cluster.ca_file) if cluster.ca_file else None
        self._connector_args: dict[str, Any] = {"limit": connections, "ssl": ssl_context if ssl_context else True}
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            headers = {"Accept": "application/json", "User-Agent": "wattplane-agentswarm"}
            if self.cluster.token:
                headers["Authorization"] = f"Bearer {self.cluster.token}"
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(**self._connector_args), headers=headers
            )
        return self._session

    async def close(self) -> None:
        """Close pooled connections."""
        if self._session is not None:
            await self._session.close()

    async def request(
        self, method: str, path: str, *, body: object = None, content_type: str = "application/json"
    ) -> dict[str, Any]:
        """Send one request; the decoded JSON answer, or :class:`HttpError`."""
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        headers = {"Content-Type": content_type} if data is not None else {}
        async with self._http().request(
            method, self.cluster.server + path, data=data, headers=headers, timeout=self._timeout
        ) as response:
            payload = await response.read()
            if response.status >= 400:
                raise HttpError(response.status, payload.decode(errors="replace"))
        answer: dict[str, Any] = json.loads(payload) if payload else {}
        return answer

    async def list_and_watch(self, path: str, *, timeout_s: int = 300) -> AsyncIterator[dict[str, Any]]:
        """Current objects as ``ADDED`` events, then the watch from there; relists on 410 Gone. Forever."""
        version: str | None = None
        while True:
            if version is None:
                listing = await self.request("GET", path)
                for item in listing.get("items") or []:
                    yield {"type": "ADDED", "object": item}
                version = listing["metadata"]["resourceVersion"]
            params = {"watch": "true", "allowWatchBookmarks": "true", "timeoutSeconds": str(timeout_s)}
            params["resourceVersion"] = version
            timeout = aiohttp.ClientTimeout(total=None, sock_read=timeout_s + 30)
            async with self._http().get(self.cluster.server + path, params=params, timeout=timeout) as response:
                if response.status == 410:
                    version = None
                    continue
                if response.status >= 400:
                    raise HttpError(response.status, (await response.read()).decode(errors="replace"))
                async for raw in response.content:
                    if not raw.strip():
                        continue
                    event = json.loads(raw)
                    if event["type"] == "ERROR":
                        if event["object"].get("code") == 410:
                            version = None
                        break
                    version = event["object"].get("metadata", {}).get("resourceVersion", version)
                    if event["type"] != "BOOKMARK":
                        yield event


@dataclass
class SwarmBoard:
    """One simulated GPU board in memory: the agent's ``GpuDevice`` protocol, no files, no traces."""

    identity_: GpuIdentity
    model: SimGpuModel
    limit_watts: float
    demand_watts: float
    busy: bool = False
    energy_joules: float = 0.0
    last_time: float = field(default_factory=time.monotonic)

    @property
    def identity(self) -> GpuIdentity:
        """Index, UUID, model."""
        return self.identity_

    def constraints(self) -> PowerConstraints:
        """The model's NVML range and default limit."""
        return PowerConstraints(self.model.min_watts, self.model.max_watts, self.model.default_watts)

    def power_watts(self) -> float:
        """Draw now: ``min(limit, demand)`` while a pod holds the board, idle power otherwise."""
        return min(self.limit_watts, self.demand_watts) if self.busy else self.model.idle_watts

    def read(self) -> GpuReading:
        """Advance the energy counter to now and sample the board."""
        now = time.monotonic()
        power = self.power_watts()
        self.energy_joules += power * max(0.0, now - self.last_time)
        self.last_time = now
        capped = self.busy and self.demand_watts > self.limit_watts
        clock = self.model.max_sm_clock_mhz
        if capped:
            clock = max(self.model.min_sm_clock_mhz, int(clock * self.limit_watts / self.demand_watts))
        return GpuReading(
            power_watts=power,
            energy_joules=self.energy_joules,
            power_limit_watts=self.limit_watts,
            sm_clock_mhz=clock if self.busy else self.model.min_sm_clock_mhz,
            utilization_ratio=1.0 if self.busy else 0.0,
            temperature_celsius=self.model.temperature_celsius(power),
            throttle_reasons=0x4 if capped else (0x1 if not self.busy else 0),
        )

    def locked_clock_range_mhz(self) -> tuple[int, int] | None:
        """The model's SM clock range."""
        return (self.model.min_sm_clock_mhz, self.model.max_sm_clock_mhz)

    def set_power_limit_watts(self, watts: float) -> None:
        """Take the new limit (after charging the energy drawn under the old one)."""
        self.read()
        self.limit_watts = watts

    def set_locked_clocks_mhz(self, min_mhz: int, max_mhz: int) -> None:
        """Accepted and ignored: the power model has no clock dimension."""

    def reset_locked_clocks(self) -> None:
        """Accepted and ignored."""


@dataclass
class SwarmNode:
    """One fake node's agent state."""

    name: str
    boards: list[SwarmBoard]
    spec: GpuNodeSpec = field(default_factory=GpuNodeSpec)
    raw_spec: dict[str, Any] | None = None
    applied_generation: int = 0
    outcomes: dict[str, GpuOutcome] = field(default_factory=dict)
    requests: dict[str, list[GpuRequest]] = field(default_factory=dict)
    """Pod UID → its containers' GPU requests (pods bound to this node that hold GPUs)."""
    assignment: dict[str, list[PodRef]] = field(default_factory=dict)
    conditions: list[Condition] = field(default_factory=list)
    ledger: PodEnergyLedger = field(default_factory=PodEnergyLedger)
    spec_pending: bool = False
    pods_pending: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    mapper: SimulatedPodMapper = field(init=False)

    def __post_init__(self) -> None:
        self.mapper = SimulatedPodMapper([b.identity.uuid for b in self.boards])

    def apply(self) -> None:
        """Set every board as the current plan says (what the agent's engine does, minus the budget loop)."""
        targets = {t.uuid: t for t in self.spec.gpus}
        for board in self.boards:
            uuid = board.identity.uuid
            target = targets.get(uuid)
            model = board.model
            previous = self.outcomes.get(uuid, GpuOutcome())
            if target is None:
                board.set_power_limit_watts(model.default_watts)
                restored = previous.state != "Default"
                self.outcomes[uuid] = GpuOutcome(
                    state="Default",
                    message=f"restored prior limit {model.default_watts:g} W" if restored else "",
                    reason="Restored" if restored else "",
                )
                continue
            watts = min(max(target.power_limit_watts, model.min_watts), model.max_watts)
            clamped = watts != target.power_limit_watts
            note = f"target {target.power_limit_watts:g} W clamped to {watts:g} W" if clamped else ""
            if target.dry_run:
                self.outcomes[uuid] = GpuOutcome(state="DryRun", target_watts=watts, message=note)
                continue
            board.set_power_limit_watts(watts)
            self.outcomes[uuid] = GpuOutcome(
                state="Applied", target_watts=watts, message=note, reason="Clamped" if clamped else ""
            )
        self.applied_generation = self.spec.plan_generation

    def sync_pods(self) -> None:
        """Re-run the sticky GPU assignment on the pods now bound here; busy boards are the held ones."""
        self.assignment = self.mapper.assign(r for reqs in self.requests.values() for r in reqs)
        for board in self.boards:
            board.busy = bool(self.assignment.get(board.identity.uuid))

    def status(self) -> dict[str, Any]:
        """The status object the agent would write now (wire form)."""
        now = datetime.now(UTC)
        loop_time = time.monotonic()
        self.ledger.forget_unseen(loop_time, POD_ENERGY_RETENTION_S)
        status = build_status(
            backend="sim",
            devices=self.boards,
            readings={b.identity.uuid: b.read() for b in self.boards},
            constraints={b.identity.uuid: b.constraints() for b in self.boards},
            outcomes=self.outcomes,
            assignment=self.assignment,
            ledger=self.ledger,
            plan_generation=self.applied_generation,
            previous_conditions=self.conditions,
            problems=[],
            now=now,
            ledger_time=loop_time,
            attributes_pods=True,
        )
        budget = self.spec.node_budget_watts
        if budget is not None:
            # The swarm has no budget loop: it only says whether measured power is within the share.
            over = status.node_power_watts > budget
            head = f"node {status.node_power_watts:.0f} W of {budget:.0f} W budget"
            status.conditions = set_condition(
                status.conditions,
                Condition(
                    type="BudgetMet",
                    status="False" if over else "True",
                    reason="OverBudget" if over else "WithinBudget",
                    message=head,
                ),
                now=now,
            )
        self.conditions = status.conditions
        return status.to_wire()


@dataclass
class SwarmStats:
    """Counters of one swarm run (written to ``stats`` as JSON)."""

    nodes: int = 0
    status_writes: int = 0
    periodic_writes: int = 0
    apply_writes: int = 0
    pod_writes: int = 0
    write_errors: int = 0
    plans_adopted: int = 0
    pod_events: int = 0
    gpunode_events: int = 0
    watch_restarts: int = 0
    started_at: float = field(default_factory=time.time)


class AgentSwarm:
    """Plays the agents of ``nodes`` against the API server in ``kubeconfig``.

    Args:
        kubeconfig: The cluster (the agent's own config loader reads it).
        nodes: Names of existing Node objects to play agents for.
        gpus: Boards per node.
        model: Simulated model (``A40``, ``H100``, ...) from the agent's built-in catalogue.
        status_interval_s: Periodic status report interval per node (the agent's default is 10 s).
        apply_delay_s: Simulated time to set the limits of a new plan.
        pod_sync_s: Delay between a pod change and the status that shows it.
        demand_watts: Mean draw a busy board would take uncapped (each board gets ±10 %, seeded).
        log: JSON-lines file of adopted plans and applied statuses (``None``: no log).
        stats: JSON file of counters, rewritten every few seconds (``None``: none).
        seed: Seeds the per-board demand.
    """

    def __init__(
        self,
        kubeconfig: str | Path,
        nodes: Sequence[str],
        *,
        gpus: int = 8,
        model: str = "A40",
        status_interval_s: float = 10.0,
        apply_delay_s: float = 0.02,
        pod_sync_s: float = 1.0,
        demand_watts: float = 260.0,
        log: Path | None = None,
        stats: Path | None = None,
        seed: int = 1,
    ) -> None:
        self.kubeconfig = str(kubeconfig)
        self.status_interval_s = status_interval_s
        self.apply_delay_s = apply_delay_s
        self.pod_sync_s = pod_sync_s
        self.stats = SwarmStats(nodes=len(nodes))
        self._stats_path = stats
        self._log_path = log
        self._log: IO[str] | None = None
        spec = builtin_catalog().model(model)
        rng = random.Random(seed)
        self.nodes: dict[str, SwarmNode] = {}
        for name in nodes:
            boards = [
                SwarmBoard(
                    identity_=GpuIdentity(index=i, uuid=simulated_gpu_uuid(name, i), model=spec.name),
                    model=spec,
                    limit_watts=spec.default_watts,
                    demand_watts=demand_watts * rng.uniform(0.9, 1.1),
                )
                for i in range(gpus)
            ]
            self.nodes[name] = SwarmNode(name, boards)

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Create the GpuNodes, then play every agent until cancelled; ``ready`` is set once all exist."""
        if self._log_path is not None:
            self._log = self._log_path.open("a", buffering=1)
        try:
            api = Api(Cluster.from_kubeconfig(self.kubeconfig))
            try:
                gate = asyncio.Semaphore(16)

                async def ensure(node: SwarmNode) -> None:
                    async with gate:
                        await self._ensure_gpunode(api, node)

                await asyncio.gather(*(ensure(n) for n in self.nodes.values()))
                if ready is not None:
                    ready.set()
                tasks = [
                    asyncio.create_task(self._watch_gpunodes(api)),
                    asyncio.create_task(self._watch_pods(api)),
                    asyncio.create_task(self._write_stats_forever()),
                ]
                spread = self.status_interval_s / max(1, len(self.nodes))
                for i, node in enumerate(self.nodes.values()):
                    tasks.append(asyncio.create_task(self._node_loop(api, node, first_after_s=i * spread)))
                try:
                    await asyncio.gather(*tasks)
                finally:
                    for task in tasks:
                        task.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
            finally:
                await api.close()
        finally:
            self._write_stats()
            if self._log is not None:
                self._log.close()

    async def _ensure_gpunode(self, api: Api, node: SwarmNode) -> None:
        """Create the node's GpuNode (owned by its Node) unless it exists, like the agent at start-up."""
        path = f"{GPUNODES}/{node.name}"
        try:
            self._adopt(node, (await api.request("GET", path)).get("spec") or {})
            return
        except HttpError as exc:
            if exc.status != 404:
                raise
        owner = await api.request("GET", f"/api/v1/nodes/{node.name}")
        body = {
            "apiVersion": CRD.api_version,
            "kind": CRD.kind,
            "metadata": {
                "name": node.name,
                "labels": {"app.kubernetes.io/managed-by": "wattplane-agent"},
                "ownerReferences": [
                    {
                        "apiVersion": "v1",
                        "kind": "Node",
                        "name": node.name,
                        "uid": owner["metadata"]["uid"],
                        "blockOwnerDeletion": False,
                    }
                ],
            },
            "spec": {},
        }
        try:
            await api.request("POST", GPUNODES, body=body)
        except HttpError as exc:
            if exc.status != 409:  # 409: it appeared meanwhile
                raise

    def _adopt(self, node: SwarmNode, raw: dict[str, Any]) -> None:
        """Take a GpuNode spec; a new plan generation (or new targets) is applied soon."""
        if raw == node.raw_spec:
            return
        node.raw_spec = raw
        try:
            spec = GpuNodeSpec.model_validate(raw)
        except ValidationError as exc:
            logger.error("GpuNode %s spec rejected, keeping the previous plan: %s", node.name, exc)
            return
        changed = spec.plan_generation != node.spec.plan_generation or spec.gpus != node.spec.gpus
        node.spec = spec
        if not changed:
            return  # a TTL renewal: nothing to set, and the agent writes no status for it either
        self.stats.plans_adopted += 1
        self._record(
            kind="spec",
            node=node.name,
            gen=spec.plan_generation,
            targets={t.uuid: [t.power_limit_watts, t.policy, t.job] for t in spec.gpus},
            budget=spec.node_budget_watts,
        )
        node.spec_pending = True
        node.wake.set()

    async def _watch_gpunodes(self, api: Api) -> None:
        """One cluster-wide watch stands in for every agent's field-selected watch of its own GpuNode."""
        await self._watch_forever(api, GPUNODES, self._on_gpunode)

    def _on_gpunode(self, event: dict[str, Any]) -> None:
        self.stats.gpunode_events += 1
        obj = event["object"]
        node = self.nodes.get(obj.get("metadata", {}).get("name", ""))
        if node is not None and event["type"] in ("ADDED", "MODIFIED"):
            self._adopt(node, obj.get("spec") or {})

    async def _watch_pods(self, api: Api) -> None:
        """One cluster-wide pod watch stands in for every agent's periodic list of its node's pods."""
        await self._watch_forever(api, "/api/v1/pods", self._on_pod)

    def _on_pod(self, event: dict[str, Any]) -> None:
        self.stats.pod_events += 1
        pod = event["object"]
        node = self.nodes.get((pod.get("spec") or {}).get("nodeName") or "")
        if node is None:
            return
        uid = pod.get("metadata", {}).get("uid", "")
        requests = [] if event["type"] == "DELETED" else gpu_requests_of(pod)
        before = node.requests.get(uid, [])
        if requests:
            node.requests[uid] = requests
        else:
            node.requests.pop(uid, None)
        if requests != before:
            node.pods_pending = True
            node.wake.set()

    async def _watch_forever(self, api: Api, path: str, handle: Callable[[dict[str, Any]], None]) -> None:
        backoff = 0.5
        while True:
            try:
                async for event in api.list_and_watch(path):
                    handle(event)
                    backoff = 0.5
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.stats.watch_restarts += 1
                logger.warning("watch interrupted (%s); retrying in %.1f s", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)

    async def _node_loop(self, api: Api, node: SwarmNode, *, first_after_s: float) -> None:
        """Apply plans, follow pods, and report: the agent's loop, reduced to its API traffic."""
        loop = asyncio.get_running_loop()
        next_report = loop.time() + first_after_s
        path = f"{GPUNODES}/{node.name}/status"
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(node.wake.wait(), timeout=max(0.0, next_report - loop.time()))
            node.wake.clear()
            why = "periodic"
            if node.pods_pending:
                await asyncio.sleep(self.pod_sync_s)
                node.pods_pending = False
                node.sync_pods()
                why = "pods"
            if node.spec_pending:
                await asyncio.sleep(self.apply_delay_s)
                node.spec_pending = False
                node.apply()
                why = "apply"
            status = node.status()
            try:
                await api.request("PATCH", path, body={"status": status}, content_type=MERGE_PATCH)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the API server being away must not stop the swarm
                self.stats.write_errors += 1
                logger.warning("status of %s not written: %r", node.name, exc)
                if why == "apply":
                    node.spec_pending = True  # report the applied plan on the next pass
                next_report = loop.time() + 1.0
                continue
            self.stats.status_writes += 1
            if why == "apply":
                self.stats.apply_writes += 1
                targets = {t.uuid: t.policy for t in node.spec.gpus}
                self._record(
                    kind="applied",
                    node=node.name,
                    gen=node.applied_generation,
                    gpus={
                        g["uuid"]: [g["powerLimitWatts"], g["state"], targets.get(g["uuid"], "")]
                        for g in status["gpus"]
                    },
                )
            elif why == "pods":
                self.stats.pod_writes += 1
            else:
                self.stats.periodic_writes += 1
            next_report = loop.time() + self.status_interval_s

    def _record(self, **line: Any) -> None:
        if self._log is not None:
            self._log.write(json.dumps({"t": time.time(), **line}, separators=(",", ":")) + "\n")

    async def _write_stats_forever(self) -> None:
        while True:
            await asyncio.sleep(2.0)
            self._write_stats()

    def _write_stats(self) -> None:
        if self._stats_path is not None:
            tmp = self._stats_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(vars(self.stats)))
            tmp.replace(self._stats_path)


def node_names(specs: Iterable[str]) -> list[str]:
    """``PREFIX:N`` → ``PREFIX0`` … ``PREFIX{N-1}``; a bare name stands for itself."""
    out: list[str] = []
    for spec in specs:
        prefix, sep, count = spec.rpartition(":")
        if sep and count.isdigit():
            out.extend(f"{prefix}{i}" for i in range(int(count)))
        else:
            out.append(spec)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: play the agents until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--nodes", action="append", required=True, help="PREFIX:N or a node name (repeatable)")
    parser.add_argument("--gpus", type=int, default=8, help="boards per node")
    parser.add_argument("--model", default="A40")
    parser.add_argument("--status-interval", type=float, default=10.0, help="seconds between periodic reports")
    parser.add_argument("--apply-delay", type=float, default=0.02, help="simulated seconds to set a plan's limits")
    parser.add_argument("--pod-sync", type=float, default=1.0, help="seconds from a pod change to its status")
    parser.add_argument("--demand-watts", type=float, default=260.0)
    parser.add_argument("--log", type=Path, help="JSON lines of adopted plans and applied statuses")
    parser.add_argument("--stats", type=Path, help="JSON counters, rewritten every 2 s")
    parser.add_argument("--ready-file", type=Path, help="touched once every GpuNode exists")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    swarm = AgentSwarm(
        args.kubeconfig,
        node_names(args.nodes),
        gpus=args.gpus,
        model=args.model,
        status_interval_s=args.status_interval,
        apply_delay_s=args.apply_delay,
        pod_sync_s=args.pod_sync,
        demand_watts=args.demand_watts,
        log=args.log,
        stats=args.stats,
    )

    async def serve() -> None:
        ready = asyncio.Event()
        task = asyncio.create_task(swarm.run(ready))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        waiter = asyncio.create_task(ready.wait())
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if ready.is_set():
            logger.info("playing %d agents (%d GPUs each)", len(swarm.nodes), args.gpus)
            if args.ready_file is not None:
                args.ready_file.touch()
        waiter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())


def swarm_command(
    kubeconfig: str | Path,
    nodes: Sequence[str],
    *,
    gpus: int = 8,
    status_interval_s: float = 10.0,
    apply_delay_s: float = 0.02,
    pod_sync_s: float = 1.0,
    log: Path | None = None,
    stats: Path | None = None,
    ready_file: Path | None = None,
) -> list[str]:
    """The command line that runs a swarm for ``nodes`` as its own process (this file as a program)."""
    argv = [sys.executable, str(Path(__file__).resolve()), "--kubeconfig", str(kubeconfig), "--gpus", str(gpus)]
    argv += ["--status-interval", str(status_interval_s), "--apply-delay", str(apply_delay_s)]
    argv += ["--pod-sync", str(pod_sync_s)]
    for name in nodes:
        argv += ["--nodes", name]
    for flag, path in (("--log", log), ("--stats", stats), ("--ready-file", ready_file)):
        if path is not None:
            argv += [flag, str(path)]
    return argv


class SwarmLog:
    """Reads a swarm's JSON-lines log while it grows: the plans it adopted and the statuses it applied.

    ``latest`` holds each node's newest adopted targets (UUID → ``[watts, policy, job]``).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.specs: list[dict[str, Any]] = []
        self.applied: list[dict[str, Any]] = []
        self.latest: dict[str, dict[str, list[Any]]] = {}
        self._offset = 0
        self._partial = b""

    def poll(self) -> int:
        """Read what was appended since the last call; return the number of new lines."""
        try:
            with self.path.open("rb") as handle:
                handle.seek(self._offset)
                chunk = handle.read()
        except FileNotFoundError:
            return 0
        self._offset += len(chunk)
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()
        for raw in lines:
            if not raw.strip():
                continue
            line = json.loads(raw)
            if line["kind"] == "spec":
                self.specs.append(line)
                self.latest[line["node"]] = line["targets"]
            elif line["kind"] == "applied":
                self.applied.append(line)
        return len(lines)
