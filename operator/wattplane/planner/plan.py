"""One planning round: (fleet snapshot, policies, context) → per-GPU targets, node budgets, reports.

Pure and deterministic: the same inputs give the same plan, byte for byte, so the operator can diff a
new plan against what it last wrote and patch only the nodes that changed, and the simulator can run
this very function in virtual time. Every target carries a human-readable ``reason`` so
``wattplane explain`` and ``kubectl get gpun -o yaml`` say why a GPU runs where it runs.

How the sections of a policy compose on one GPU (design.md §3):

* each section proposes a limit: ``limits`` (static cap), ``efficiency`` (the job's Zeus probe or
  optimum), ``carbon`` (efficient + w·(max − efficient)), ``stragglers`` (the pod's Perseus cap);
* the tightest proposal wins, but efficiency, carbon and stragglers never go below the policy's floor
  (``limits.minWatts``/``minFractionOfDefault``, the pod's ``min-power-watts``): those are the user's
  stated tolerance, and the optimisations respect it;
* while a job's profile is being measured the probe limit stands alone (apart from static caps), or the
  measurement would be of something else;
* ``budget`` runs last over the node sets it covers and sets each node's share and cut order, never a
  target: the node's agent alone cuts GPUs to hold the share, below the floors if need be, down to the
  device minimum: a power emergency outranks preferences (precedence safety > budget > carbon >
  efficiency > user limits);
* everything is clamped into the device's constraints.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from wattplane.api.annotations import PodIntent, parse_pod_annotations
from wattplane.api.v1alpha1.energypolicy import BudgetStatus, CarbonStatus, JobCarbonBudget, JobProfile
from wattplane.api.v1alpha1.gpunode import BudgetPriority, GpuTarget, PolicySection
from wattplane.planner import budget as budgeting
from wattplane.planner import carbonbudget
from wattplane.planner.carbon import WeightDecision, carbon_limit, carbon_weight
from wattplane.planner.context import PlanContext
from wattplane.planner.efficiency import efficiency_limit
from wattplane.planner.jobs import job_id
from wattplane.planner.limits import lower_bound, static_cap
from wattplane.planner.selection import Selection, choose_policy, rank_key, sets_pod_limits
from wattplane.planner.snapshot import FleetSnapshot, GpuView, PodKey, PolicyView

#: The carbon weight is applied in steps of 1/_WEIGHT_STEPS.
_WEIGHT_STEPS = 20

#: Shadowed pods named in a report's message (the rest are counted; status lists more).
_NAMED_SHADOWED = 5

#: Reported binding section, in precedence order (first wins a tie).
_PRECEDENCE = ("budget", "carbon", "stragglers", "efficiency", "limits")


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
class PolicyReport:
    """What one policy governs after this round."""

    name: str
    generation: int
    pods: tuple[str, ...] = ()
    gpus: int = 0
    jobs: int = 0
    allocated_watts: float = 0.0
    measured_watts: float = 0.0
    clamped_gpus: int = 0
    #: Pods this policy selects but a higher-ranked policy governs.
    shadowed_pods: tuple[str, ...] = ()
    #: ``(pod, governing policy)`` for each of ``shadowed_pods``: which pods it lost, and to whom.
    shadowed_by: tuple[tuple[str, str], ...] = ()
    ready: bool = True
    reason: str = "Planned"
    message: str = ""
    carbon: CarbonStatus | None = None
    budget: BudgetStatus | None = None
    #: ``None`` when the policy has no budget; else whether the budget can be met.
    budget_met: bool | None = None
    budget_message: str = ""
    #: Jobs the efficiency section cannot profile (no progress signal), ``namespace/job``.
    unprofiled_jobs: tuple[str, ...] = ()


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


@dataclass
class _PolicyTally:
    pods: set[str] = field(default_factory=set)
    gpus: set[str] = field(default_factory=set)
    #: pod → the higher-ranked policy that governs it
    shadowed: dict[str, str] = field(default_factory=dict)
    jobs: set[str] = field(default_factory=set)
    unprofiled: set[str] = field(default_factory=set)
    allocated: float = 0.0
    measured: float = 0.0
    clamped: int = 0


@dataclass(frozen=True)
class _Proposal:
    watts: float
    section: PolicySection
    reason: str
    clamped: bool = False


@dataclass(frozen=True)
class _Decision:
    target: GpuTarget
    clamped: bool


def _sets_pod_limits(policy: PolicyView) -> bool:
    return sets_pod_limits(policy.spec)


def _observes_only(policy: PolicyView) -> bool:
    """No section that sets a limit (only ``dryRun``, or nothing in a spec the models would refuse)."""
    return not _sets_pod_limits(policy) and policy.spec.budget is None


def _budgeted(policy: PolicyView) -> bool:
    return policy.spec.carbon is not None and policy.spec.carbon.mode == "Budgeted"


def _pod_name(key: PodKey) -> str:
    return f"{key[0]}/{key[1]}"


class _Round:
    """The working state of one :func:`plan` call (kept in one place so helpers stay small)."""

    def __init__(self, snapshot: FleetSnapshot, policies: list[PolicyView], context: PlanContext) -> None:
        self.snapshot = snapshot
        self.policies = policies
        self.context = context
        # Pods of one job share their annotations and labels: parse and select once per distinct set.
        parsed: dict[tuple[tuple[str, str], ...], PodIntent] = {}
        self.intents: dict[PodKey, PodIntent] = {}
        for k, p in snapshot.pods.items():
            marks = tuple(sorted(p.annotations.items()))
            intent = parsed.get(marks)
            if intent is None:
                intent = parsed[marks] = parse_pod_annotations(p.annotations)
            self.intents[k] = intent
        self.governing: dict[PodKey, PolicyView] = {}
        self.jobs_of: dict[PodKey, str] = {}
        self.tallies: dict[str, _PolicyTally] = {p.name: _PolicyTally() for p in policies}
        self.carbon: dict[str, WeightDecision] = {
            p.name: carbon_weight(p.spec.carbon, context.carbon.get(p.name), context.now)
            for p in policies
            if p.spec.carbon is not None
        }
        #: Budgeted carbon decisions, one per job and round (every GPU of a job runs the same plan).
        self.budget_decisions: dict[str, carbonbudget.BudgetDecision] = {}

    def select(self) -> None:
        # Only policies that set pod limits contend for pods. A budget-only policy covers nodes, not
        # pods; an observe-only one (dryRun and no section) watches the pods it selects. Neither may
        # take a pod away from a policy that caps it.
        contenders = [p for p in self.policies if _sets_pod_limits(p)]
        observers = [p for p in self.policies if _observes_only(p)]
        seen: dict[tuple[object, ...], tuple[Selection | None, Selection | None]] = {}
        for key in sorted(self.snapshot.pods):
            pod = self.snapshot.pods[key]
            intent = self.intents[key]
            # Selection depends on nothing else: pods with equal labels, namespace and opt-in agree.
            memo = (pod.namespace, tuple(sorted(pod.labels.items())), intent.policy, intent.opt_out, pod.active)
            if memo in seen:
                selection, watched = seen[memo]
            else:
                ns_labels = self.snapshot.namespace_labels.get(pod.namespace, {})
                selection = choose_policy(pod, intent, ns_labels, contenders)
                watched = choose_policy(pod, intent, ns_labels, observers) if observers else None
                seen[memo] = (selection, watched)
            if watched is not None:
                for observer in (watched.winner, *watched.losers):
                    self.tallies[observer.name].pods.add(_pod_name(key))
                    self.tallies[observer.name].jobs.add(job_id(pod, intent))
            if selection is None:
                continue
            self.governing[key] = selection.winner
            self.jobs_of[key] = job_id(pod, self.intents[key])
            tally = self.tallies[selection.winner.name]
            tally.pods.add(_pod_name(key))
            tally.jobs.add(self.jobs_of[key])
            for loser in selection.losers:
                self.tallies[loser.name].shadowed[_pod_name(key)] = selection.winner.name

    def target_for(self, gpu: GpuView) -> _Decision | None:
        """The tightest target any governing policy sets on ``gpu`` (shared GPUs may have several)."""
        best: _Decision | None = None
        for key in sorted(gpu.pods):  # sorted: ties must not depend on report order
            policy = self.governing.get(key)
            if policy is None or gpu.mig_enabled:
                continue  # MIG boards are never capped per instance (design.md §4)
            decision = self._decide(gpu, key, policy)
            if decision is None:
                continue
            if best is None or (decision.target.power_limit_watts, decision.target.policy) < (
                best.target.power_limit_watts,
                best.target.policy,
            ):
                best = decision
        return best

    def _decide(self, gpu: GpuView, key: PodKey, policy: PolicyView) -> _Decision | None:
        spec = policy.spec
        intent = self.intents[key]
        job = self.jobs_of[key]
        proposals: list[_Proposal] = []
        profiling = False
        if spec.limits is not None:
            cap = static_cap(spec.limits, gpu)
            if cap is not None:
                proposals.append(_Proposal(cap.watts, "limits", cap.reason, cap.clamped))
        profile = self.context.profiles.get((job, gpu.model))
        budget_decision = self._budget_decision(gpu, job, policy, intent, profile) if _budgeted(policy) else None
        if spec.efficiency is not None:
            watts, why = efficiency_limit(profile)
            if watts is None:
                self.tallies[policy.name].unprofiled.add(job)
            else:
                profiling = profile is not None and profile.state == "Profiling"
                # Under a budgeted carbon section the profile feeds the schedule, which already runs
                # the job as efficiently as its budget allows: the Zeus optimum would only undercut it.
                if profiling or budget_decision is None:
                    proposals.append(_Proposal(watts, "efficiency", why))
        if not profiling:
            proposals.extend(self._carbon_and_stragglers(gpu, key, policy, profile))
        if not proposals:
            return None
        floor = self._floor(gpu, policy, intent)
        chosen = min(proposals, key=lambda p: (p.watts, _PRECEDENCE.index(p.section)))
        watts, reason = chosen.watts, f"EnergyPolicy {policy.name}: {chosen.reason}"
        if chosen.section != "limits" and floor is not None and watts < floor:
            watts, reason = floor, f"{reason}, raised to the floor {floor:g} W"
        watts, clamped, reason = _clamp(watts, reason, gpu)
        clamped = clamped or (chosen.clamped and watts == chosen.watts)
        # Every field is already validated (the spec, the device, the intent): skip pydantic's checks,
        # which would otherwise be the most expensive step of a round on a large fleet.
        target = GpuTarget.model_construct(
            uuid=gpu.uuid,
            power_limit_watts=watts,
            locked_clocks_mhz=spec.limits.locked_sm_clock_mhz if spec.limits is not None else None,
            policy=policy.name,
            job=job,
            priority=intent.priority,
            reason=reason,
            section=chosen.section,
            dry_run=spec.dry_run,
        )
        return _Decision(target, clamped)

    def _carbon_and_stragglers(
        self, gpu: GpuView, key: PodKey, policy: PolicyView, profile: JobProfile | None
    ) -> list[_Proposal]:
        out: list[_Proposal] = []
        spec = policy.spec
        budget = self.budget_decisions.get(self.jobs_of[key]) if _budgeted(policy) else None
        if budget is not None and budget.watts is not None:
            out.append(_Proposal(budget.watts, "carbon", budget.reason))
        decision = None if budget is not None else self.carbon.get(policy.name)
        if spec.carbon is not None and decision is not None and decision.weight is not None:
            chosen = profile.chosen_watts if profile is not None and profile.state == "Done" else None
            if chosen is not None:
                efficient, basis = float(chosen), f"Zeus optimum {float(chosen):g} W"
            else:
                efficient = spec.carbon.efficient_fraction_of_default * gpu.default_watts
                basis = f"{spec.carbon.efficient_fraction_of_default:g} × default"
            efficient = min(max(efficient, gpu.min_watts), gpu.max_watts)
            # w moves a little every round as the look-ahead window slides; steps of 1/20 keep the
            # limit (and the agents' writes) still until the change is worth a write.
            weight = round(decision.weight * _WEIGHT_STEPS) / _WEIGHT_STEPS
            watts = carbon_limit(efficient, gpu.max_watts, weight)
            out.append(_Proposal(watts, "carbon", f"{decision.reason}; efficient = {basis} → {watts:.0f} W"))
        cap = self.context.straggler_caps.get(key)
        if spec.stragglers is not None and cap is not None:
            out.append(_Proposal(cap, "stragglers", f"Perseus: waits for the job's slowest pod → {cap:g} W"))
        return out

    def _budget_decision(
        self, gpu: GpuView, job: str, policy: PolicyView, intent: PodIntent, profile: JobProfile | None
    ) -> carbonbudget.BudgetDecision:
        """The job's budgeted carbon decision this round: its account settled, then its plan (memoised)."""
        known = self.budget_decisions.get(job)
        if known is not None:
            return known
        spec = policy.spec.carbon
        assert spec is not None
        slowdown = intent.max_slowdown if intent.max_slowdown is not None else spec.max_slowdown
        account = self.context.carbon_budgets.get(job)
        if account is None or account.gpu_model != gpu.model:
            account = JobCarbonBudget(job=job, gpu_model=gpu.model)
        account = carbonbudget.settle(account, gpu.limit_watts, self.context.now, max_slowdown=slowdown)
        floor = self._floor(gpu, policy, intent)
        lo = min(max(floor if floor is not None else gpu.min_watts, gpu.min_watts), gpu.max_watts)
        curve = carbonbudget.profile_curve(profile, gpu.default_watts) or carbonbudget.prior_curve(gpu.default_watts)
        weight = self.carbon.get(policy.name)
        usable = weight is not None and not weight.stale and weight.intensity is not None
        decision = carbonbudget.decide(
            account,
            curve=curve,
            lo=lo,
            hi=gpu.max_watts,
            signal=self.context.carbon.get(policy.name),
            signal_usable=usable,
            fallback_max=spec.fallback == "Max",
            lookahead_hours=spec.lookahead_hours,
            job_age_s=sum(b.seconds for b in account.time_at_limits),
            now=self.context.now,
            current_watts=gpu.limit_watts,
        )
        self.budget_decisions[job] = decision
        return decision

    @staticmethod
    def _floor(gpu: GpuView, policy: PolicyView, intent: PodIntent) -> float | None:
        floors = [intent.min_power_watts] if intent.min_power_watts is not None else []
        if policy.spec.limits is not None:
            bound = lower_bound(policy.spec.limits, gpu)
            if bound is not None:
                floors.append(bound)
        return max(floors) if floors else None


def plan(snapshot: FleetSnapshot, policies: Iterable[PolicyView], context: PlanContext | None = None) -> Plan:
    """Compute targets for every GPU of every node in ``snapshot``."""
    active = sorted((p for p in policies if not p.deleting), key=lambda p: p.name)
    rnd = _Round(snapshot, active, context or PlanContext())
    rnd.select()

    decisions: dict[str, _Decision] = {}
    for gpu in snapshot.gpus:
        decision = rnd.target_for(gpu)
        if decision is not None:
            decisions[gpu.uuid] = decision

    budgets = _apply_budgets(rnd, decisions)
    node_budgets, budget_reports = budgets.node_budgets, budgets.outcomes

    targets: dict[str, list[GpuTarget]] = defaultdict(list)
    pod_targets: dict[PodKey, list[GpuTarget]] = defaultdict(list)
    job_gpus: dict[str, list[GpuView]] = defaultdict(list)
    for gpu in sorted(snapshot.gpus, key=lambda g: (g.node, g.index)):
        for key in gpu.pods:
            if key in rnd.jobs_of:
                job_gpus[rnd.jobs_of[key]].append(gpu)
        decision = decisions.get(gpu.uuid)
        if decision is None:
            continue
        target = decision.target
        targets[gpu.node].append(target)
        for key in gpu.pods:
            pod_targets[key].append(target)
        tally = rnd.tallies.get(target.policy)
        if tally is not None:
            tally.gpus.add(gpu.uuid)
            tally.allocated += target.power_limit_watts
            tally.measured += gpu.power_watts
            tally.clamped += int(decision.clamped)

    nodes = {node: tuple(targets.get(node, ())) for node in sorted({*snapshot.nodes, *targets})}
    reports = {p.name: _report(p, rnd, budget_reports.get(p.name)) for p in active}
    problems = {k: i.problems for k, i in rnd.intents.items() if i.problems}
    return Plan(
        nodes=nodes,
        policies=reports,
        pod_problems=problems,
        pod_targets={k: tuple(v) for k, v in pod_targets.items()},
        node_budgets=node_budgets,
        budget_priorities=budgets.priorities,
        budget_rebalances=budgets.rebalances,
        jobs=_jobs(rnd, job_gpus),
        carbon_budgets={job: d.account for job, d in sorted(rnd.budget_decisions.items())},
    )


def _clamp(watts: float, reason: str, gpu: GpuView) -> tuple[float, bool, str]:
    """``watts`` inside the device range, at milliwatt resolution (bounds are kept exact)."""
    if watts < gpu.min_watts:
        return gpu.min_watts, True, f"{reason}, raised to device minimum {gpu.min_watts:g} W"
    if watts > gpu.max_watts:
        return gpu.max_watts, True, f"{reason}, lowered to device maximum {gpu.max_watts:g} W"
    if watts in (gpu.min_watts, gpu.max_watts):
        return watts, False, reason
    return min(max(round(watts, 3), gpu.min_watts), gpu.max_watts), False, reason


def _jobs(rnd: _Round, job_gpus: Mapping[str, list[GpuView]]) -> dict[str, JobView]:
    pods_of: dict[str, list[PodKey]] = defaultdict(list)
    for key, job in rnd.jobs_of.items():
        pods_of[job].append(key)
    jobs: dict[str, JobView] = {}
    for job, keys in sorted(pods_of.items()):
        gpus = job_gpus.get(job, [])
        if not gpus:
            continue
        policy = rnd.governing[min(keys)]
        jobs[job] = JobView(
            id=job,
            policy=policy.name,
            pods=tuple(sorted(keys)),
            gpus=tuple(dict.fromkeys(g.uuid for g in gpus)),
            gpu_model=min(g.model for g in gpus),
            min_watts=max(g.min_watts for g in gpus),
            max_watts=min(g.max_watts for g in gpus),
        )
    return jobs


@dataclass(frozen=True)
class _BudgetOutcome:
    status: BudgetStatus
    met: bool
    message: str


@dataclass
class _Budgets:
    """What the budgets decided in a round: node shares, cut orders, re-shares and reports."""

    node_budgets: dict[str, float] = field(default_factory=dict)
    priorities: dict[str, tuple[BudgetPriority, ...]] = field(default_factory=dict)
    rebalances: dict[str, budgeting.Rebalance] = field(default_factory=dict)
    outcomes: dict[str, _BudgetOutcome] = field(default_factory=dict)


def _apply_budgets(rnd: _Round, decisions: Mapping[str, _Decision]) -> _Budgets:
    """Share each budget over its nodes, and give each node's agent the cut order of its GPUs.

    The operator owns the node shares and nothing else: it never lowers a GPU's target for a budget.
    Which GPUs give way, and how far, is the agent's decision alone, on measured power every tick
    (:mod:`wattplane.planner.budget` says why). A share moves when the budget's footing changes, and
    otherwise at most once per ``budget_interval_s``, past a dead band.

    A node belongs to at most one budget: the highest-ranked policy whose node selector matches it.
    """
    snapshot = rnd.snapshot
    context = rnd.context
    claimed: set[str] = set()
    out = _Budgets()
    gpus_by_node: dict[str, list[GpuView]] = defaultdict(list)
    for gpu in snapshot.gpus:
        gpus_by_node[gpu.node].append(gpu)
    for policy in sorted((p for p in rnd.policies if p.spec.budget is not None), key=rank_key):
        spec = policy.spec.budget
        assert spec is not None
        covered = [
            n
            for n in sorted(gpus_by_node)
            if n not in claimed
            and (spec.node_selector is None or spec.node_selector.matches(snapshot.node_labels.get(n, {})))
        ]
        claimed.update(covered)
        entries = []
        ranks: dict[str, list[BudgetPriority]] = {}
        for node in covered:
            ranks[node] = []
            for gpu in sorted(gpus_by_node[node], key=lambda g: g.index):
                decision = decisions.get(gpu.uuid)
                rank = _budget_rank(rnd, gpu)
                ranks[node].append(BudgetPriority.model_construct(uuid=gpu.uuid, priority=rank))
                entries.append(
                    budgeting.BudgetGpu(
                        node=node,
                        uuid=gpu.uuid,
                        priority_rank=rank,
                        floor_watts=_budget_floor(gpu),
                        # Without a target the GPU may run at its default; its current limit may be
                        # a past cut, and using it would keep the node's share from ever recovering.
                        ceiling_watts=decision.target.power_limit_watts if decision is not None else gpu.default_watts,
                        # A GPU the agent's budget loop holds down draws what it is allowed, not what it
                        # wants: its demand is its ceiling (else shares would shrink with every cut).
                        measured_watts=None if gpu.budget_limited else gpu.power_watts,
                    )
                )
        previous = {n: context.previous_node_budgets[n] for n in covered if n in context.previous_node_budgets}
        dead_band = 0.01 * spec.watts / len(covered) if covered else 0.0
        allocation = budgeting.allocate(
            spec.watts, entries, previous, spec.hysteresis_fraction, dead_band_watts=dead_band
        )
        footing = budgeting.footing(spec.watts, spec.hysteresis_fraction, entries)
        last = context.budget_rebalances.get(policy.name)
        shares: Mapping[str, float] = allocation.node_shares
        message = allocation.message
        interval = context.budget_interval_s
        if not budgeting.rebalance_due(last, footing, context.now, interval, previous, covered, spec.watts):
            assert last is not None
            out.rebalances[policy.name] = last
            shares = previous  # only measured power moved since the last re-share: the shares stand
            message += "; node shares kept until the next rebalance"
        elif (
            last is not None
            and last.footing == footing
            and budgeting.within_dead_band(allocation.node_shares, previous, spec.hysteresis_fraction, dead_band)
        ):
            out.rebalances[policy.name] = budgeting.Rebalance(footing, context.now)
            shares = previous  # a re-share on measured power alone that moves nothing far: no new plan
            message += "; node shares kept (every change within the dead band)"
        else:
            out.rebalances[policy.name] = budgeting.Rebalance(footing, context.now)
        if not policy.spec.dry_run:
            for node, share in shares.items():
                if share > 0:  # a GpuNode budget must be positive
                    out.node_budgets[node] = share
                    out.priorities[node] = tuple(ranks[node])
        measured = sum(g.power_watts for n in covered for g in gpus_by_node[n])
        status = BudgetStatus(
            watts=spec.watts,
            allocated_watts=round(sum(shares.values()), 3),
            measured_watts=round(measured, 3),
            minimum_watts=round(allocation.minimum_watts, 3),
            nodes=len(covered),
            # The agents' cuts, as they report them: the operator plans shares, not cuts.
            cut_gpus=sum(1 for n in covered for g in gpus_by_node[n] if g.budget_limited),
        )
        met = allocation.feasible and measured <= spec.watts * (1 + spec.hysteresis_fraction)
        out.outcomes[policy.name] = _BudgetOutcome(status, met, message)
    return out


def _budget_floor(gpu: GpuView) -> float:
    """The least a GPU can be held to: its minimum limit, or an idle GPU's lower draw.

    Agents enforce node shares on measured power, so an idle board drawing 30 W needs 30 W of its
    node's share, not the 100 W of its minimum limit; reserving the latter starves busy nodes.
    """
    if not gpu.pods and 0 < gpu.power_watts < gpu.min_watts:
        return gpu.power_watts
    return gpu.min_watts


def _budget_rank(rnd: _Round, gpu: GpuView) -> int:
    """The GPU's place in the budget's cut order: the highest rank of the pods on it."""
    intents = [rnd.intents[k] for k in gpu.pods if k in rnd.intents]
    if not intents:
        return budgeting.budget_rank(0, None, has_pod=False)
    return max(budgeting.budget_rank(i.priority, i.workload, has_pod=True) for i in intents)


def _report(policy: PolicyView, rnd: _Round, budget: _BudgetOutcome | None) -> PolicyReport:
    tally = rnd.tallies[policy.name]
    spec = policy.spec
    pods = tuple(sorted(tally.pods))
    if _observes_only(policy) and spec.dry_run:
        reason = "ObserveOnly"
        message = (
            f"observes {len(pods)} pod(s) in {len(tally.jobs)} job(s); dryRun with no section: "
            "sets no limit and takes no pod from another policy"
        )
    elif _observes_only(policy):
        reason, message = "NothingToEnforce", "the policy has no section that sets a limit"
    elif not pods and spec.budget is None:
        reason, message = "NoMatchingPods", "no running pod is selected by this policy"
    else:
        reason = "DryRun" if spec.dry_run else "Planned"
        message = f"governs {len(pods)} pod(s) in {len(tally.jobs)} job(s) on {len(tally.gpus)} GPU(s)"
        if tally.clamped:
            message += f"; {tally.clamped} limit(s) clamped to device constraints"
    if tally.shadowed:
        lost = sorted(tally.shadowed.items())
        named = ", ".join(f"{pod} by {winner}" for pod, winner in lost[:_NAMED_SHADOWED])
        more = f" and {len(lost) - _NAMED_SHADOWED} more" if len(lost) > _NAMED_SHADOWED else ""
        message += f"; {len(lost)} selected pod(s) governed by a higher-ranked policy: {named}{more}"
    carbon_status = None
    decision = rnd.carbon.get(policy.name)
    if decision is not None:
        signal = rnd.context.carbon.get(policy.name)
        carbon_status = CarbonStatus(
            intensity=decision.intensity,
            time=signal.time.isoformat() if signal is not None and signal.time is not None else None,
            source=signal.source if signal is not None else "",
            stale=decision.stale,
            weight=decision.weight,
            message=decision.reason,
        )
    return PolicyReport(
        name=policy.name,
        generation=policy.generation,
        pods=pods,
        gpus=len(tally.gpus),
        jobs=len(tally.jobs),
        allocated_watts=round(tally.allocated, 3),
        measured_watts=round(tally.measured, 3),
        clamped_gpus=tally.clamped,
        shadowed_pods=tuple(sorted(tally.shadowed)),
        shadowed_by=tuple(sorted(tally.shadowed.items())),
        ready=True,
        reason=reason,
        message=message,
        carbon=carbon_status,
        budget=budget.status if budget is not None else None,
        budget_met=budget.met if budget is not None else None,
        budget_message=budget.message if budget is not None else "",
        unprofiled_jobs=tuple(sorted(tally.unprofiled)),
    )


__all__ = ["JobView", "Plan", "PolicyReport", "plan"]
