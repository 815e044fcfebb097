"""The planning loop: debounce events, plan, and write only what changed.

One round = snapshot the :class:`FleetState`, run the pure planner, then PATCH the GpuNode specs that
differ and the EnergyPolicy statuses that changed, and post an event on pods with bad annotations.
Rounds never overlap; a round's failure is logged and the next one retries, so the loop never dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Mapping
from datetime import UTC, datetime
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from wattplane.api.v1alpha1 import energypolicy, gpunode
from wattplane.api.v1alpha1.energypolicy import EnergyPolicyStatus, JobCarbonBudget
from wattplane.api.v1alpha1.gpunode import GpuNodeSpec
from wattplane.grid import GridService
from wattplane.operator.accounting import PolicyAccounting
from wattplane.operator.decisions import (
    kept_accounts,
    node_spec_update,
    policy_status,
    quota_caps_in_force,
    renewal_due,
    shadow_event,
    status_material,
    window_event,
)
from wattplane.operator.observe import JobObserver
from wattplane.operator.settings import OperatorSettings
from wattplane.operator.signals import CarbonSignals
from wattplane.operator.state import FleetState, NodeRecord
from wattplane.planner.context import PlanContext
from wattplane.planner.plan import Plan, Planner
from wattplane.planner.snapshot import PodKey

logger = logging.getLogger(__name__)


class Reconciler:
    """Owns the planning loop and every write the operator makes."""

    def __init__(
        self,
        settings: OperatorSettings,
        state: FleetState,
        api: client.ApiClient,
        *,
        signals: CarbonSignals,
        observer: JobObserver,
    ) -> None:
        self.settings = settings
        self.state = state
        self.signals = signals
        self.observer = observer
        self.accounting = PolicyAccounting()
        #: Slowdown accounts of budgeted carbon jobs, by job (the last plan's; seeded from status).
        self.carbon_budgets: dict[str, JobCarbonBudget] = {}
        self._custom = client.CustomObjectsApi(api)
        self._core = client.CoreV1Api(api)
        self._dirty = asyncio.Event()
        self._signals_due = asyncio.Event()
        self._round_done = asyncio.Condition()
        self._rounds = 0
        self.round_errors = 0
        self.last_round_seconds = 0.0
        self._written_status: dict[str, tuple[Mapping[str, Any], float, dict[str, Any]]] = {}
        self._warned_pods: dict[PodKey, tuple[str, ...]] = {}
        self._shadow_told: dict[str, tuple[tuple[str, str], ...]] = {}
        #: The window each budget policy's last event named (``None``: none in force).
        self._window_told: dict[str, str | None] = {}
        self.last_plan: Plan | None = None
        self.api_writes = 0
        self.events_posted = 0
        #: Keeps its decisions between rounds and re-decides only what changed since the last one.
        self.planner = Planner()
        #: Demand-response VENs (set by the startup handler); ``None``: no grid windows.
        self.grid: GridService | None = None
        #: node → (plan generation and TTL in force, targets, budget, cut order) known to match the
        #: plan: while the next plan hands the same objects, the node needs no comparison, only renewal.
        self._in_sync: dict[str, tuple[object, ...]] = {}

    @property
    def rounds(self) -> int:
        """Planning rounds completed (successful or not)."""
        return self._rounds

    def trigger(self) -> None:
        """Ask for a planning round soon (debounced)."""
        self._dirty.set()

    def budget_measured_watts(self, policy: str) -> float | None:
        """Measured power of the GPUs a policy's budget covers (what a VEN reports to its VTN)."""
        report = self.last_plan.policies.get(policy) if self.last_plan is not None else None
        return report.budget.measured_watts if report is not None and report.budget is not None else None

    async def round_after_now(self) -> None:
        """Wait until a round that started after this call has finished."""
        async with self._round_done:
            target = self._rounds + 2  # the round in flight may predate the caller's change
            self.trigger()
            await self._round_done.wait_for(lambda: self._rounds >= target)

    def _wait_s(self) -> float:
        """How long the loop may sleep: the resync interval, or less when a budget window starts or ends sooner."""
        wait = self.settings.resync_interval_s
        due = self.last_plan.next_change_at if self.last_plan is not None else None
        if due is not None:
            wait = min(wait, max((due - datetime.now(UTC)).total_seconds(), 0.0))
        return wait

    async def run(self) -> None:
        """Plan forever: on events (debounced), at least every ``resync_interval_s``, and when a budget window turns."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), timeout=self._wait_s())
            await asyncio.sleep(self.settings.debounce_s)
            self._dirty.clear()
            started = asyncio.get_running_loop().time()
            try:
                await self.run_round()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.round_errors += 1
                logger.exception("planning round failed; retrying on the next trigger")
                self._dirty.set()
                await asyncio.sleep(1.0)
            self.last_round_seconds = asyncio.get_running_loop().time() - started
            async with self._round_done:
                self._rounds += 1
                self._round_done.notify_all()

    async def run_signals(self) -> None:
        """Keep the carbon feed fresh beside the planning loop (a slow API never delays a round).

        Runs every ``signal_refresh_s``, and at once when a round meets a source never fetched.
        """
        while True:
            self._signals_due.clear()
            views = [p.view for p in self.state.policies.values() if p.view is not None]
            self.signals.configure(views)
            try:
                await self.signals.refresh()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("carbon refresh failed; retrying")
            self.trigger()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._signals_due.wait(), timeout=self.settings.signal_refresh_s)

    def _seed_from_status(self) -> None:
        """Resume profiles and accounting that a previous operator left in policy status."""
        for name, parsed in self.state.policies.items():
            try:
                status = EnergyPolicyStatus.model_validate(parsed.status or {})
            except ValueError:
                continue
            self.accounting.seed(name, status.energy_joules, status.carbon_grams)
            self.observer.seed(status.profiles)
            for account in status.carbon_budgets:
                self.carbon_budgets.setdefault(account.job, account)

    async def run_round(self) -> Plan:
        """One planning round with its writes."""
        now = datetime.now(UTC)
        self._seed_from_status()
        views = [p.view for p in self.state.policies.values() if p.view is not None]
        if self.grid is not None:
            await self.grid.sync({v.name: v.spec for v in views if not v.deleting})
        if self.signals.configure(views):
            self._signals_due.set()
        carbon = self.signals.inputs()
        snapshot = self.state.snapshot()
        context = PlanContext(
            now=now,
            carbon=carbon,
            profiles=self.observer.profiles,
            straggler_caps=self.observer.straggler_caps,
            serving_knobs=self.observer.serving.snapshot(),
            previous_node_budgets={
                n: r.spec.node_budget_watts for n, r in self.state.nodes.items() if r.spec.node_budget_watts is not None
            },
            budget_rebalances=self.last_plan.budget_rebalances if self.last_plan is not None else {},
            budget_interval_s=self.settings.resync_interval_s,
            carbon_budgets=self.carbon_budgets,
            grid_windows=self.grid.all_windows() if self.grid is not None else {},
            previous_quota_caps=quota_caps_in_force(r.spec for r in self.state.nodes.values())
            if any(v.spec.quota is not None for v in views)
            else {},
        )
        result = self.planner.plan(snapshot, views, context)
        self.last_plan = result
        # Accounts of jobs missing from this round stay in memory (and status) for a while: see ACCOUNT_GRACE.
        kept = kept_accounts(list(result.carbon_budgets.values()), list(self.carbon_budgets.values()), now)
        self.carbon_budgets = {a.job: a for a in kept}
        await self._write_plans(result, now)
        self.accounting.update(result, snapshot, {n: c.intensity for n, c in carbon.items()})
        self.accounting.forget(set(self.state.policies))
        profiles = self.observer.profiles_by_policy(result)
        accounts = _accounts_by_policy(result)
        for name, parsed in list(self.state.policies.items()):
            if parsed.view is not None and parsed.view.deleting:
                continue
            totals = self.accounting.totals.get(name)
            status = policy_status(
                parsed,
                result.policies.get(name),
                now=now,
                profiles=profiles.get(name, []),
                carbon_budgets=accounts.get(name, []),
                serving=self.observer.serving_status(name, parsed.status),
                energy_joules=totals.energy_joules if totals is not None else None,
                carbon_grams=totals.carbon_grams if totals is not None else None,
                grid_problem=self.grid.problem(name) if self.grid is not None else None,
            ).to_wire()
            await self._maybe_patch_policy_status(name, status)
        for name in [n for n in self._written_status if n not in self.state.policies]:
            del self._written_status[name]  # a policy that left (or left this shard) is written afresh if it returns
        await self._tell_shadowed(result)
        await self._tell_windows(result)
        await self._warn_pods(result)
        await self.observer.observe(result, snapshot, {v.name: v for v in views}, now)
        return result

    async def _write_plans(self, result: Plan, now: datetime) -> None:
        """Write each node's plan where it differs from the spec in force, and renew the rest in time.

        Up to ``write_concurrency`` PATCHes are in flight at once: one at a time, a round on a
        thousand-node fleet spends tens of seconds waiting on the API server, and an edit waits with it.
        Every write runs to its end even when another fails; the round then fails with the first error
        (the next round retries what did not land).
        """
        ttl = self.settings.plan_ttl_s
        for node in [n for n in self._in_sync if n not in self.state.nodes]:
            del self._in_sync[node]
        writes = []
        for node, targets in result.nodes.items():
            record = self.state.nodes.get(node)
            if record is None:
                continue
            budget = result.node_budgets.get(node)
            priorities = result.budget_priorities.get(node, ())
            ramp = result.node_budget_ramps.get(node)
            mark = (record.spec.plan_generation, record.spec.ttl_seconds, targets, budget, priorities, ramp)
            if self._in_sync.get(node) == mark and not renewal_due(record.spec, now, ttl, node=node):
                continue  # the same plan objects as last round, and the spec in force came from them
            update = node_spec_update(
                record.spec,
                targets,
                now=now,
                ttl_seconds=ttl,
                node_budget_watts=budget,
                budget_priorities=priorities,
                node=node,
                budget_ramp_watts_per_second=ramp,
            )
            if update is None:
                self._in_sync[node] = mark
            else:
                writes.append(self._write_plan(node, record, update, (targets, budget, priorities, ramp)))
        if not writes:
            return
        gate = asyncio.Semaphore(self.settings.write_concurrency)

        async def gated(write: Awaitable[None]) -> None:
            async with gate:
                await write

        failures = [r for r in await asyncio.gather(*map(gated, writes), return_exceptions=True) if r is not None]
        if failures:
            raise failures[0]

    async def _write_plan(self, node: str, record: NodeRecord, update: GpuNodeSpec, plan: tuple[object, ...]) -> None:
        await self._patch_node_spec(node, update.to_wire())
        record.spec = update  # our own write; the watch event will confirm it
        self._in_sync[node] = (update.plan_generation, update.ttl_seconds, *plan)

    async def _patch_node_spec(self, node: str, spec: dict[str, Any]) -> None:
        # A merge patch keeps what it leaves out: a field that went away (the node budget of a node
        # that left its budget) is sent as null, or the agent would go on enforcing the old value.
        cleared: dict[str, Any] = {f.alias or name: None for name, f in gpunode.GpuNodeSpec.model_fields.items()}
        try:
            await self._custom.patch_cluster_custom_object(
                gpunode.CRD.group,
                gpunode.CRD.version,
                gpunode.CRD.plural,
                node,
                {"spec": cleared | spec},
                _content_type="application/merge-patch+json",
            )
            self.api_writes += 1
            logger.info("GpuNode %s: plan generation %s", node, spec.get("planGeneration"))
        except ApiException as exc:
            if exc.status != 404:
                raise
            logger.info("GpuNode %s vanished before its plan could be written", node)

    async def _maybe_patch_policy_status(self, name: str, status: dict[str, Any]) -> None:
        material = status_material(status)
        loop_time = asyncio.get_running_loop().time()
        previous = self._written_status.get(name)
        if previous is not None:
            same_material = previous[0] == material
            recent = loop_time - previous[1] < self.settings.status_refresh_s
            if same_material and (recent or previous[2] == status):
                return
        try:
            await self._custom.patch_cluster_custom_object_status(
                energypolicy.CRD.group,
                energypolicy.CRD.version,
                energypolicy.CRD.plural,
                name,
                {"status": status},
                _content_type="application/merge-patch+json",
            )
            self.api_writes += 1
            self._written_status[name] = (material, loop_time, status)
        except ApiException as exc:
            if exc.status != 404:
                raise

    async def _tell_shadowed(self, result: Plan) -> None:
        """An event on each policy whose lost pods (or the policies that took them) changed."""
        for name in set(self._shadow_told) - set(result.policies):
            del self._shadow_told[name]
        for name, report in result.policies.items():
            parsed = self.state.policies.get(name)
            if parsed is None:
                continue
            event = shadow_event(self._shadow_told.get(name, ()), report.shadowed_by)
            self._shadow_told[name] = report.shadowed_by
            if event is None:
                continue
            await self._post_policy_event(name, parsed.uid, event)

    async def _tell_windows(self, result: Plan) -> None:
        """An event on each budget policy whose target a window starts or stops setting."""
        for name in set(self._window_told) - set(result.policies):
            del self._window_told[name]
        for name, report in result.policies.items():
            parsed = self.state.policies.get(name)
            if parsed is None or report.budget is None:
                continue
            event = window_event(self._window_told.get(name), report.budget)
            self._window_told[name] = report.budget.window
            if event is None:
                continue
            await self._post_policy_event(name, parsed.uid, event)

    async def _post_policy_event(self, name: str, uid: str, event: tuple[str, str, str]) -> None:
        reason, message, type_ = event
        await self.post_event(
            namespace="default",  # cluster-scoped objects' events live in "default" (kubectl describe finds them)
            involved={
                "apiVersion": energypolicy.CRD.api_version,
                "kind": energypolicy.CRD.kind,
                "name": name,
                "uid": uid,
            },
            reason=reason,
            message=message,
            type_=type_,
        )

    async def _warn_pods(self, result: Plan) -> None:
        for key, problems in result.pod_problems.items():
            if self._warned_pods.get(key) == problems:
                continue
            self._warned_pods[key] = problems
            pod = self.state.pods.get(key)
            if pod is None:
                continue
            await self.post_event(
                namespace=key[0],
                involved={"apiVersion": "v1", "kind": "Pod", "name": key[1], "namespace": key[0], "uid": pod.uid},
                reason="InvalidAnnotation",
                message="; ".join(problems),
                type_="Warning",
            )

    async def post_event(
        self, *, namespace: str, involved: dict[str, str], reason: str, message: str, type_: str = "Normal"
    ) -> None:
        """Post a core/v1 Event; failures are logged, never raised (events are best effort)."""
        now = datetime.now(UTC)
        body = {
            "metadata": {"generateName": f"{involved['name']}.", "namespace": namespace},
            "involvedObject": involved,
            "reason": reason,
            "message": message[:1024],
            "type": type_,
            "source": {"component": "wattplane-operator"},
            "firstTimestamp": now.isoformat(),
            "lastTimestamp": now.isoformat(),
            "count": 1,
        }
        try:
            await self._core.create_namespaced_event(namespace, body)
            self.api_writes += 1
            self.events_posted += 1
        except ApiException as exc:
            logger.warning("could not post event %s on %s: %s", reason, involved.get("name"), exc.reason)


def _accounts_by_policy(result: Plan) -> dict[str, list[JobCarbonBudget]]:
    """The slowdown accounts of the jobs each policy governs in ``result``, for its status."""
    out: dict[str, list[JobCarbonBudget]] = {}
    for job, account in result.carbon_budgets.items():
        view = result.jobs.get(job)
        if view is not None:
            out.setdefault(view.policy, []).append(account)
    return out
