"""Which GpuNode specs a planning round writes, and the status a policy shows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st
from wattplane.api.conditions import Condition
from wattplane.api.v1alpha1.energypolicy import JobCarbonBudget
from wattplane.api.v1alpha1.gpunode import GpuNodeSpec, GpuTarget
from wattplane.operator.decisions import (
    ACCOUNT_GRACE,
    SHADOWED_IN_EVENT,
    kept_accounts,
    node_spec_update,
    policy_status,
    shadow_event,
    status_material,
)
from wattplane.operator.views import policy_parse
from wattplane.planner.plan import PolicyReport

T0 = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
TTL = 600
TARGETS = [GpuTarget(uuid="GPU-0", power_limit_watts=210.0, policy="cap", reason="r")]


def _written(targets: list[GpuTarget] = TARGETS, generation: int = 4) -> GpuNodeSpec:
    return GpuNodeSpec(plan_generation=generation, issued_at=T0, ttl_seconds=TTL, node_budget_watts=900.0, gpus=targets)


def test_unchanged_targets_write_nothing_before_a_third_of_the_ttl() -> None:
    current = _written()
    for elapsed in (0, 1, TTL // 3 - 1):
        update = node_spec_update(
            current, list(TARGETS), now=T0 + timedelta(seconds=elapsed), ttl_seconds=TTL, node_budget_watts=900.0
        )
        assert update is None


def test_unchanged_targets_renew_only_issued_at_after_a_third_of_the_ttl() -> None:
    current = _written()
    now = T0 + timedelta(seconds=TTL // 3)
    renewed = node_spec_update(current, list(TARGETS), now=now, ttl_seconds=TTL, node_budget_watts=900.0)
    assert renewed is not None
    assert renewed.issued_at == now
    assert renewed.model_copy(update={"issued_at": T0}) == current  # nothing else moved
    assert renewed.plan_generation == current.plan_generation


def test_changed_targets_bump_the_generation() -> None:
    current = _written()
    changed = [TARGETS[0].model_copy(update={"power_limit_watts": 180.0})]
    now = T0 + timedelta(seconds=5)
    update = node_spec_update(current, changed, now=now, ttl_seconds=TTL, node_budget_watts=900.0)
    assert update is not None
    assert update.plan_generation == 5
    assert update.issued_at == now
    assert update.gpus == changed
    assert update.node_budget_watts == 900.0


def test_a_new_or_dropped_node_budget_is_a_change() -> None:
    current = _written()
    for budget, expected in ((750.0, 750.0), (None, None)):
        update = node_spec_update(current, list(TARGETS), now=T0, ttl_seconds=TTL, node_budget_watts=budget)
        assert update is not None and update.plan_generation == 5
        assert update.node_budget_watts == expected


def test_removed_targets_are_a_change() -> None:
    update = node_spec_update(_written(), [], now=T0, ttl_seconds=TTL)
    assert update is not None
    assert update.gpus == [] and update.plan_generation == 5


def test_any_field_of_a_target_is_a_change() -> None:
    for field, value in (("reason", "other"), ("dry_run", True), ("job", "j"), ("priority", 3)):
        changed = [TARGETS[0].model_copy(update={field: value})]
        update = node_spec_update(_written(), changed, now=T0, ttl_seconds=TTL)
        assert update is not None and update.plan_generation == 5, field


def test_a_new_ttl_is_a_change() -> None:
    update = node_spec_update(_written(), list(TARGETS), now=T0, ttl_seconds=120)
    assert update is not None
    assert (update.ttl_seconds, update.plan_generation) == (120, 5)


def test_an_empty_never_issued_plan_is_not_written() -> None:
    assert node_spec_update(GpuNodeSpec(ttl_seconds=TTL), [], now=T0, ttl_seconds=TTL) is None


def test_targets_without_an_issue_time_are_renewed_at_once() -> None:
    current = GpuNodeSpec(plan_generation=2, ttl_seconds=TTL, gpus=list(TARGETS))
    update = node_spec_update(current, list(TARGETS), now=T0, ttl_seconds=TTL)
    assert update is not None
    assert (update.issued_at, update.plan_generation) == (T0, 2)


def test_a_spec_read_back_from_the_api_compares_equal() -> None:
    # What the operator wrote, as the API server returns it (ints, strings), must not look changed.
    current = GpuNodeSpec.model_validate(
        {
            "planGeneration": 4,
            "issuedAt": "2025-06-01T12:00:00Z",
            "ttlSeconds": TTL,
            "gpus": [{"uuid": "GPU-0", "powerLimitWatts": 210, "policy": "cap", "reason": "r"}],
        }
    )
    assert node_spec_update(current, list(TARGETS), now=T0 + timedelta(seconds=10), ttl_seconds=TTL) is None


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2 * TTL), st.integers(10, 3600))
def test_a_plan_is_always_renewed_before_it_can_expire(elapsed: int, ttl: int) -> None:
    current = GpuNodeSpec(plan_generation=1, issued_at=T0, ttl_seconds=ttl, gpus=list(TARGETS))
    update = node_spec_update(current, list(TARGETS), now=T0 + timedelta(seconds=elapsed), ttl_seconds=ttl)
    if elapsed >= ttl / 3:
        assert update is not None and update.plan_generation == 1
    else:
        assert update is None


def _policy_body(spec: object, generation: int = 3, status: object = None) -> dict[str, object]:
    return {"metadata": {"name": "cap", "generation": generation}, "spec": spec, "status": status or {}}


def test_invalid_spec_shows_ready_false_invalid_spec() -> None:
    parsed = policy_parse(_policy_body({"limits": {"minWatts": 300, "maxWatts": 200}}))
    status = policy_status(parsed, None, now=T0)
    assert status.observed_generation == 3
    (ready,) = status.conditions
    assert (ready.type, ready.status, ready.reason) == ("Ready", "False", "InvalidSpec")
    assert "minWatts must not exceed maxWatts" in ready.message
    assert ready.observed_generation == 3
    assert ready.last_transition_time == T0
    assert status.matched_pods == 0 and status.pods == []


def test_invalid_spec_wins_even_if_a_report_exists() -> None:
    parsed = policy_parse(_policy_body({"priority": 5000}))
    report = PolicyReport(name="cap", generation=3, pods=("ml/p",), gpus=1)
    status = policy_status(parsed, report, now=T0)
    assert status.conditions[0].reason == "InvalidSpec"
    assert status.matched_pods == 0


def test_planned_policy_status_carries_the_report() -> None:
    parsed = policy_parse(_policy_body({"limits": {"maxWatts": 200}}))
    report = PolicyReport(
        name="cap",
        generation=3,
        pods=("ml/a", "ml/b"),
        gpus=3,
        allocated_watts=600.0,
        measured_watts=512.4,
        reason="Planned",
        message="governs 2 pod(s) on 3 GPU(s)",
    )
    status = policy_status(parsed, report, now=T0)
    assert (status.matched_pods, status.matched_gpus, status.allocated_watts) == (2, 3, 600.0)
    assert status.measured_watts == 512
    assert status.pods == ["ml/a", "ml/b"]
    conditions = {c.type: c for c in status.conditions}
    assert set(conditions) == {"Ready", "Degraded"}  # no carbon or budget section: no such conditions
    ready = conditions["Ready"]
    assert (ready.status, ready.reason, ready.message) == ("True", "Planned", "governs 2 pod(s) on 3 GPU(s)")
    assert conditions["Degraded"].status == "False"


def test_ready_transition_time_survives_rounds_and_moves_on_a_flip() -> None:
    parsed = policy_parse(_policy_body({"limits": {"maxWatts": 200}}))
    report = PolicyReport(name="cap", generation=3, pods=("ml/a",), gpus=1)
    first = policy_status(parsed, report, now=T0)
    later = T0 + timedelta(minutes=10)
    reparsed = policy_parse(_policy_body({"limits": {"maxWatts": 200}}, status=first.to_wire()))
    second = policy_status(reparsed, report, now=later)
    assert second.conditions[0].last_transition_time == T0
    broken = policy_parse(_policy_body({"limits": {"maxWatts": -1}}, status=second.to_wire()))
    third = policy_status(broken, None, now=later)
    assert third.conditions[0].last_transition_time == later


def test_other_conditions_and_kopf_fields_do_not_break_status() -> None:
    previous = {
        "conditions": [Condition(type="Degraded", status="False", last_transition_time=T0).to_wire()],
        "kopf": {"dummy": "x"},
    }
    parsed = policy_parse(_policy_body({"dryRun": True}, status=previous))
    status = policy_status(parsed, PolicyReport(name="cap", generation=3), now=T0)
    assert [c.type for c in status.conditions] == ["Degraded", "Ready"]


def test_a_policy_stored_without_sections_shows_invalid_spec_and_why() -> None:
    """Stored before the API server refused them: the operator says what is missing instead of planning it."""
    parsed = policy_parse(_policy_body({}))
    assert parsed.view is None
    (ready,) = policy_status(parsed, None, now=T0).conditions
    assert (ready.status, ready.reason) == ("False", "InvalidSpec")
    assert "at least one of limits, efficiency, carbon, budget, quota, serving or stragglers" in ready.message


def test_status_names_the_shadowed_pods_and_who_governs_them_bounded() -> None:
    parsed = policy_parse(_policy_body({"limits": {"maxWatts": 150}}))
    lost = tuple((f"ml/p{i:02d}", "inference-high") for i in range(30))
    report = PolicyReport(
        name="cap", generation=3, shadowed_pods=tuple(p for p, _ in lost), shadowed_by=lost, reason="NoMatchingPods"
    )
    wire = policy_status(parsed, report, now=T0).to_wire()
    assert wire["shadowedPods"] == 30
    assert len(wire["shadowed"]) == 20
    assert wire["shadowed"][0] == {"pod": "ml/p00", "governedBy": "inference-high"}
    assert "shadowed" in status_material(wire)  # losing a pod is written at once, not with the measurements


def test_shadow_events_name_the_pods_and_the_winner_only_on_change() -> None:
    lost = [("ml/a", "high"), ("ml/b", "high")]
    assert shadow_event(lost, lost) is None
    assert shadow_event((), ()) is None
    reason, message, type_ = shadow_event((), lost) or ("", "", "")
    assert (reason, type_) == ("PodsShadowed", "Warning")
    assert "2 pod(s)" in message and "ml/a (governed by high)" in message and "ml/b (governed by high)" in message
    moved = [("ml/a", "higher")]
    assert shadow_event(lost, moved) is not None  # same pod, other winner: a change worth telling
    back = shadow_event(moved, ())
    assert back is not None and back[0] == "PodsNoLongerShadowed" and back[2] == "Normal"
    many = [(f"ml/p{i:03d}", "high") for i in range(SHADOWED_IN_EVENT + 5)]
    _, long_message, _ = shadow_event((), many) or ("", "", "")
    assert long_message.endswith("and 5 more") and f"ml/p{SHADOWED_IN_EVENT:03d}" not in long_message


def test_status_material_ignores_only_measurements() -> None:
    wire = {"matchedPods": 1, "measuredWatts": 5.0, "allocatedWatts": 200.0}
    assert status_material(wire) == {"matchedPods": 1, "allocatedWatts": 200.0}


def test_what_a_budget_covers_is_written_at_once_its_measurements_wait() -> None:
    """What a budget covers is written at once; its measured draw moving alone waits for the refresh.

    A budget that first covered no node (its Nodes' labels not yet seen) and then three must not keep
    saying 0 nodes until the next refresh.
    """

    def budget(nodes: int, measured: float) -> dict[str, object]:
        return {"budget": {"watts": 1500.0, "nodes": nodes, "measuredWatts": measured, "allocatedWatts": 1400.0}}

    assert status_material(budget(0, 0.0)) != status_material(budget(3, 0.0))
    assert status_material(budget(3, 900.0)) == status_material(budget(3, 1100.0))


def test_carbon_budget_accrual_waits_but_a_new_plan_is_written_at_once() -> None:
    def account(seconds: float, now: str, planned: list[tuple[str, float]]) -> dict[str, object]:
        return {
            "job": "ml/train",
            "gpuModel": "A40",
            "maxSlowdown": 0.03,
            "timeAtLimits": [{"watts": 300.0, "seconds": seconds}],
            "updatedAt": now,
            "usedSeconds": 0.0,
            "allowedSeconds": 0.03 * seconds,
            "curve": "prior",
            "planned": [{"start": s, "watts": w} for s, w in planned],
            "message": f"carbon budget: used 0 s of {0.03 * seconds:.0f} s",
        }

    later = [("2025-06-01T13:00:00Z", 100.0)]
    first = {"matchedPods": 1, "carbonBudgets": [account(60.0, "2025-06-01T12:01:00Z", [("12:01", 300.0), *later])]}
    # A round later: more time at 300 W, the first step starts at the new "now"; the plan is the same.
    accrued = {
        "matchedPods": 1,
        "carbonBudgets": [account(61.0, "2025-06-01T12:01:01Z", [("12:01:01", 300.0), *later])],
    }
    assert status_material(first) == status_material(accrued)
    # The limit for now changes, or a later step moves: written at once.
    lowered = {"matchedPods": 1, "carbonBudgets": [account(62.0, "2025-06-01T12:01:02Z", [("12:01:02", 100.0)])]}
    moved = {
        "matchedPods": 1,
        "carbonBudgets": [
            account(61.0, "2025-06-01T12:01:01Z", [("12:01:01", 300.0), ("2025-06-01T14:00:00Z", 100.0)])
        ],
    }
    assert status_material(lowered) != status_material(first)
    assert status_material(moved) != status_material(first)
    assert status_material({"carbonBudgets": []}) == {"carbonBudgets": []}


def test_an_account_outlives_a_short_absence_of_its_job_but_not_a_long_one() -> None:
    now = datetime(2024, 3, 1, 12, tzinfo=UTC)
    recent = JobCarbonBudget(job="ml/a", gpu_model="A40", updated_at=(now - timedelta(minutes=1)).isoformat())
    old = JobCarbonBudget(job="ml/b", gpu_model="A40", updated_at=(now - ACCOUNT_GRACE).isoformat())
    present = JobCarbonBudget(job="ml/c", gpu_model="A40", updated_at=now.isoformat())
    kept = kept_accounts([present], [recent, old, present.model_copy(update={"used_seconds": 9.0})], now)
    assert [a.job for a in kept] == ["ml/c", "ml/a"]
    assert kept[0].used_seconds == 0.0  # this round's account wins over the stored one


def test_a_window_starting_and_ending_is_told_once_each() -> None:
    from wattplane.api.v1alpha1.energypolicy import BudgetStatus
    from wattplane.operator.decisions import window_event

    opened = BudgetStatus(watts=3000.0, window="peak", ramp_watts_per_second=50.0, nodes=4, measured_watts=3900.0)
    started = window_event(None, opened)
    assert started is not None and started[0] == "BudgetWindowStarted"
    assert "window peak: target 3000 W over 4 node(s), ramp 50 W/s" in started[1]
    assert window_event("peak", opened) is None  # told already
    ended = window_event("peak", BudgetStatus(watts=0.0))
    assert ended is not None and ended[0] == "BudgetWindowEnded" and "peak" in ended[1]
    assert window_event(None, BudgetStatus(watts=5000.0)) is None


def test_a_demand_response_problem_degrades_the_policy_and_says_why() -> None:
    from wattplane.operator.decisions import policy_status as status_of
    from wattplane.planner.context import PlanContext
    from wattplane.planner.plan import plan as plan_round
    from wattplane.planner.snapshot import FleetSnapshot

    parsed = policy_parse(_policy_body({"budget": {"watts": 1000}}))
    assert parsed.view is not None
    report = plan_round(FleetSnapshot(), [parsed.view], PlanContext(now=T0)).policies[parsed.view.name]
    status = status_of(parsed, report, now=T0, grid_problem="VEN rack-b: ClientConnectorError: refused")
    degraded = next(c for c in status.conditions if c.type == "Degraded")
    assert (degraded.status, degraded.reason) == ("True", "DemandResponse")
    assert "VEN rack-b: ClientConnectorError" in degraded.message
    fine = status_of(parsed, report, now=T0)
    assert next(c for c in fine.conditions if c.type == "Degraded").status == "False"
