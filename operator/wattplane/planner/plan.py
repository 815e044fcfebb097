"""One planning round: (fleet snapshot, policies, context) → per-GPU targets, node budgets, reports.

Pure and deterministic: the same inputs give the same plan, byte for byte, so the operator can diff a
new plan against what it last wrote and patch only the nodes that changed, and the simulator can run
this very function in virtual time. Every target carries a human-readable ``reason`` so
``wattplane explain`` and ``kubectl get gn -o yaml`` say why a GPU runs where it runs.

How the sections of a policy compose on one GPU (design.md §3):

* each section proposes a limit: ``limits`` (static cap), ``efficiency`` (the job's Zeus probe or
  optimum), ``carbon`` (efficient + w·(max − efficient)), ``stragglers`` (the pod's Perseus cap);
* the tightest proposal wins, but efficiency, carbon and stragglers never go below the policy's floor
  (``limits.minWatts``/``minFractionOfDefault``, the pod's ``min-power-watts``): those are the user's
  stated tolerance, and the optimisations respect it;
* while a job's profile is being measured the probe limit stands alone (apart from static caps), or the
  measurement would be of something else;
* ``budget`` runs last over the node sets it covers and may cut below the floors, down to the device
  minimum: a power emergency outranks preferences (precedence safety > budget > carbon > efficiency >
  user limits);
* everything is clamped into the device's constraints.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from wattplane.api.annotations import PodIntent, parse_pod_annotations
from wattplane.api.v1alpha1.energypolicy import BudgetStatus, CarbonStatus, JobProfile
from wattplane.api.v1alpha1.gpunode import GpuTarget
from wattplane.planner import budget as budgeting
from wattplane.planner.carbon import WeightDecision, carbon_limit, carbon_weight
from wattplane.planner.context import PlanContext
from wattplane.planner.efficiency import efficiency_limit
from wattplane.planner.jobs import job_id
from wattplane.planner.limits import lower_bound, static_cap
from wattplane.planner.selection import Selection, choose_policy, rank_key
from wattplane.planner.snapshot import FleetSnapshot, GpuView, PodKey, PolicyView

#: The carbon weight is applied in steps of 1/_WEIGHT_STEPS.
_WEIGHT_STEPS = 20

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
    jobs: Mapping[str, JobView] = field(default_factory=dict)


@dataclass
class _PolicyTally:
    pods: set[str] = field(default_factory=set)
    gpus: set[str] = field(default_factory=set)
    shadowed: set[str] = field(default_factory=set)
    jobs: set[str] = field(default_factory=set)
    unprofiled: set[str] = field(default_factory=set)
    allocated: float = 0.0
    measured: float = 0.0
    clamped: int = 0


@dataclass(frozen=True)
class _Proposal:
    watts: float
    section: str
    reason: str
    clamped: bool = False


@dataclass(frozen=True)
class _Decision:
    target: GpuTarget
    clamped: bool


def _sets_pod_limits(policy: PolicyView) -> bool:
    spec = policy.spec
    return any(section is not None for section in (spec.limits, spec.efficiency, spec.carbon, spec.stragglers))


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

    def select(self) -> None:
        # A budget-only policy covers nodes, not pods: it must not take pods away from the policies
        # that set their limits (a policy with no section at all still selects pods, to observe them).
        contenders = [p for p in self.policies if _sets_pod_limits(p) or p.spec.budget is None]
        seen: dict[tuple[object, ...], Selection | None] = {}
        for key in sorted(self.snapshot.pods):
            pod = self.snapshot.pods[key]
            intent = self.intents[key]
            # Selection depends on nothing else: pods with equal labels, namespace and opt-in agree.
            memo = (pod.namespace, tuple(sorted(pod.labels.items())), intent.policy, intent.opt_out, pod.active)
            if memo in seen:
                selection = seen[memo]
            else:
                ns_labels = self.snapshot.namespace_labels.get(pod.namespace, {})
                selection = seen[memo] = choose_policy(pod, intent, ns_labels, contenders)
            if selection is None:
                continue
            self.governing[key] = selection.winner
            self.jobs_of[key] = job_id(pod, self.intents[key])
            tally = self.tallies[selection.winner.name]
            tally.pods.add(_pod_name(key))
            tally.jobs.add(self.jobs_of[key])
            for loser in selection.losers:
                self.tallies[loser.name].shadowed.add(_pod_name(key))

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
        if spec.efficiency is not None:
            watts, why = efficiency_limit(profile)
            if watts is None:
                self.tallies[policy.name].unprofiled.add(job)
            else:
                profiling = profile is not None and profile.state == "Profiling"
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
            dry_run=spec.dry_run,
        )
        return _Decision(target, clamped)

    def _carbon_and_stragglers(
        self, gpu: GpuView, key: PodKey, policy: PolicyView, profile: JobProfile | None
    ) -> list[_Proposal]:
        out: list[_Proposal] = []
        spec = policy.spec
        decision = self.carbon.get(policy.name)
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

    node_budgets, budget_reports = _apply_budgets(rnd, decisions)

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
        jobs=_jobs(rnd, job_gpus),
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


def _apply_budgets(rnd: _Round, decisions: dict[str, _Decision]) -> tuple[dict[str, float], dict[str, _BudgetOutcome]]:
    """Share each budget over its nodes; cut GPU targets where the share forces it.

    A node belongs to at most one budget: the highest-ranked policy whose node selector matches it.
    """
    snapshot = rnd.snapshot
    claimed: set[str] = set()
    node_budgets: dict[str, float] = {}
    outcomes: dict[str, _BudgetOutcome] = {}
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
        for node in covered:
            for gpu in sorted(gpus_by_node[node], key=lambda g: g.index):
                decision = decisions.get(gpu.uuid)
                entries.append(
                    budgeting.BudgetGpu(
                        node=node,
                        uuid=gpu.uuid,
                        priority_rank=_budget_rank(rnd, gpu),
                        floor_watts=_budget_floor(gpu),
                        # Without a target the GPU may run at its default; its current limit may be
                        # a past cut, and using it would keep the node's share from ever recovering.
                        ceiling_watts=decision.target.power_limit_watts if decision is not None else gpu.default_watts,
                        # A GPU the agent's budget loop holds down draws what it is allowed, not what it
                        # wants: its demand is its ceiling (else shares would shrink with every cut).
                        measured_watts=None if gpu.budget_limited else gpu.power_watts,
                    )
                )
        previous = {n: rnd.context.previous_node_budgets[n] for n in covered if n in rnd.context.previous_node_budgets}
        allocation = budgeting.allocate(spec.watts, entries, previous, spec.hysteresis_fraction)
        cut = 0
        by_uuid = {g.uuid: g for n in covered for g in gpus_by_node[n]}
        for uuid, raw_cap in sorted(allocation.caps.items()):
            gpu = by_uuid[uuid]
            cap = max(raw_cap, gpu.min_watts)  # an idle GPU's floor may be its draw, below any settable limit
            decision = decisions.get(uuid)
            if decision is not None and cap >= decision.target.power_limit_watts:
                continue
            cut += 1
            reason = f"EnergyPolicy {policy.name}: budget {spec.watts:g} W over {len(covered)} node(s) → {cap:g} W"
            if decision is None:
                target = GpuTarget(
                    uuid=uuid,
                    power_limit_watts=cap,
                    policy=policy.name,
                    job="",
                    priority=0,
                    reason=reason,
                    dry_run=policy.spec.dry_run,
                )
            else:
                target = _cut_target(decision.target, cap, reason, policy)
            decisions[uuid] = _Decision(target, False)
        if not policy.spec.dry_run:
            for node, share in allocation.node_shares.items():
                if share > 0:  # a GpuNode budget must be positive; a zero share leaves the node to its caps
                    node_budgets[node] = share
        measured = sum(g.power_watts for n in covered for g in gpus_by_node[n])
        status = BudgetStatus(
            watts=spec.watts,
            allocated_watts=round(sum(allocation.node_shares.values()), 3),
            measured_watts=round(measured, 3),
            minimum_watts=round(allocation.minimum_watts, 3),
            nodes=len(covered),
            cut_gpus=cut,
        )
        met = allocation.feasible and measured <= spec.watts * (1 + spec.hysteresis_fraction)
        outcomes[policy.name] = _BudgetOutcome(status, met, allocation.message)
    return node_budgets, outcomes


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


def _cut_target(target: GpuTarget, watts: float, reason: str, policy: PolicyView) -> GpuTarget:
    """``target`` cut to ``watts`` by the budget of ``policy`` (job and priority kept for the agent)."""
    return target.model_copy(
        update={
            "power_limit_watts": watts,
            "reason": f"{reason} (was {target.power_limit_watts:g} W: {target.reason})",
            "dry_run": target.dry_run or policy.spec.dry_run,
        }
    )


def _report(policy: PolicyView, rnd: _Round, budget: _BudgetOutcome | None) -> PolicyReport:
    tally = rnd.tallies[policy.name]
    spec = policy.spec
    pods = tuple(sorted(tally.pods))
    if not _sets_pod_limits(policy) and spec.budget is None:
        reason, message = "NothingToEnforce", "the policy has no section that sets a limit"
    elif not pods and spec.budget is None:
        reason, message = "NoMatchingPods", "no running pod is selected by this policy"
    else:
        reason = "DryRun" if spec.dry_run else "Planned"
        message = f"governs {len(pods)} pod(s) in {len(tally.jobs)} job(s) on {len(tally.gpus)} GPU(s)"
        if tally.clamped:
            message += f"; {tally.clamped} limit(s) clamped to device constraints"
    if tally.shadowed:
        message += f"; {len(tally.shadowed)} selected pod(s) governed by a higher-ranked policy"
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
