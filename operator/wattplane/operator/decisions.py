"""Pure decisions of a planning round: which GpuNode specs to write, what policy status to show.

Only nodes whose targets changed get a new plan generation; a node whose plan is unchanged is only
touched to renew ``issuedAt`` before the agents' fail-safe TTL could fire.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from wattplane.api.conditions import Condition, set_condition
from wattplane.api.v1alpha1.energypolicy import (
    SHADOWED_LISTED,
    BudgetStatus,
    EnergyPolicyStatus,
    JobCarbonBudget,
    JobProfile,
    ServingEnergy,
    ShadowedPod,
)
from wattplane.api.v1alpha1.gpunode import BudgetPriority, GpuNodeSpec, GpuTarget
from wattplane.operator.views import PolicyParse
from wattplane.planner.efficiency import parse_time
from wattplane.planner.plan import PolicyReport

#: A plan is renewed once a third of its TTL has passed (plus up to RENEW_SPREAD, by node), leaving
#: at least half of the TTL as slack for failed renewals.
RENEW_FRACTION = 1 / 3
RENEW_SPREAD = 1 / 6
#: Shadowed pods an event names (events stay short; status lists more, the count covers all).
SHADOWED_IN_EVENT = 10


def node_spec_update(
    current: GpuNodeSpec,
    targets: Sequence[GpuTarget],
    *,
    now: datetime,
    ttl_seconds: int,
    node_budget_watts: float | None = None,
    budget_priorities: Sequence[BudgetPriority] = (),
    node: str = "",
    budget_ramp_watts_per_second: float | None = None,
) -> GpuNodeSpec | None:
    """The spec to write for a node, or ``None`` when the current one stands."""
    # To the 0.1 W, rounded down: the shares of a budget must not add up to more than the budget
    # (a share is positive, so the smallest is 0.1 W).
    budget = None if node_budget_watts is None else max(0.1, math.floor(node_budget_watts * 10.0 + 1e-6) / 10.0)
    # A rate is written to the mW/s: enough for any ramp, and it stays put between rounds.
    ramp = None if budget_ramp_watts_per_second is None else max(0.001, round(budget_ramp_watts_per_second, 3))
    changed = (
        list(targets) != list(current.gpus)
        or current.ttl_seconds != ttl_seconds
        or current.node_budget_watts != budget
        or current.node_budget_ramp_watts_per_second != ramp
        or list(budget_priorities) != list(current.budget_priorities or ())
    )
    if changed:
        return GpuNodeSpec(
            plan_generation=current.plan_generation + 1,
            issued_at=now,
            ttl_seconds=ttl_seconds,
            node_budget_watts=budget,
            node_budget_ramp_watts_per_second=ramp,
            budget_priorities=list(budget_priorities) or None,
            gpus=list(targets),
        )
    if renewal_due(current, now, ttl_seconds, node=node):
        if not current.gpus and current.issued_at is None:
            return None  # nothing planned, nothing to keep alive
        return current.model_copy(update={"issued_at": now})
    return None


def window_event(previous: str | None, budget: BudgetStatus | None) -> tuple[str, str, str] | None:
    """The event to post when the window setting a budget's target changes: ``(reason, message, type)``."""
    current = budget.window if budget is not None else None
    if current == previous:
        return None
    if current is None:
        return "BudgetWindowEnded", f"window {previous} ended: back to the standing budget (or none)", "Normal"
    assert budget is not None
    ramp = f", ramp {budget.ramp_watts_per_second:g} W/s" if budget.ramp_watts_per_second else ""
    return (
        "BudgetWindowStarted",
        f"window {current}: target {budget.watts:.0f} W over {budget.nodes} node(s){ramp};"
        f" covered GPUs draw {budget.measured_watts:.0f} W",
        "Normal",
    )


def quota_caps_in_force(specs: Iterable[GpuNodeSpec]) -> dict[str, float]:
    """The quota caps the written plans hold, by GPU UUID (the quota's hysteresis weighs them)."""
    return {t.uuid: t.power_limit_watts for spec in specs for t in spec.gpus if t.section == "quota"}


def renewal_due(current: GpuNodeSpec, now: datetime, ttl_seconds: int, *, node: str = "") -> bool:
    """Whether the plan in force must be renewed now, before the agents' fail-safe TTL could fire.

    After a third of the TTL, plus up to a sixth more by the node's name: plans written in one round
    (all of them, after a start or a policy edit) then come due over a spread of rounds instead of
    all in one, which on a large fleet would be a wave of writes that every other change waits behind.
    The latest renewal still leaves half the TTL of slack.
    """
    fraction = RENEW_FRACTION + RENEW_SPREAD * (zlib.crc32(node.encode()) / 2**32)
    return current.issued_at is None or now - current.issued_at >= timedelta(seconds=ttl_seconds * fraction)


def policy_status(
    parsed: PolicyParse,
    report: PolicyReport | None,
    *,
    now: datetime,
    profiles: Sequence[JobProfile] = (),
    carbon_budgets: Sequence[JobCarbonBudget] = (),
    energy_joules: float | None = None,
    carbon_grams: float | None = None,
    serving: ServingEnergy | None = None,
    grid_problem: str | None = None,
) -> EnergyPolicyStatus:
    """The status an EnergyPolicy should show after this round.

    ``profiles`` are the policy's Zeus profiles and ``carbon_budgets`` its jobs' slowdown accounts (kept
    in status so a restarted operator resumes them); ``energy_joules``/``carbon_grams`` its running
    totals (``None``: keep what status has), ``serving`` its inference pods' joules per output
    token (``None``: keep what status has), and ``grid_problem`` what keeps its demand-response VEN
    from working (it makes the policy ``Degraded``: events the VTN sends may be missed).
    """
    previous = EnergyPolicyStatus.model_validate(parsed.status or {})
    conditions = list(previous.conditions)
    if parsed.error is not None or report is None:
        conditions = set_condition(
            conditions,
            Condition(
                type="Ready",
                status="False",
                reason="InvalidSpec",
                message=parsed.error or "policy could not be planned",
                observed_generation=parsed.generation,
            ),
            now=now,
        )
        return EnergyPolicyStatus(observed_generation=parsed.generation, conditions=conditions)
    conditions = set_condition(
        conditions,
        Condition(
            type="Ready",
            status="True" if report.ready else "False",
            reason=report.reason,
            message=report.message,
            observed_generation=parsed.generation,
        ),
        now=now,
    )
    degraded: list[tuple[str, str]] = []
    if report.carbon is not None:
        fresh = report.carbon.intensity is not None and not report.carbon.stale
        conditions = _condition(
            conditions,
            "SignalFresh",
            fresh,
            "Fresh" if fresh else ("NoSignal" if report.carbon.intensity is None else "Stale"),
            report.carbon.message or report.carbon.source,
            parsed.generation,
            now,
        )
        if not fresh:
            degraded.append(("CarbonSignal", f"carbon signal {report.carbon.source or '?'}: {report.carbon.message}"))
    # (condition, met, reason when met, reason when not, message, Degraded reason)
    limits = (
        ("BudgetMet", report.budget_met, "WithinBudget", "OverBudget", report.budget_message, "BudgetNotMet"),
        ("QuotaMet", report.quota_met, "WithinQuota", "QuotaInfeasible", report.quota_message, "QuotaNotMet"),
    )
    for type_, met, yes, no, message, degraded_reason in limits:
        if met is None:
            continue
        conditions = _condition(conditions, type_, met, yes if met else no, message, parsed.generation, now)
        if not met:
            degraded.append((degraded_reason, message))
    if grid_problem:
        degraded.append(("DemandResponse", grid_problem))
    if report.unprofiled_jobs:
        jobs = ", ".join(report.unprofiled_jobs[:5])
        degraded.append(("NoProgressSignal", f"jobs without a usable wattplane.io/progress-metric: {jobs}"))
    conditions = _condition(
        conditions,
        "Degraded",
        bool(degraded),
        degraded[0][0] if degraded else "AsPlanned",
        "; ".join(m for _, m in degraded) if degraded else "every section has what it needs",
        parsed.generation,
        now,
    )
    return EnergyPolicyStatus(
        observed_generation=parsed.generation,
        conditions=conditions,
        matched_pods=len(report.pods),
        matched_gpus=report.gpus,
        matched_jobs=report.jobs,
        allocated_watts=report.allocated_watts,
        measured_watts=round(report.measured_watts),
        pods=list(report.pods[:200]),
        shadowed_pods=len(report.shadowed_by),
        shadowed=[ShadowedPod(pod=p, governed_by=w) for p, w in report.shadowed_by[:SHADOWED_LISTED]],
        carbon=report.carbon,
        budget=report.budget,
        quota=report.quota,
        profiles=list(profiles)[:500],
        carbon_budgets=kept_accounts(carbon_budgets, previous.carbon_budgets, now)[:500],
        energy_joules=round(energy_joules if energy_joules is not None else previous.energy_joules, 1),
        carbon_grams=round(carbon_grams if carbon_grams is not None else previous.carbon_grams, 3),
        serving=serving if serving is not None else previous.serving,
    )


def shadow_event(
    previous: Sequence[tuple[str, str]], current: Sequence[tuple[str, str]]
) -> tuple[str, str, str] | None:
    """``(reason, message, type)`` of the event to post on a policy whose shadowed pods changed, if any.

    A policy losing pods to a higher-ranked one is easy to miss (its conditions stay Ready), so every
    change of *which* pods it lost, or to whom, is a Warning naming them; losing none any more is a
    Normal event.
    """
    if tuple(previous) == tuple(current):
        return None
    if not current:
        return "PodsNoLongerShadowed", "no selected pod is governed by another policy any more", "Normal"
    named = ", ".join(f"{pod} (governed by {winner})" for pod, winner in current[:SHADOWED_IN_EVENT])
    more = f" and {len(current) - SHADOWED_IN_EVENT} more" if len(current) > SHADOWED_IN_EVENT else ""
    message = (
        f"{len(current)} pod(s) this policy selects are governed by a higher-ranked policy, which sets "
        f"their limits instead: {named}{more}"
    )
    return "PodsShadowed", message, "Warning"


def _condition(
    conditions: list[Condition], type_: str, ok: bool, reason: str, message: str, generation: int, now: datetime
) -> list[Condition]:
    return set_condition(
        conditions,
        Condition(
            type=type_,
            status="True" if ok else "False",
            reason=reason,
            message=message[:1000],
            observed_generation=generation,
        ),
        now=now,
    )


def status_material(status: Mapping[str, Any]) -> Mapping[str, Any]:
    """The parts of a policy status whose change is written at once (measurements wait).

    A job's carbon-budget account accrues time every round, so only its plan is material: were the
    account material, every round would write the status, and the write's own watch event would
    start the next round (the operator would replan and write several times a second).
    """
    material = {k: v for k, v in status.items() if k not in _MEASUREMENTS}
    budget = status.get("budget")
    if isinstance(budget, Mapping):  # what the budget covers is its footing, not a measurement
        material["budget"] = {k: budget.get(k) for k in ("watts", "nodes")}
    if isinstance(material.get("carbonBudgets"), list):
        material["carbonBudgets"] = [_account_material(a) for a in material["carbonBudgets"]]
    return material


def _account_material(account: object) -> object:
    """What makes a change of a carbon-budget account worth writing at once: its job, budget and plan.

    The first planned step always starts now, so only its limit counts; the later steps come from the
    forecast and keep their times from round to round.
    """
    if not isinstance(account, Mapping):
        return account
    planned = [p for p in account.get("planned") or [] if isinstance(p, Mapping)]
    steps = [p.get("watts") for p in planned[:1]] + [(p.get("start"), p.get("watts")) for p in planned[1:]]
    fixed = {k: account.get(k) for k in ("job", "gpuModel", "maxSlowdown", "curve")}
    return {**fixed, "planned": steps}


#: Status fields that change with every measurement; written at most every ``status_refresh_s``.
_MEASUREMENTS = frozenset({"measuredWatts", "energyJoules", "carbonGrams", "budget", "carbon", "serving"})


#: How long a job's slowdown account outlives the job's absence from the plan (a pod restarting, a
#: round that ran before the watches caught up): the job finds its account again when it is back.
ACCOUNT_GRACE = timedelta(hours=1)


def kept_accounts(
    current: Sequence[JobCarbonBudget], previous: Sequence[JobCarbonBudget], now: datetime
) -> list[JobCarbonBudget]:
    """This round's accounts, plus earlier ones of jobs absent this round for less than :data:`ACCOUNT_GRACE`."""
    kept = list(current)
    present = {a.job for a in current}
    for account in previous:
        if account.job in present:
            continue
        updated = parse_time(account.updated_at)
        if updated is not None and now - updated < ACCOUNT_GRACE:
            kept.append(account)
    return kept
