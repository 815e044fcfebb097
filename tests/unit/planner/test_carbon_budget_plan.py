"""The budgeted carbon section inside a planning round: targets, accounts across rounds, overrides."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from wattplane.api.v1alpha1.energypolicy import EnergyPolicySpec, JobProfile, ProfilePoint
from wattplane.planner.context import CarbonInput, PlanContext
from wattplane.planner.plan import Plan, plan
from wattplane.planner.snapshot import FleetSnapshot, GpuView, PodView, PolicyView

NOW = datetime(2024, 3, 1, 12, tzinfo=UTC)
HOUR = timedelta(hours=1)
JOB = "ml/train"
SOURCE = {"provider": "trace", "zone": "sim"}


def gpu(limit: float = 300.0) -> GpuView:
    return GpuView(
        node="node-a",
        uuid="GPU-0",
        index=0,
        model="A40",
        min_watts=100.0,
        max_watts=300.0,
        default_watts=300.0,
        power_watts=250.0,
        limit_watts=limit,
        pods=(("ml", "p0"),),
    )


def pod(**annotations: str) -> PodView:
    marks = {"wattplane.io/job": "train"} | {f"wattplane.io/{k.replace('_', '-')}": v for k, v in annotations.items()}
    return PodView(namespace="ml", name="p0", node="node-a", labels={"team": "a"}, annotations=marks)


def policy(**carbon: Any) -> PolicyView:
    spec = {
        "selector": {"podSelector": {"matchLabels": {"team": "a"}}},
        "carbon": {"mode": "Budgeted", "source": SOURCE} | carbon,
        "limits": {"minFractionOfDefault": 0.5},
    }
    return PolicyView(name="green", spec=EnergyPolicySpec.model_validate(spec), generation=1)


def grid(values: list[float], at: datetime = NOW) -> CarbonInput:
    return CarbonInput(
        intensity=values[0], time=at, forecast=tuple((at + HOUR * i, v) for i, v in enumerate(values[1:], start=1))
    )


def round_(view: PolicyView, context: PlanContext, *, limit: float = 300.0, **annotations: str) -> Plan:
    snapshot = FleetSnapshot(gpus=(gpu(limit),), pods={("ml", "p0"): pod(**annotations)}, nodes=("node-a",))
    return plan(snapshot, [view], context)


def test_a_budgeted_policy_sets_a_carbon_target_and_opens_the_jobs_account() -> None:
    result = round_(policy(), PlanContext(now=NOW, carbon={"green": grid([300.0] * 24)}))
    (target,) = result.nodes["node-a"]
    assert target.section == "carbon" and "carbon budget" in target.reason
    assert 150.0 <= target.power_limit_watts <= 300.0  # the floor of the policy holds
    account = result.carbon_budgets[JOB]
    assert account.max_slowdown == 0.025 and account.curve == "prior" and account.planned
    assert result.jobs[JOB].policy == "green"


def test_the_account_carries_over_rounds_and_charges_the_limit_in_force() -> None:
    view = policy()
    first = round_(view, PlanContext(now=NOW, carbon={"green": grid([300.0] * 24)}))
    later = NOW + timedelta(seconds=600)
    second = round_(
        view,
        PlanContext(now=later, carbon={"green": grid([300.0] * 24, later)}, carbon_budgets=first.carbon_budgets),
        limit=200.0,
    )
    account = second.carbon_budgets[JOB]
    assert [(b.watts, b.seconds) for b in account.time_at_limits] == [(200.0, 600.0)]
    assert account.used_seconds > 0 and account.allowed_seconds > 0


def test_the_pods_max_slowdown_overrides_the_policys() -> None:
    result = round_(
        policy(maxSlowdown=0.025), PlanContext(now=NOW, carbon={"green": grid([300.0] * 24)}), max_slowdown="0.1"
    )
    assert result.carbon_budgets[JOB].max_slowdown == 0.1


def test_a_finished_profile_prices_the_account_and_replaces_the_zeus_optimum() -> None:
    view = policy()
    view = replace(
        view,
        spec=view.spec.model_copy(
            update={"efficiency": EnergyPolicySpec.model_validate({"efficiency": {"eta": 1.0}}).efficiency}
        ),
    )
    points = [
        ProfilePoint(watts=w, seconds_per_unit=s, joules_per_unit=w * s)
        for w, s in ((300, 1.0), (250, 1.01), (200, 1.05), (150, 1.4))
    ]
    profile = JobProfile(job=JOB, gpu_model="A40", state="Done", points=points, chosen_watts=150.0)
    context = PlanContext(now=NOW, carbon={"green": grid([300.0] * 24)}, profiles={(JOB, "A40"): profile})
    result = round_(view, context)
    (target,) = result.nodes["node-a"]
    assert result.carbon_budgets[JOB].curve == "profile"
    assert target.section == "carbon"  # not the eta=1 Zeus optimum at 150 W, which would break the budget
    assert target.power_limit_watts > 150.0


def test_a_stale_signal_with_fallback_max_sets_no_carbon_limit_but_keeps_the_account() -> None:
    stale = replace(grid([300.0] * 24), stale=True)
    result = round_(policy(fallback="Max"), PlanContext(now=NOW, carbon={"green": stale}))
    assert result.nodes["node-a"] == ()
    assert JOB in result.carbon_budgets
