"""One GPU's target: the proposals of the sections of the policy that governs its pod, composed.

How the sections compose on one GPU (design.md §3):

* each section proposes a limit: ``limits`` (static cap), ``efficiency`` (the job's Zeus probe or
  optimum), ``carbon`` (efficient + w·(max − efficient), or the job's budgeted schedule),
  ``stragglers`` (the pod's Perseus cap);
* the tightest proposal wins, but efficiency, carbon and stragglers never go below the policy's floor
  (``limits.minWatts``/``minFractionOfDefault``, the pod's ``min-power-watts``): those are the user's
  stated tolerance, and the optimisations respect it;
* while a job's profile is being measured the probe limit stands alone (apart from static caps), or the
  measurement would be of something else;
* everything is clamped into the device's constraints.

A decision depends on the GPU's fixed facts (model and power range, pods, MIG), on its pods' state
(governing policy, intent, job) and on a few per-policy and per-job inputs of the round; never on
other GPUs. That is what lets :class:`wattplane.planner.plan.Planner` re-decide only the GPUs whose
inputs changed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

from wattplane.api.annotations import PodIntent
from wattplane.api.v1alpha1.energypolicy import ClockRangeMHz, JobCarbonBudget, JobProfile, PowerLimits
from wattplane.api.v1alpha1.gpunode import GpuTarget, PolicySection
from wattplane.planner import carbonbudget
from wattplane.planner.carbon import WeightDecision, carbon_limit
from wattplane.planner.context import PlanContext, ServingKnob
from wattplane.planner.efficiency import efficiency_limit
from wattplane.planner.limits import lower_bound, static_cap
from wattplane.planner.snapshot import GpuView, PodKey, PolicyView

#: The carbon weight is applied in steps of 1/_WEIGHT_STEPS.
_WEIGHT_STEPS: Final = 20

#: Reported binding section, in precedence order (first wins a tie).
_PRECEDENCE: Final = ("carbon", "serving", "stragglers", "efficiency", "limits")

#: Every field of a target, with its default: targets are built without pydantic's validation (all
#: inputs are validated already), which would otherwise be the dearest step of a round.
_TARGET_DEFAULTS: Final[dict[str, Any]] = {
    name: field.get_default(call_default_factory=True) for name, field in GpuTarget.model_fields.items()
}


@dataclass(frozen=True)
class PodState:
    """What the round decided about one pod before looking at its GPUs."""

    intent: PodIntent
    #: ``namespace/job`` (see :func:`wattplane.planner.jobs.job_id`).
    job: str
    #: The policy that sets the pod's limits, if any.
    governing: PolicyView | None = None
    #: Policies that select the pod but lost it to ``governing``.
    losers: tuple[PolicyView, ...] = ()
    #: Observe-only policies that select the pod (they set nothing).
    watchers: tuple[PolicyView, ...] = ()


@dataclass(frozen=True)
class Decision:
    """A GPU's target, and whether the device's constraints clamped it."""

    target: GpuTarget
    clamped: bool
    #: The limit the policy's other sections set, before a quota cap: what the quota shares up to.
    ceiling_watts: float = 0.0


@dataclass(frozen=True)
class _Limit:
    """A policy's limit for one kind of GPU: ``section`` is ``None`` when it proposes none."""

    watts: float
    section: PolicySection | None
    reason: str
    clamped: bool
    #: The efficiency section has no profile to go by.
    unprofiled: bool
    #: The other sections' limit, when a quota cap undercuts it.
    ceiling: float | None = None


_UNKNOWN: Final = _Limit(0.0, None, "unknown", False, False)


@dataclass(frozen=True)
class _Proposal:
    watts: float
    section: PolicySection
    reason: str
    clamped: bool = False


def budgeted(policy: PolicyView) -> bool:
    """Whether the policy's carbon section spends per-job slowdown budgets (mode ``Budgeted``)."""
    return policy.spec.carbon is not None and policy.spec.carbon.mode == "Budgeted"


def _stepped(weight: float) -> float:
    """The carbon weight as applied: in steps of 1/_WEIGHT_STEPS (a target depends on this, not on w)."""
    return round(weight * _WEIGHT_STEPS) / _WEIGHT_STEPS


def carbon_key(decision: WeightDecision | None) -> tuple[object, ...] | None:
    """What of a carbon weight decision a target depends on: the stepped weight and the reason.

    The rest (the exact percentile, which slides with the clock) only shows in the policy status.
    """
    if decision is None:
        return None
    weight = None if decision.weight is None else _stepped(decision.weight)
    return (weight, decision.reason)


def floor_watts(gpu: GpuView, policy: PolicyView, intent: PodIntent) -> float | None:
    """The lowest limit the optimising sections may set: the policy's minimum and the pod's."""
    floors = [intent.min_power_watts] if intent.min_power_watts is not None else []
    if policy.spec.limits is not None:
        bound = lower_bound(policy.spec.limits, gpu)
        if bound is not None:
            floors.append(bound)
    return max(floors) if floors else None


def budget_decision(
    gpu: GpuView, job: str, policy: PolicyView, intent: PodIntent, context: PlanContext, weight: WeightDecision | None
) -> carbonbudget.BudgetDecision:
    """A budgeted job's decision for the round: its account settled, then its plan.

    ``gpu`` is the job's reference GPU (every GPU of a job runs the same plan): its model picks the
    curve and its limit in force is what the account is charged for the time since the last round.
    """
    spec = policy.spec.carbon
    assert spec is not None
    slowdown = intent.max_slowdown if intent.max_slowdown is not None else spec.max_slowdown
    account = context.carbon_budgets.get(job)
    if account is None or account.gpu_model != gpu.model:
        account = JobCarbonBudget(job=job, gpu_model=gpu.model)
    account = carbonbudget.settle(account, gpu.limit_watts, context.now, max_slowdown=slowdown)
    floor = floor_watts(gpu, policy, intent)
    lo = min(max(floor if floor is not None else gpu.min_watts, gpu.min_watts), gpu.max_watts)
    profile = context.profiles.get((job, gpu.model))
    curve = carbonbudget.profile_curve(profile, gpu.default_watts) or carbonbudget.prior_curve(gpu.default_watts)
    usable = weight is not None and not weight.stale and weight.intensity is not None
    return carbonbudget.decide(
        account,
        curve=curve,
        lo=lo,
        hi=gpu.max_watts,
        signal=context.carbon.get(policy.name),
        signal_usable=usable,
        fallback_max=spec.fallback == "Max",
        lookahead_hours=spec.lookahead_hours,
        job_age_s=sum(b.seconds for b in account.time_at_limits),
        now=context.now,
        current_watts=gpu.limit_watts,
    )


class Decider:
    """Decides GPU targets for one round's context.

    Args:
        context: The round's time and signals.
        carbon: Each carbon policy's weight decision this round.
        budgets: Each budgeted job's decision this round.
    """

    def __init__(
        self,
        context: PlanContext,
        carbon: Mapping[str, WeightDecision],
        budgets: Mapping[str, carbonbudget.BudgetDecision],
    ) -> None:
        self.context = context
        self.carbon = carbon
        self.budgets = budgets
        #: Each quota GPU's cap this round, by UUID (:mod:`wattplane.planner.quota`): set by the planner
        #: once the quotas are shared, which needs this decider's :meth:`ceiling` first.
        self.quota_caps: Mapping[str, float] = {}
        #: What a policy proposes for one kind of GPU and one set of job inputs: most GPUs of a
        #: round share one with many others (the same model, policy and no profile of their own).
        self._memo: dict[tuple[object, ...], _Limit | None] = {}

    def decide(
        self, gpu: GpuView, pods: Mapping[PodKey, PodState]
    ) -> tuple[Decision | None, tuple[tuple[str, str], ...]]:
        """The tightest target any governing policy sets on ``gpu`` (shared GPUs may have several).

        Also the ``(policy, job)`` pairs whose efficiency section has no profile to go by.
        """
        if gpu.mig_enabled:
            return None, ()  # MIG boards are never capped per instance (design.md §4)
        best: Decision | None = None
        unprofiled: list[tuple[str, str]] = []
        for key in sorted(gpu.pods):  # sorted: ties must not depend on report order
            state = pods.get(key)
            if state is None or state.governing is None:
                continue
            decision, lacks_profile = self._decide(gpu, key, state, state.governing)
            if lacks_profile:
                unprofiled.append((state.governing.name, state.job))
            if decision is None:
                continue
            if best is None or (decision.target.power_limit_watts, decision.target.policy) < (
                best.target.power_limit_watts,
                best.target.policy,
            ):
                best = decision
        return best, tuple(unprofiled)

    def _decide(self, gpu: GpuView, key: PodKey, state: PodState, policy: PolicyView) -> tuple[Decision | None, bool]:
        spec = policy.spec
        intent = state.intent
        limit = self._limit_of(gpu, key, state, policy)
        knob = self.context.serving_knobs.get(key) if spec.serving is not None else None
        clocks = spec.limits.locked_sm_clock_mhz if spec.limits is not None else None
        if knob is not None and knob.kind == "clock":
            limit, clocks = _serving_clock(limit, clocks, knob, policy, gpu)
        quota = self.quota_caps.get(gpu.uuid) if spec.quota is not None else None
        if quota is not None:
            limit = _quota_limit(limit, quota, policy, gpu)
        if limit is None:
            return None, False
        if limit.section is None:
            return None, limit.unprofiled
        ceiling = limit.ceiling if limit.ceiling is not None else limit.watts
        target = trusted_target(
            uuid=gpu.uuid,
            power_limit_watts=limit.watts,
            locked_clocks_mhz=clocks,
            workload_profile=spec.limits.workload_profile if spec.limits is not None else None,
            power_smoothing=spec.limits.power_smoothing if spec.limits is not None else None,
            policy=policy.name,
            job=state.job,
            priority=intent.priority,
            reason=limit.reason,
            section=limit.section,
            dry_run=spec.dry_run,
        )
        return Decision(target, limit.clamped, ceiling), limit.unprofiled

    def ceiling(self, gpu: GpuView, key: PodKey, state: PodState, policy: PolicyView) -> float:
        """The limit ``policy``'s sections other than its quota set on ``gpu`` (its default without one)."""
        limit = self._limit_of(gpu, key, state, policy)
        watts = limit.watts if limit is not None and limit.section is not None else gpu.default_watts
        return min(max(watts, gpu.min_watts), gpu.max_watts)

    def _limit_of(self, gpu: GpuView, key: PodKey, state: PodState, policy: PolicyView) -> _Limit | None:
        """What ``policy``'s sections (its quota aside) propose for ``gpu`` under ``key``, memoised."""
        spec = policy.spec
        intent = state.intent
        profile = self.context.profiles.get((state.job, gpu.model))
        budget = self.budgets.get(state.job) if budgeted(policy) else None
        straggler = self.context.straggler_caps.get(key) if spec.stragglers is not None else None
        knob = self.context.serving_knobs.get(key) if spec.serving is not None else None
        serving = (knob.value, knob.reason) if knob is not None and knob.kind == "cap" else None
        # Everything the limit depends on; objects of the round (profile, budget) by identity.
        inputs = (
            policy.name,
            gpu.model,
            gpu.min_watts,
            gpu.max_watts,
            gpu.default_watts,
            intent.min_power_watts,
            id(profile) if profile is not None else None,
            id(budget) if budget is not None else None,
            straggler,
            serving,
        )
        limit = self._memo.get(inputs, _UNKNOWN)
        if limit is _UNKNOWN:
            limit = self._memo[inputs] = self._limit(gpu, policy, intent, profile, budget, straggler, serving)
        return limit

    def _limit(
        self,
        gpu: GpuView,
        policy: PolicyView,
        intent: PodIntent,
        profile: JobProfile | None,
        budget: carbonbudget.BudgetDecision | None,
        straggler: float | None,
        serving: tuple[float, str] | None = None,
    ) -> _Limit | None:
        spec = policy.spec
        proposals: list[_Proposal] = []
        profiling = False
        unprofiled = False
        if spec.limits is not None:
            cap = static_cap(spec.limits, gpu)
            if cap is not None:
                proposals.append(_Proposal(cap.watts, "limits", cap.reason, cap.clamped))
        if spec.efficiency is not None:
            watts, why = efficiency_limit(profile)
            if watts is None:
                unprofiled = True
            else:
                profiling = profile is not None and profile.state == "Profiling"
                # Under a budgeted carbon section the profile feeds the schedule, which already runs
                # the job as efficiently as its budget allows: the Zeus optimum would only undercut it.
                if profiling or budget is None:
                    proposals.append(_Proposal(watts, "efficiency", why))
        if not profiling:
            proposals.extend(self._carbon_and_stragglers(gpu, policy, profile, budget, straggler))
            if serving is not None:
                proposals.append(_Proposal(serving[0], "serving", f"serving, {serving[1]}"))
        if not proposals and _sets_knobs(spec.limits):
            # A clock lock, a workload profile or power smoothing alone still needs a target to ride
            # on: the limit stays where the device has it by default.
            watts, clamped, reason = clamp(gpu.default_watts, f"EnergyPolicy {policy.name}: device knobs only", gpu)
            return _Limit(watts, "limits", reason, clamped, unprofiled)
        if not proposals:
            return _Limit(0.0, None, "", False, unprofiled) if unprofiled else None
        floor = floor_watts(gpu, policy, intent)
        chosen = min(proposals, key=lambda p: (p.watts, _PRECEDENCE.index(p.section)))
        watts, reason = chosen.watts, f"EnergyPolicy {policy.name}: {chosen.reason}"
        if chosen.section != "limits" and floor is not None and watts < floor:
            watts, reason = floor, f"{reason}, raised to the floor {floor:g} W"
        watts, clamped, reason = clamp(watts, reason, gpu)
        clamped = clamped or (chosen.clamped and watts == chosen.watts)
        return _Limit(watts, chosen.section, reason, clamped, unprofiled)

    def _carbon_and_stragglers(
        self,
        gpu: GpuView,
        policy: PolicyView,
        profile: JobProfile | None,
        budget: carbonbudget.BudgetDecision | None,
        straggler: float | None,
    ) -> list[_Proposal]:
        out: list[_Proposal] = []
        spec = policy.spec
        if budget is not None and budget.watts is not None:
            out.append(_Proposal(budget.watts, "carbon", budget.reason))
        decision = None if budgeted(policy) else self.carbon.get(policy.name)
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
            weight = _stepped(decision.weight)
            watts = carbon_limit(efficient, gpu.max_watts, weight)
            out.append(_Proposal(watts, "carbon", f"{decision.reason}; efficient = {basis} → {watts:.0f} W"))
        if straggler is not None:
            out.append(
                _Proposal(straggler, "stragglers", f"Perseus: waits for the job's slowest pod → {straggler:g} W")
            )
        return out


def _sets_knobs(limits: PowerLimits | None) -> bool:
    """Whether a ``limits`` section sets a device knob besides the power limit."""
    return limits is not None and any(
        knob is not None for knob in (limits.locked_sm_clock_mhz, limits.workload_profile, limits.power_smoothing)
    )


def _serving_clock(
    limit: _Limit | None, clocks: ClockRangeMHz | None, knob: ServingKnob, policy: PolicyView, gpu: GpuView
) -> tuple[_Limit, ClockRangeMHz | None]:
    """``limit`` and the clock lock with the pod's serving clock knob on top (the lower bound wins).

    A clock knob bounds the SM clock from above (the lower bound stays at the device's minimum, so an
    idle server still clocks down). A serving cap knob is a proposal like any other section's (see
    :meth:`Decider._limit`); a clock knob is not a power limit, so without another section's limit the
    GPU keeps its default one.
    """
    top = int(knob.value)
    if clocks is None or top < clocks.max_mhz:
        clocks = ClockRangeMHz.model_construct(min_mhz=min(clocks.min_mhz, top) if clocks else 0, max_mhz=top)
    if limit is not None and limit.section is not None:
        return replace(limit, reason=f"{limit.reason}; SM clock at most {top} MHz (serving: {knob.reason})"), clocks
    watts, clamped, reason = clamp(gpu.default_watts, f"EnergyPolicy {policy.name}: serving, {knob.reason}", gpu)
    return _Limit(watts, "serving", reason, clamped, False), clocks


def _quota_limit(limit: _Limit | None, cap: float, policy: PolicyView, gpu: GpuView) -> _Limit:
    """``limit`` with the policy's quota cap on top: the cap wins when it is tighter.

    A policy whose only section is the quota proposes nothing else: its GPUs share the quota up to
    their default limits.
    """
    ceiling = limit.watts if limit is not None and limit.section is not None else gpu.default_watts
    ceiling = min(max(ceiling, gpu.min_watts), gpu.max_watts)
    if cap >= ceiling and limit is not None and limit.section is not None:
        return limit
    spec = policy.spec.quota
    assert spec is not None
    watts, clamped, reason = clamp(
        min(cap, ceiling),
        f"EnergyPolicy {policy.name}: share of the {spec.watts:g} W quota → {min(cap, ceiling):g} W",
        gpu,
    )
    unprofiled = limit.unprofiled if limit is not None else False
    return _Limit(watts, "quota", reason, clamped, unprofiled, ceiling)


def clamp(watts: float, reason: str, gpu: GpuView) -> tuple[float, bool, str]:
    """``watts`` inside the device range, at milliwatt resolution (bounds are kept exact)."""
    if watts < gpu.min_watts:
        return gpu.min_watts, True, f"{reason}, raised to device minimum {gpu.min_watts:g} W"
    if watts > gpu.max_watts:
        return gpu.max_watts, True, f"{reason}, lowered to device maximum {gpu.max_watts:g} W"
    if watts in (gpu.min_watts, gpu.max_watts):
        return watts, False, reason
    return min(max(round(watts, 3), gpu.min_watts), gpu.max_watts), False, reason


def trusted_target(**values: Any) -> GpuTarget:
    """A :class:`GpuTarget` from values the planner has already validated, without re-validating.

    What ``model_construct`` builds (an equal object, with the same ``model_fields_set``), set up
    through pydantic's documented instance attributes at a third of its cost: a round over a large
    fleet builds one per GPU. :class:`GpuTarget` has no private attributes and forbids extras.
    """
    target = _new(GpuTarget)
    _set(target, "__dict__", _TARGET_DEFAULTS | values)
    _set(target, "__pydantic_fields_set__", set(values))
    _set(target, "__pydantic_extra__", None)
    _set(target, "__pydantic_private__", None)
    return target


_new = object.__new__
_set = object.__setattr__
