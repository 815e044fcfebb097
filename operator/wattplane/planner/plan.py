"""Planning rounds: (fleet snapshot, policies, context) → per-GPU targets, node budgets, reports.

Pure and deterministic: the same inputs give the same plan, so the operator can diff a new plan
against what it last wrote and patch only the nodes that changed, and the simulator can run this
very code in virtual time. Every target carries a human-readable ``reason`` so ``wattplane explain``
and ``kubectl get gpun -o yaml`` say why a GPU runs where it runs.

How a round is composed:

* each pod gets its intent (annotations), its governing policy (:mod:`selection`) and its job;
* ``quota`` sections share their watts among their pods' GPUs first (:mod:`quota`): each GPU's
  cap is one more proposal for it, sized against what the policy's other sections allow;
* each GPU gets the tightest target of its pods' governing policies (:mod:`decide`), serving pods'
  knobs (``context.serving_knobs``) included;
* ``budget`` sections run last over the node sets they cover and set each node's share, ramp and cut
  order, never a target (:mod:`nodeshares`, :mod:`schedule` for timed windows): the node's agent alone
  cuts GPUs to hold the share;
* each policy gets a report of what it governs (:mod:`reports`).

**Incremental.** A :class:`Planner` keeps what it decided and, in the next round, re-decides only
what the changes since then can reach: the pods that changed, the GPUs of changed nodes, of changed
pods, of jobs whose profile or budgeted schedule moved, of policies whose carbon weight moved, of pods
whose serving knob or quota cap moved; the budgets whose nodes or window target changed; the reports of
the policies any of that touched (quotas are re-shared every round: they follow measured power). Everything else is
carried over. :func:`plan` is a round of a fresh planner, and a test holds the two to the same
result on random event sequences. The plan's mappings are unordered: compare them as mappings.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

import immutables
from wattplane.api.annotations import PodIntent, parse_pod_annotations
from wattplane.api.v1alpha1.energypolicy import JobCarbonBudget, JobProfile
from wattplane.api.v1alpha1.gpunode import BudgetPriority, GpuTarget
from wattplane.planner import budget as budgeting
from wattplane.planner import carbonbudget, nodeshares, reports, schedule
from wattplane.planner.carbon import WeightDecision, carbon_weight
from wattplane.planner.context import PlanContext, ServingKnob
from wattplane.planner.decide import Decider, Decision, PodState, budget_decision, budgeted, carbon_key
from wattplane.planner.jobs import job_id
from wattplane.planner.quota import QuotaAllocation, QuotaGpu, QuotaParams, allocate_quota
from wattplane.planner.reports import GpuShare, PolicyReport, PolicyTally, TallySummary, observes_only
from wattplane.planner.selection import Selector, rank_key, sets_pod_limits
from wattplane.planner.snapshot import FleetSnapshot, GpuView, PodKey, PodView, PolicyView, SnapshotDelta

K = TypeVar("K")
V = TypeVar("V")


class FrozenMap(Mapping[K, V]):
    """A read-only mapping over a persistent map, equal to any mapping with the same items.

    A planner hands out a new one each round in O(changes) (a dict copy would cost O(fleet)), and an
    old plan never changes under its holder.
    """

    __slots__ = ("_items",)

    def __init__(self, items: immutables.Map[K, V] | None = None) -> None:
        self._items: immutables.Map[K, V] = items if items is not None else immutables.Map()

    def __getitem__(self, key: K) -> V:
        return self._items[key]

    def __iter__(self) -> Iterator[K]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __repr__(self) -> str:
        return f"FrozenMap({dict(self._items)!r})"


def _updated(items: immutables.Map[K, V], source: Mapping[K, V], keys: Iterable[K]) -> immutables.Map[K, V]:
    """``items`` with ``keys`` set to their values in ``source``, or removed where ``source`` lacks them."""
    edit = items.mutate()
    for key in keys:
        value = source.get(key)
        if value is None:
            edit.pop(key, None)
        else:
            edit[key] = value
    return edit.finish()


@dataclass(frozen=True)
class JobView:
    """A job the plan governs: what the operator must observe for profiling and stragglers."""

    id: str
    policy: str
    pods: tuple[PodKey, ...]
    gpus: tuple[str, ...]
    gpu_model: str
    min_watts: float
    max_watts: float


@dataclass(frozen=True)
class Plan:
    """The planner's output."""

    nodes: Mapping[str, tuple[GpuTarget, ...]]
    policies: Mapping[str, PolicyReport]
    pod_problems: Mapping[PodKey, tuple[str, ...]] = field(default_factory=dict)
    pod_targets: Mapping[PodKey, tuple[GpuTarget, ...]] = field(default_factory=dict)
    #: Per-node power budgets for the agents' fast loops (only nodes a budget covers).
    node_budgets: Mapping[str, float] = field(default_factory=dict)
    #: The cut order of each budgeted node's GPUs, for ``GpuNode.spec.budgetPriorities``.
    budget_priorities: Mapping[str, tuple[BudgetPriority, ...]] = field(default_factory=dict)
    #: Each budget policy's last re-share of its node shares (the next round's context needs it).
    budget_rebalances: Mapping[str, budgeting.Rebalance] = field(default_factory=dict)
    jobs: Mapping[str, JobView] = field(default_factory=dict)
    #: Slowdown accounts of the jobs under a ``Budgeted`` carbon policy, brought up to this round.
    carbon_budgets: Mapping[str, JobCarbonBudget] = field(default_factory=dict)
    #: Nodes whose targets differ from the previous round of the same planner (all, in a first round).
    changed_nodes: frozenset[str] = frozenset()
    #: Rate at which each budgeted node's agent moves its budget in force, watts per second (only
    #: nodes ramping into or out of a budget window; :mod:`wattplane.planner.schedule`).
    node_budget_ramps: Mapping[str, float] = field(default_factory=dict)
    #: The next time a budget window starts, ends or stops ramping: plan again then at the latest.
    next_change_at: datetime | None = None


def plan(snapshot: FleetSnapshot, policies: Iterable[PolicyView], context: PlanContext | None = None) -> Plan:
    """Compute targets for every GPU of every node in ``snapshot`` (a round of a fresh :class:`Planner`)."""
    return Planner().plan(snapshot, policies, context)


def _pod_name(key: PodKey) -> str:
    return f"{key[0]}/{key[1]}"


def _fixed(gpu: GpuView) -> tuple[object, ...]:
    """What a GPU's target depends on besides its pods: its power draw and energy do not count."""
    return (gpu.index, gpu.model, gpu.min_watts, gpu.max_watts, gpu.default_watts, gpu.pods, gpu.mig_enabled)


def _budget_rank(states: Mapping[PodKey, PodState], gpu: GpuView) -> int:
    """The GPU's place in the budget's cut order: the highest rank of the pods on it."""
    intents = [s.intent for k in gpu.pods if (s := states.get(k)) is not None]
    if not intents:
        return budgeting.budget_rank(0, None, has_pod=False)
    return max(budgeting.budget_rank(i.priority, i.workload, has_pod=True) for i in intents)


@dataclass
class _GpuPlan:
    """What the planner holds for one GPU between rounds."""

    view: GpuView
    decision: Decision | None = None
    #: ``(policy, job)`` pairs the efficiency section could not profile on this GPU.
    unprofiled: tuple[tuple[str, str], ...] = ()


@dataclass
class _Changes:
    """What a round must redo."""

    nodes: set[str] = field(default_factory=set)  # re-decide every GPU
    measured: set[str] = field(default_factory=set)  # power drawn changed: budgets and tallies
    pods: set[PodKey] = field(default_factory=set)  # rebuild pod_targets
    jobs: set[str] = field(default_factory=set)  # rebuild the JobView
    policies: set[str] = field(default_factory=set)  # the tally changed: summarise and report
    reported: set[str] = field(default_factory=set)  # only the carbon or budget part changed: report
    targets: set[str] = field(default_factory=set)  # nodes whose targets changed
    node_set: bool = False  # a node came or went
    #: The targets before the planner started afresh (on a policy change), if it did.
    replaced: Mapping[str, tuple[GpuTarget, ...]] | None = None


class Planner:
    """Plans round after round; each round re-decides only what changed since the previous one.

    Not thread-safe. Inputs must not be mutated after they were planned (the planner keeps them to
    tell the next round's changes): the operator and the simulator build new snapshots each round.
    """

    def __init__(self) -> None:
        self._active: tuple[PolicyView, ...] | None = None
        self._reset(())

    def _reset(self, active: tuple[PolicyView, ...]) -> None:
        self._active = active
        self._by_name = {p.name: p for p in active}
        self._contenders = [p for p in active if sets_pod_limits(p.spec)]
        self._observers = [p for p in active if observes_only(p)]
        self._budgets = sorted((p for p in active if p.spec.budget is not None), key=rank_key)
        self._quotas = [p for p in active if p.spec.quota is not None]
        self._quota_caps: dict[str, float] = {}
        self._quota_outcomes: dict[str, QuotaAllocation] = {}
        self._pods: Mapping[PodKey, PodView] = {}
        self._states: dict[PodKey, PodState] = {}
        self._namespaces: dict[str, Mapping[str, str]] = {}
        self._node_labels: dict[str, Mapping[str, str]] = {}
        self._node_gpus: dict[str, tuple[GpuView, ...]] = {}
        self._gpus: dict[str, _GpuPlan] = {}
        #: pod → uuid → the GPU (the pods a GPU reports, whether or not the pod itself is known)
        self._pod_gpus: dict[PodKey, dict[str, GpuView]] = defaultdict(dict)
        self._job_pods: dict[str, set[PodKey]] = defaultdict(set)  # governed pods by job
        self._governed: dict[str, set[PodKey]] = defaultdict(set)  # by policy
        self._budgeted_jobs: dict[str, set[PodKey]] = defaultdict(set)
        self._problems: dict[PodKey, tuple[str, ...]] = {}
        self._tallies = {p.name: PolicyTally() for p in active}
        self._reports: dict[str, PolicyReport] = {}
        self._summaries: dict[str, TallySummary] = {}
        self._version: int | None = None
        self._node_names: tuple[str, ...] = ()
        self._nodes_out: immutables.Map[str, tuple[GpuTarget, ...]] = immutables.Map()
        self._pod_targets_out: immutables.Map[PodKey, tuple[GpuTarget, ...]] = immutables.Map()
        self._jobs_out: immutables.Map[str, JobView] = immutables.Map()
        self._problems_out: immutables.Map[PodKey, tuple[str, ...]] = immutables.Map()
        self._targets: dict[str, tuple[GpuTarget, ...]] = {}
        self._pod_targets: dict[PodKey, tuple[GpuTarget, ...]] = {}
        self._jobs: dict[str, JobView] = {}
        self._carbon: dict[str, WeightDecision] = {}
        self._carbon_budgets: dict[str, carbonbudget.BudgetDecision] = {}
        self._profiles: dict[tuple[str, str], JobProfile] = {}
        self._caps: dict[PodKey, float] = {}
        self._knobs: dict[PodKey, ServingKnob] = {}
        self._coverage: dict[str, tuple[str, ...]] = {}
        self._sharings: dict[str, nodeshares.Sharing] = {}
        self._outcomes: dict[str, nodeshares.Outcome] = {}

    def plan(self, snapshot: FleetSnapshot, policies: Iterable[PolicyView], context: PlanContext | None = None) -> Plan:
        """The plan for ``snapshot``; re-decides only what changed since this planner's last round.

        A round that raises leaves no half-updated state behind: the next round starts afresh.
        """
        try:
            return self._plan(snapshot, policies, context or PlanContext())
        except BaseException:
            self._reset(())
            self._active = None  # whatever the next round brings differs: it starts afresh
            raise

    def _plan(self, snapshot: FleetSnapshot, policies: Iterable[PolicyView], context: PlanContext) -> Plan:
        active = tuple(sorted((p for p in policies if not p.deleting), key=lambda p: p.name))
        changes = _Changes()
        if active != self._active:
            changes.replaced = self._targets
            self._reset(active)  # a policy edit can move any pod: start afresh
        if not self._reports:
            changes.policies.update(self._tallies)  # a first round reports every policy
        self._update_pods(snapshot, changes)
        self._update_gpus(snapshot, changes)
        self._update_signals(context, changes)
        decider = Decider(context, self._carbon, self._carbon_budgets)
        if self._quotas:
            self._update_quotas(decider, context, changes)
            decider.quota_caps = self._quota_caps  # the same decider: its memo already holds the ceilings
        self._redecide(decider, changes)
        self._update_budgets(snapshot, context, changes)
        self._update_outputs(changes)
        for name in changes.policies:
            self._summaries[name] = reports.summarize(self._tallies[name])
        for name in changes.policies | changes.reported:
            outcome = self._outcomes.get(name)
            self._reports[name] = reports.report(
                self._by_name[name],
                self._summaries[name],
                self._carbon.get(name),
                context.carbon.get(name),
                (outcome.status, outcome.met, outcome.message) if outcome is not None else None,
                self._quota_outcomes.get(name),
            )
        self._version = snapshot.version
        return self._result(snapshot, changes)

    # -- pods ------------------------------------------------------------------------------------

    def _update_pods(self, snapshot: FleetSnapshot, changes: _Changes) -> None:
        namespaces = dict(snapshot.namespace_labels)
        moved = {
            ns for ns in namespaces.keys() | self._namespaces.keys() if namespaces.get(ns) != self._namespaces.get(ns)
        }
        old, new = self._pods, snapshot.pods
        dirty: set[PodKey] = set()
        delta = self._delta(snapshot)
        if delta is not None:
            dirty.update(k for k in delta.pods if old.get(k) != new.get(k))
        else:
            added = 0
            for key, pod in new.items():
                prior = old.get(key)
                if prior is not pod and prior != pod:
                    dirty.add(key)
                    added += prior is None
            if len(old) > len(new) - added:  # some pods left
                dirty.update(k for k in old if k not in new)
        if moved:  # namespace labels feed selection
            dirty.update(k for k in new if k[0] in moved)
        self._pods, self._namespaces = new, namespaces
        if not dirty:
            return
        selector = Selector(self._contenders, namespaces)
        watch = Selector(self._observers, namespaces) if self._observers else None
        intents: dict[tuple[tuple[str, str], ...], PodIntent] = {}
        for key in dirty:
            before = self._states.pop(key, None)
            if before is not None:
                self._hold(key, before, add=False, changes=changes)
            current = new.get(key)
            if current is not None:
                state = self._pod_state(current, selector, watch, intents)
                self._states[key] = state
                self._hold(key, state, add=True, changes=changes)
            changes.pods.add(key)
            changes.nodes.update(g.node for g in self._pod_gpus.get(key, {}).values())

    def _delta(self, snapshot: FleetSnapshot) -> SnapshotDelta | None:
        """The snapshot's own account of its changes, when it is relative to the last one planned."""
        delta = snapshot.delta
        if delta is None or self._version is None or delta.since != self._version:
            return None
        return delta

    def _pod_state(
        self,
        pod: PodView,
        selector: Selector,
        watch: Selector | None,
        intents: dict[tuple[tuple[str, str], ...], PodIntent],
    ) -> PodState:
        marks = tuple(sorted(pod.annotations.items()))
        intent = intents.get(marks)
        if intent is None:
            intent = intents[marks] = parse_pod_annotations(pod.annotations)
        labels = tuple(sorted(pod.labels.items()))
        selection = selector.choose(pod, intent, labels)
        watched = watch.choose(pod, intent, labels) if watch is not None else None
        return PodState(
            intent=intent,
            job=job_id(pod, intent),
            governing=selection.winner if selection is not None else None,
            losers=selection.losers if selection is not None else (),
            watchers=(watched.winner, *watched.losers) if watched is not None else (),
        )

    def _hold(self, key: PodKey, state: PodState, *, add: bool, changes: _Changes) -> None:
        """Count a pod's state into (or out of) the tallies and indexes."""
        name = _pod_name(key)
        for observer in state.watchers:
            reports.hold(self._tallies[observer.name], name, state.job, add=add)
            changes.policies.add(observer.name)
        if state.intent.problems and add:
            self._problems[key] = state.intent.problems
        elif not add:
            self._problems.pop(key, None)
        policy = state.governing
        if policy is None:
            return
        changes.jobs.add(state.job)
        changes.policies.add(policy.name)
        reports.hold(self._tallies[policy.name], name, state.job, add=add)
        members = self._job_pods[state.job]
        governed = self._governed[policy.name]
        budget_pods = self._budgeted_jobs[state.job] if budgeted(policy) else None
        for loser in state.losers:
            changes.policies.add(loser.name)
            if add:
                self._tallies[loser.name].shadowed[name] = policy.name
            else:
                self._tallies[loser.name].shadowed.pop(name, None)
        if add:
            members.add(key)
            governed.add(key)
            if budget_pods is not None:
                budget_pods.add(key)
            return
        members.discard(key)
        governed.discard(key)
        if not members:
            del self._job_pods[state.job]
        if budget_pods is not None:
            budget_pods.discard(key)
            if not budget_pods:
                del self._budgeted_jobs[state.job]

    # -- GPUs ------------------------------------------------------------------------------------

    def _update_gpus(self, snapshot: FleetSnapshot, changes: _Changes) -> None:
        by_node = snapshot.gpus_by_node
        delta = self._delta(snapshot)
        if delta is not None:
            for node in delta.nodes:
                gpus = by_node.get(node, ())
                if self._node_gpus.get(node, ()) is not gpus:
                    self._node_changed(node, self._node_gpus.get(node, ()), gpus, changes)
            return
        for node, gpus in by_node.items():
            if self._node_gpus.get(node) is not gpus:
                self._node_changed(node, self._node_gpus.get(node, ()), gpus, changes)
        if len(self._node_gpus) > len(by_node) or any(n not in by_node for n in self._node_gpus):
            for node in [n for n in self._node_gpus if n not in by_node]:
                self._node_changed(node, self._node_gpus[node], (), changes)

    def _node_changed(
        self, node: str, before: tuple[GpuView, ...], after: tuple[GpuView, ...], changes: _Changes
    ) -> None:
        old = {g.uuid: g for g in before}
        changes.measured.add(node)
        for gpu in after:
            prior = old.pop(gpu.uuid, None)
            if prior is gpu:
                continue
            if prior is None or _fixed(prior) != _fixed(gpu):
                changes.nodes.add(node)
            self._index(prior, gpu, changes)
            held = self._gpus.get(gpu.uuid)
            if held is None:
                self._gpus[gpu.uuid] = _GpuPlan(gpu)
            else:
                held.view = gpu
        for gone in old.values():
            changes.nodes.add(node)
            self._index(gone, None, changes)
            held = self._gpus.pop(gone.uuid, None)
            if held is not None:
                self._drop(gone.uuid, held, changes)
        if not before or not after:
            changes.node_set = True
        if after:
            self._node_gpus[node] = after
        else:
            self._node_gpus.pop(node, None)
            if self._targets.pop(node, None) is not None:
                changes.targets.add(node)

    def _index(self, before: GpuView | None, after: GpuView | None, changes: _Changes) -> None:
        """Keep pod → GPUs in step with the GPUs' pod lists."""
        if before is not None:
            for key in before.pods:
                gpus = self._pod_gpus.get(key)
                if gpus is not None:
                    gpus.pop(before.uuid, None)
                    if not gpus:
                        del self._pod_gpus[key]
                self._touch_pod(key, changes)
        if after is not None:
            for key in after.pods:
                self._pod_gpus[key][after.uuid] = after
                self._touch_pod(key, changes)

    def _touch_pod(self, key: PodKey, changes: _Changes) -> None:
        changes.pods.add(key)
        state = self._states.get(key)
        if state is not None and state.governing is not None:
            changes.jobs.add(state.job)

    # -- signals and schedules -------------------------------------------------------------------

    def _update_signals(self, context: PlanContext, changes: _Changes) -> None:
        carbon = {
            p.name: carbon_weight(p.spec.carbon, context.carbon.get(p.name), context.now)
            for p in self._active or ()
            if p.spec.carbon is not None
        }
        for name, decision in carbon.items():
            before = self._carbon.get(name)
            if before != decision:
                changes.reported.add(name)
                if not budgeted(self._by_name[name]) and carbon_key(before) != carbon_key(decision):
                    self._nodes_of(self._governed.get(name, ()), changes)
        self._carbon = carbon
        profiles = dict(context.profiles)
        if profiles != self._profiles:
            for key in profiles.keys() | self._profiles.keys():
                if profiles.get(key) is not self._profiles.get(key):
                    self._nodes_of(self._job_pods.get(key[0], ()), changes)
        self._profiles = profiles
        caps = dict(context.straggler_caps)
        if caps != self._caps:
            self._nodes_of([k for k in caps.keys() | self._caps.keys() if caps.get(k) != self._caps.get(k)], changes)
        self._caps = caps
        knobs = dict(context.serving_knobs)
        if knobs != self._knobs:
            self._nodes_of(
                [k for k in knobs.keys() | self._knobs.keys() if knobs.get(k) != self._knobs.get(k)], changes
            )
        self._knobs = knobs
        schedules: dict[str, carbonbudget.BudgetDecision] = {}
        for job, keys in self._budgeted_jobs.items():
            schedule = self._schedule(job, keys, context)
            if schedule is None:
                continue
            schedules[job] = schedule
            last = self._carbon_budgets.get(job)
            if last is None or (last.watts, last.reason) != (schedule.watts, schedule.reason):
                self._nodes_of(keys, changes)
        for job in self._carbon_budgets.keys() - schedules.keys():
            self._nodes_of(self._job_pods.get(job, ()), changes)
        self._carbon_budgets = schedules

    def _schedule(self, job: str, keys: Iterable[PodKey], context: PlanContext) -> carbonbudget.BudgetDecision | None:
        """A budgeted job's decision, on its first GPU in (node, index) order."""
        candidates = [
            (g.node, g.index, key, g) for key in keys for g in self._pod_gpus.get(key, {}).values() if not g.mig_enabled
        ]
        if not candidates:
            return None
        _, _, key, gpu = min(candidates, key=lambda c: c[:3])
        state = self._states[key]
        assert state.governing is not None
        return budget_decision(gpu, job, state.governing, state.intent, context, self._carbon.get(state.governing.name))

    def _nodes_of(self, keys: Iterable[PodKey], changes: _Changes) -> None:
        for key in keys:
            changes.nodes.update(g.node for g in self._pod_gpus.get(key, {}).values())

    # -- decisions ----------------------------------------------------------------------------------

    def _redecide(self, decider: Decider, changes: _Changes) -> None:
        for node in changes.nodes:
            gpus = self._node_gpus.get(node)
            if gpus is None:
                continue
            for gpu in gpus:
                held = self._gpus[gpu.uuid]
                decision, unprofiled = decider.decide(gpu, self._states)
                if decision == held.decision and unprofiled == held.unprofiled:
                    continue
                self._drop(gpu.uuid, held, changes)
                held.decision, held.unprofiled = decision, unprofiled
                for policy, job in unprofiled:
                    reports.flag_unprofiled(self._tallies[policy], job, add=True)
                    changes.policies.add(policy)
                for key in gpu.pods:
                    changes.pods.add(key)
            targets = tuple(d.target for g in sorted(gpus, key=lambda g: g.index) if (d := self._gpus[g.uuid].decision))
            if targets != self._targets.get(node, ()):
                changes.targets.add(node)
            if targets:
                self._targets[node] = targets
            else:
                self._targets.pop(node, None)
        for node in changes.nodes | changes.measured:
            for gpu in self._node_gpus.get(node, ()):
                decision = self._gpus[gpu.uuid].decision
                if decision is not None:
                    policy = decision.target.policy
                    share = GpuShare.of(decision.target.power_limit_watts, gpu.power_watts, decision.clamped)
                    if self._tallies[policy].set_share(gpu.uuid, share):
                        changes.policies.add(policy)

    def _drop(self, uuid: str, held: _GpuPlan, changes: _Changes) -> None:
        """Take a GPU's decision out of the tallies."""
        if held.decision is not None:
            policy = held.decision.target.policy
            if self._tallies[policy].set_share(uuid, None):
                changes.policies.add(policy)
        for policy, job in held.unprofiled:
            reports.flag_unprofiled(self._tallies[policy], job, add=False)
            changes.policies.add(policy)

    # -- quotas ----------------------------------------------------------------------------------

    def _update_quotas(self, decider: Decider, context: PlanContext, changes: _Changes) -> None:
        """Share each quota among its pods' GPUs; re-decide the nodes whose caps moved.

        Every round, over every GPU of a quota's pods: a quota follows measured power (an idle GPU
        lends, a capped one reclaims), so there is nothing to skip. The other sections' limit is each
        GPU's ceiling, computed in this round, and hysteresis weighs the caps in force (from the
        context), so a fresh planner and a long-lived one agree.
        """
        caps: dict[str, float] = {}
        for policy in self._quotas:
            spec = policy.spec.quota
            assert spec is not None
            gpus: dict[str, QuotaGpu] = {}
            for key in sorted(self._governed.get(policy.name, ())):
                state = self._states[key]
                for gpu in self._pod_gpus.get(key, {}).values():
                    if gpu.mig_enabled or gpu.uuid in gpus:
                        continue
                    profile = context.profiles.get((state.job, gpu.model))
                    knee = profile.chosen_watts if profile is not None and profile.state == "Done" else None
                    gpus[gpu.uuid] = QuotaGpu(
                        uuid=gpu.uuid,
                        priority_rank=_budget_rank(self._states, gpu),
                        floor_watts=gpu.min_watts,
                        ceiling_watts=decider.ceiling(gpu, key, state, policy),
                        measured_watts=gpu.power_watts,
                        cap_watts=gpu.limit_watts,
                        busy=gpu.power_watts > gpu.min_watts * 0.5,
                        efficient_watts=float(knee) if knee is not None else None,
                        node=gpu.node,
                    )
            params = QuotaParams(
                margin_fraction=spec.margin_fraction,
                hysteresis_fraction=spec.hysteresis_fraction,
                knee_aware=spec.knee_aware,
            )
            previous = {u: context.previous_quota_caps[u] for u in gpus if u in context.previous_quota_caps}
            outcome = allocate_quota(spec.watts, gpus.values(), previous, params)
            caps.update(outcome.caps)
            if self._quota_outcomes.get(policy.name) != outcome:
                changes.reported.add(policy.name)
            self._quota_outcomes[policy.name] = outcome
        for uuid in caps.keys() | self._quota_caps.keys():
            if caps.get(uuid) != self._quota_caps.get(uuid):
                gpu_plan = self._gpus.get(uuid)
                if gpu_plan is not None:
                    changes.nodes.add(gpu_plan.view.node)
        self._quota_caps = caps

    # -- budgets ---------------------------------------------------------------------------------

    def _update_budgets(self, snapshot: FleetSnapshot, context: PlanContext, changes: _Changes) -> None:
        if not self._budgets:
            return
        labels = snapshot.node_labels
        delta = self._delta(snapshot)
        if delta is not None:  # the source says which nodes changed, labels included
            moved = [n for n in delta.nodes if labels.get(n) != self._node_labels.get(n)]
            for node in moved:
                if node in labels:
                    self._node_labels[node] = labels[node]
                else:
                    self._node_labels.pop(node, None)
        else:
            moved = [] if labels == self._node_labels else [""]
            self._node_labels = dict(labels)
        recover = changes.node_set or not self._coverage or bool(moved)
        if recover:
            claimed: set[str] = set()
            nodes = sorted(self._node_gpus)
            for policy in self._budgets:
                spec = policy.spec.budget
                assert spec is not None
                covered = tuple(
                    n
                    for n in nodes
                    if n not in claimed
                    and (spec.node_selector is None or spec.node_selector.matches(labels.get(n, {})))
                )
                claimed.update(covered)
                self._coverage[policy.name] = covered
        touched = changes.nodes | changes.measured
        for policy in self._budgets:
            covered = self._coverage[policy.name]
            sharing = self._sharings.get(policy.name)
            previous = context.previous_node_budgets
            stale = (
                recover
                or sharing is None
                or not touched.isdisjoint(covered)
                or any(previous.get(n) != sharing.previous.get(n) for n in covered)
            )
            reference = (
                nodeshares.reference_by_node(covered, self._node_gpus)
                if stale or sharing is None
                else sharing.node_reference
            )
            spec = policy.spec.budget
            assert spec is not None
            target = schedule.budget_target(
                spec, context.now, math.fsum(reference.values()), context.grid_windows.get(policy.name, ())
            )
            if stale or sharing is None or sharing.target != target:
                sharing = nodeshares.share_out(
                    policy,
                    covered,
                    self._node_gpus,
                    self._ceiling,
                    lambda g: _budget_rank(self._states, g),
                    previous,
                    target,
                )
                self._sharings[policy.name] = sharing
            outcome = nodeshares.settle_shares(
                policy, sharing, context.budget_rebalances.get(policy.name), context.now, context.budget_interval_s
            )
            if self._outcomes.get(policy.name) != outcome:
                changes.reported.add(policy.name)
            self._outcomes[policy.name] = outcome

    def _ceiling(self, gpu: GpuView) -> float:
        # Without a target the GPU may run at its default; its current limit may be a past cut, and
        # using it would keep the node's share from ever recovering.
        decision = self._gpus[gpu.uuid].decision
        return decision.target.power_limit_watts if decision is not None else gpu.default_watts

    # -- outputs ---------------------------------------------------------------------------------

    def _update_outputs(self, changes: _Changes) -> None:
        for key in changes.pods:
            gpus = self._pod_gpus.get(key)
            targets = (
                tuple(
                    d.target
                    for g in sorted(gpus.values(), key=lambda g: (g.node, g.index))
                    if (d := self._gpus[g.uuid].decision) is not None
                )
                if gpus
                else ()
            )
            if targets:
                self._pod_targets[key] = targets
            else:
                self._pod_targets.pop(key, None)
        for job in changes.jobs:
            view = self._job_view(job)
            if view is None:
                self._jobs.pop(job, None)
            else:
                self._jobs[job] = view

    def _job_view(self, job: str) -> JobView | None:
        keys = self._job_pods.get(job)
        if not keys:
            return None
        unique = {g.uuid: g for k in keys for g in self._pod_gpus.get(k, {}).values()}
        gpus = sorted(unique.values(), key=lambda g: (g.node, g.index))
        if not gpus:
            return None
        pods = tuple(sorted(keys))
        policy = self._states[pods[0]].governing
        assert policy is not None
        return JobView(
            id=job,
            policy=policy.name,
            pods=pods,
            gpus=tuple(g.uuid for g in gpus),
            gpu_model=min(g.model for g in gpus),
            min_watts=max(g.min_watts for g in gpus),
            max_watts=min(g.max_watts for g in gpus),
        )

    def _result(self, snapshot: FleetSnapshot, changes: _Changes) -> Plan:
        node_budgets: dict[str, float] = {}
        priorities: dict[str, tuple[BudgetPriority, ...]] = {}
        ramps: dict[str, float] = {}
        changes_at: list[datetime] = []
        for policy in self._budgets:
            sharing = self._sharings[policy.name]
            if sharing.target.next_change_at is not None:
                changes_at.append(sharing.target.next_change_at)
            if policy.spec.dry_run:
                continue
            outcome = self._outcomes[policy.name]
            for node, share in outcome.shares.items():
                if share > 0:  # a GpuNode budget must be positive
                    node_budgets[node] = share
                    priorities[node] = sharing.priorities[node]
            ramps.update(schedule.node_ramps(sharing.target.ramp_watts_per_second, sharing.node_reference))
        moved = changes.targets
        if changes.replaced is not None:
            before, after = changes.replaced, self._targets
            moved = {n for n in before.keys() | after.keys() if before.get(n) != after.get(n)}
        if snapshot.nodes != self._node_names:  # a GpuNode came or went: rare, rebuilt whole
            self._node_names = snapshot.nodes
            self._nodes_out = immutables.Map({**dict.fromkeys(snapshot.nodes, ()), **self._targets})
        elif changes.targets:
            named = set(snapshot.nodes)
            edit = self._nodes_out.mutate()
            for node in changes.targets:
                targets = self._targets.get(node)
                if targets is not None:
                    edit[node] = targets
                elif node in named:
                    edit[node] = ()
                else:
                    edit.pop(node, None)
            self._nodes_out = edit.finish()
        self._pod_targets_out = _updated(self._pod_targets_out, self._pod_targets, changes.pods)
        self._problems_out = _updated(self._problems_out, self._problems, changes.pods)
        self._jobs_out = _updated(self._jobs_out, self._jobs, changes.jobs)
        return Plan(
            nodes=FrozenMap(self._nodes_out),
            policies=dict(self._reports),
            pod_problems=FrozenMap(self._problems_out),
            pod_targets=FrozenMap(self._pod_targets_out),
            node_budgets=node_budgets,
            budget_priorities=priorities,
            budget_rebalances={name: o.rebalance for name, o in self._outcomes.items()},
            jobs=FrozenMap(self._jobs_out),
            carbon_budgets={job: d.account for job, d in sorted(self._carbon_budgets.items())},
            changed_nodes=frozenset(moved),
            node_budget_ramps=ramps,
            next_change_at=min(changes_at) if changes_at else None,
        )


__all__ = ["FrozenMap", "JobView", "Plan", "Planner", "PolicyReport", "plan"]
