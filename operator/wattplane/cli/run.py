"""``wattplane run``: standalone mode for one bare-metal GPU server or Slurm node, no Kubernetes.

The planner and the node agent run in one process on the local GPUs, with the same policies (EnergyPolicy
YAML) and the same metrics endpoint as in a cluster. There are no pods here, so each GPU stands for one:
``local/gpu-<index>``, carrying the labels and annotations given with ``--label``/``--annotation`` (policy
selectors match them; ``wattplane.io/progress-metric`` with a full URL feeds Zeus profiling; put
``wattplane.io/job`` on all GPUs to profile them as one job).

Every ``--interval`` seconds a planning round runs (carbon signals refreshed beside it: API tokens come
from the ``WATTPLANE_*`` environment variables, as ``wattplane carbon`` reads them); the agent's engine
ticks every ``--tick`` seconds (node budget enforcement included). On SIGTERM or SIGINT every GPU goes
back to the limit it had before (the journal survives a crash: the next start restores what is owed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client import CollectorRegistry
from wattplane.agent import server
from wattplane.agent.engine import NodeEngine
from wattplane.agent.gpu.base import GpuBackend, GpuReading
from wattplane.agent.journal import Journal
from wattplane.agent.metrics import AgentCollector
from wattplane.agent.stats import AgentSnapshot
from wattplane.agent.status import PodEnergyLedger, build_status
from wattplane.api.annotations import parse_pod_annotations
from wattplane.api.conditions import Condition
from wattplane.api.selectors import LabelSelector
from wattplane.api.v1alpha1.energypolicy import JobCarbonBudget
from wattplane.api.v1alpha1.gpunode import GpuNodeSpec, GpuNodeStatus, PodRef
from wattplane.carbon.service import CarbonService
from wattplane.operator.decisions import node_spec_update, quota_caps_in_force
from wattplane.operator.observe import JobObserver
from wattplane.operator.signals import CarbonSignals
from wattplane.planner.context import PlanContext
from wattplane.planner.plan import Planner
from wattplane.planner.selection import selects, sets_pod_limits
from wattplane.planner.snapshot import FleetSnapshot, PodView, PolicyView
from wattplane.sim.planning import engine_gpu_view
from wattplane.sim.scenario import load_policies

logger = logging.getLogger("wattplane.run")
NAMESPACE = "local"
#: TTL written into the local plan: irrelevant in one process, but the engine honours it like the agent.
PLAN_TTL_S = 600


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``wattplane run``."""
    parser = subparsers.add_parser(
        "run",
        help="manage this machine's GPUs from policy files (bare metal, Slurm nodes)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--policy", action="append", type=Path, required=True, help="EnergyPolicy YAML (repeatable)")
    parser.add_argument(
        "--backend",
        choices=["nvml", "amd", "auto", "sim"],
        default="nvml",
        help="nvml (NVIDIA), amd (AMD SMI), auto (whichever finds GPUs, both on a mixed machine) or sim",
    )
    parser.add_argument("--node", default="localhost", help="node name in reports and metrics")
    parser.add_argument("--label", action="append", default=[], metavar="K=V", help="label of every GPU's pod")
    parser.add_argument("--annotation", action="append", default=[], metavar="K=V", help="annotation likewise")
    parser.add_argument("--interval", type=float, default=30.0, help="seconds between planning rounds")
    parser.add_argument("--tick", type=float, default=1.0, help="seconds between agent ticks")
    parser.add_argument("--metrics-host", default="127.0.0.1")
    parser.add_argument("--metrics-port", type=int, default=9402, help="0 picks a free port")
    parser.add_argument(
        "--journal", type=Path, default=Path("wattplane-journal.json"), help="prior GPU settings (restored on exit)"
    )
    parser.add_argument("--dry-run", action="store_true", help="plan and report, never write to a GPU")
    parser.add_argument("--keep-on-exit", action="store_true", help="leave the limits in force on exit")
    parser.add_argument("--sim-gpus", type=int, default=4, help="sim backend: GPUs")
    parser.add_argument("--sim-model", default="A40", help="sim backend: GPU model")
    parser.add_argument("--sim-load", type=float, default=0.9, help="sim backend: load of every GPU")
    parser.add_argument("--sim-state", type=Path, help="sim backend: device state file (outlives the process)")
    parser.set_defaults(func=run)


def _pairs(items: Sequence[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--{what} {item!r}: expected KEY=VALUE")
        out[key] = value
    return out


def make_backend(args: argparse.Namespace) -> GpuBackend:
    """The local GPUs: NVML, AMD SMI, both, or simulated boards running at ``--sim-load``."""
    if args.backend == "sim":
        from wattplane.agent.gpu.simulated import SimulatedBackend

        backend = SimulatedBackend(
            node_name=args.node, gpu_count=args.sim_gpus, model=args.sim_model, state_file=args.sim_state
        )
        for device in backend.devices():
            device.set_load(args.sim_load)
        return backend
    from wattplane.agent.gpu.multi import open_real_backend

    return open_real_backend(args.backend)


def snapshot_of(
    node: str, engine: NodeEngine, labels: Mapping[str, str], annotations: Mapping[str, str]
) -> FleetSnapshot:
    """The local machine as the planner sees a node: every GPU held by its own pseudo-pod."""
    gpus, pods = [], {}
    for device in engine.devices:
        ident = device.identity
        reading = engine.readings.get(ident.uuid)
        if not isinstance(reading, GpuReading):
            continue
        key = (NAMESPACE, f"gpu-{ident.index}")
        pods[key] = PodView(
            namespace=NAMESPACE,
            name=key[1],
            uid=ident.uuid,
            node=node,
            labels=labels,
            annotations=annotations,
            ip="127.0.0.1",
        )
        gpus.append(
            engine_gpu_view(
                node,
                ident,
                engine.constraints_of(device),
                power_watts=reading.power_watts,
                energy_joules=reading.energy_joules,
                limit_watts=reading.power_limit_watts,
                pods=(key,),
                outcome=engine.outcomes.get(ident.uuid),
            )
        )
    return FleetSnapshot(gpus=tuple(gpus), pods=pods, nodes=(node,), node_labels={node: {}})


def _labels_for(selector: LabelSelector, labels: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """Labels to add and label keys to drop so that ``selector`` matches (best effort: the caller checks)."""
    add: dict[str, str] = {}
    drop: list[str] = []
    for key, value in selector.match_labels.items():
        if labels.get(key) != value:
            add[key] = value
    for req in selector.match_expressions:
        current = add.get(req.key, labels.get(req.key))
        if req.operator == "In" and current not in req.values:
            add[req.key] = req.values[0]
        elif req.operator == "Exists" and current is None:
            add[req.key] = "<any value>"
        elif req.operator in ("NotIn", "DoesNotExist") and req.key in labels and not req.matches(labels):
            drop.append(req.key)
    return add, sorted(set(drop))


def selection_warnings(
    policies: Sequence[PolicyView], labels: Mapping[str, str], annotations: Mapping[str, str]
) -> list[str]:
    """Why a policy would govern none of the local GPUs, and the flags that would change that.

    Every local GPU stands for a pod carrying exactly the ``--label``/``--annotation`` flags, so a
    policy selecting ``wattplane.io/workload: training`` caps nothing until that label is given:
    without a word, the run looks like it works while it leaves every GPU alone.
    """
    intent = parse_pod_annotations(annotations)
    pod = PodView(namespace=NAMESPACE, name="gpu-0", labels=dict(labels), annotations=dict(annotations))
    out: list[str] = [f"--annotation: {problem}" for problem in intent.problems]
    if intent.opt_out:
        return [*out, "every local GPU is opted out (--annotation wattplane.io/opt-out=true): no policy touches them"]
    for policy in policies:
        spec = policy.spec
        if (
            spec.budget is not None
            and spec.budget.node_selector is not None
            and not spec.budget.node_selector.matches({})
        ):
            out.append(
                f"policy {policy.name}: its budget.nodeSelector matches no node here (the local node has no "
                "labels); drop the nodeSelector to budget this machine"
            )
        if not sets_pod_limits(spec) and spec.budget is not None:
            continue
        if selects(policy, pod, {}, intent):
            continue
        hints: list[str] = []
        selector = spec.selector
        if selector.namespace_selector is not None and not selector.namespace_selector.matches({}):
            hints.append("its namespaceSelector can never match here (local GPUs have no namespace)")
        elif selector.pod_selector is not None:
            add, drop = _labels_for(selector.pod_selector, labels)
            merged = {**{k: v for k, v in labels.items() if k not in drop}, **add}
            if selector.pod_selector.matches(merged):
                flags = [f"--label {k}={v}" for k, v in sorted(add.items())]
                flags += [f"no --label {k}=..." for k in drop]
                hints.append("give " + " ".join(flags) + " to match its podSelector")
            else:
                hints.append("no set of --label flags matches its podSelector")
        hints.append(f"or opt the GPUs in by name with --annotation wattplane.io/policy={policy.name}")
        shown = ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) or "no labels"
        out.append(f"policy {policy.name} selects none of the local GPUs (they carry {shown}): " + "; ".join(hints))
    return out


async def _no_secrets(namespace: str, name: str) -> Mapping[str, str]:
    raise LookupError(
        f"standalone mode reads no Secrets ({namespace}/{name}); drop credentialsSecretRef and set the "
        "WATTPLANE_* environment variables instead"
    )


class Standalone:
    """The planner and one node agent in one process."""

    def __init__(self, args: argparse.Namespace, policies: Sequence[PolicyView], backend: GpuBackend) -> None:
        self.args = args
        self.policies = list(policies)
        self.by_name = {p.name: p for p in self.policies}
        self.node = args.node
        self.labels = _pairs(args.label, "label")
        self.annotations = _pairs(args.annotation, "annotation")
        self.engine = NodeEngine(backend, Journal(args.journal), dry_run=args.dry_run)
        self.spec = GpuNodeSpec()
        self.status: GpuNodeStatus | None = None
        self.ledger = PodEnergyLedger()
        self.conditions: list[Condition] = []
        self.carbon = CarbonService()
        self.signals = CarbonSignals(self.carbon, _no_secrets, default_namespace=NAMESPACE)
        self.observer = JobObserver()
        self.planner = Planner()
        self.rounds = 0
        #: Slowdown accounts of budgeted carbon jobs (kept in memory: a restart of `wattplane run` opens new ones).
        self.carbon_budgets: dict[str, JobCarbonBudget] = {}

    def snapshot(self) -> AgentSnapshot:
        """For the metrics collector."""
        return AgentSnapshot(
            status=self.status,
            spec=self.spec,
            apply=self.engine.stats,
            budget=self.engine.budget,
            gpu_uuids=tuple(d.identity.uuid for d in self.engine.devices),
        )

    async def plan_round(self) -> None:
        """Plan, update the local spec, observe the jobs."""
        now = datetime.now(UTC)
        self.engine.read_all()
        snapshot = snapshot_of(self.node, self.engine, self.labels, self.annotations)
        context = PlanContext(
            now=now,
            carbon=self.signals.inputs(),
            profiles=self.observer.profiles,
            straggler_caps=self.observer.straggler_caps,
            previous_node_budgets={self.node: self.spec.node_budget_watts} if self.spec.node_budget_watts else {},
            carbon_budgets=self.carbon_budgets,
            previous_quota_caps=quota_caps_in_force([self.spec]),
        )
        result = self.planner.plan(snapshot, self.policies, context)
        self.carbon_budgets = dict(result.carbon_budgets)
        update = node_spec_update(
            self.spec,
            result.nodes.get(self.node, ()),
            now=now,
            ttl_seconds=PLAN_TTL_S,
            node_budget_watts=result.node_budgets.get(self.node),
            budget_priorities=result.budget_priorities.get(self.node, ()),
            budget_ramp_watts_per_second=result.node_budget_ramps.get(self.node),
        )
        if update is not None:
            self.spec = update
            logger.info("plan generation %d: %d target(s)", update.plan_generation, len(update.gpus))
        for name, report in result.policies.items():
            logger.debug("policy %s: %s %s", name, report.reason, report.message)
        self.rounds += 1
        await self.observer.observe(result, snapshot, self.by_name, now)

    def tick(self) -> None:
        """One agent tick: reconcile the GPUs with the spec (and budget), refresh the status."""
        self.engine.reconcile(
            self.spec.gpus,
            node_budget_watts=self.spec.node_budget_watts,
            budget_priorities={p.uuid: p.priority for p in self.spec.budget_priorities or ()},
            budget_ramp_watts_per_second=self.spec.node_budget_ramp_watts_per_second,
            now=time.monotonic(),
        )
        now = datetime.now(UTC)
        assignment = {
            d.identity.uuid: [PodRef(namespace=NAMESPACE, name=f"gpu-{d.identity.index}", uid=d.identity.uuid)]
            for d in self.engine.devices
        }
        self.status = build_status(
            backend=self.engine.backend.info.name,
            devices=self.engine.devices,
            readings=self.engine.readings,
            constraints=self.engine.constraints,
            outcomes=self.engine.outcomes,
            assignment=assignment,
            ledger=self.ledger,
            plan_generation=self.spec.plan_generation,
            previous_conditions=self.conditions,
            problems=[p for p in (self.engine.journal.problem,) if p],
            now=now,
            last_good=self.engine.last_good,
            budget=self.engine.budget,
            dry_run=self.args.dry_run,
        )
        self.conditions = list(self.status.conditions)

    async def run(self, stop: asyncio.Event) -> None:
        """Plan and tick until ``stop``; then restore (unless told to keep the limits)."""
        loop = asyncio.get_running_loop()
        next_round = loop.time()
        refresher = asyncio.create_task(self._refresh_signals(stop), name="carbon-signals")
        try:
            while not stop.is_set():
                if loop.time() >= next_round:
                    try:
                        await self.plan_round()
                    except Exception:  # a planning failure must not stop the GPUs' control loop
                        logger.exception("planning round failed; keeping the last plan")
                    next_round = loop.time() + self.args.interval
                self.tick()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self.args.tick)
        finally:
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher
            if not self.args.keep_on_exit:
                failures = self.engine.restore_all()
                logger.info("GPUs restored to their prior limits (%d failure(s))", len(failures))
            await self.carbon.close()
            await self.observer.close()

    async def _refresh_signals(self, stop: asyncio.Event) -> None:
        if not any(p.spec.carbon is not None for p in self.policies):
            return
        while not stop.is_set():
            self.signals.configure(self.policies)
            try:
                await self.signals.refresh()
            except Exception:
                logger.exception("carbon refresh failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=max(10.0, self.args.interval))


async def amain(args: argparse.Namespace) -> int:
    """Serve metrics and run until SIGTERM/SIGINT."""
    policies: list[PolicyView] = []
    for path in args.policy:
        policies += load_policies(path.read_text(encoding="utf-8"), str(path))
    for warning in selection_warnings(policies, _pairs(args.label, "label"), _pairs(args.annotation, "annotation")):
        print(f"wattplane run: warning: {warning}", file=sys.stderr, flush=True)
    backend = make_backend(args)
    app = Standalone(args, policies, backend)
    registry = CollectorRegistry()
    registry.register(AgentCollector(args.node, app.snapshot))
    runner, port = await server.start(
        server.build_app(registry, lambda: (app.status is not None, "ready")), args.metrics_host, args.metrics_port
    )
    print(
        f"wattplane run: {len(app.engine.devices)} {backend.info.name} GPU(s), policies "
        f"{', '.join(p.name for p in policies)}; metrics on http://{args.metrics_host}:{port}/metrics",
        flush=True,
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    try:
        await app.run(stop)
    finally:
        await runner.cleanup()
        backend.close()
    print("wattplane run: stopped" + ("" if args.keep_on_exit else "; GPUs restored"), flush=True)
    return 0


def run(args: argparse.Namespace) -> int:
    """``wattplane run``."""
    try:
        return asyncio.run(amain(args))
    except (ValueError, OSError) as exc:
        print(f"wattplane run: {exc}", file=sys.stderr)
        return 2
