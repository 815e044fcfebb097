"""Property tests of the planner: bounds, determinism, order independence, idempotence."""

from __future__ import annotations

import dataclasses
import random

from hypothesis import given, settings
from hypothesis import strategies as st
from wattplane.api.selectors import LabelSelector
from wattplane.api.v1alpha1.energypolicy import ClockRangeMHz, EnergyPolicySpec, PolicySelector, PowerLimits
from wattplane.planner.decide import clamp
from wattplane.planner.limits import static_cap
from wattplane.planner.plan import plan
from wattplane.planner.snapshot import FleetSnapshot, GpuView, PodView, PolicyView

NAMESPACES = ("ns-a", "ns-b")
POLICY_NAMES = ("alpha", "beta", "gamma", "delta")


@st.composite
def limits_strategy(draw: st.DrawFn) -> PowerLimits | None:
    if draw(st.booleans()) and draw(st.booleans()):
        return None
    watts = st.none() | st.floats(min_value=1, max_value=1000, allow_nan=False)
    fraction = st.none() | st.floats(min_value=0.01, max_value=1.0, allow_nan=False)
    max_watts, min_watts = draw(watts), draw(watts)
    max_fraction, min_fraction = draw(fraction), draw(fraction)
    if max_watts is None and max_fraction is None and draw(st.integers(0, 3)):
        max_fraction = draw(st.floats(min_value=0.01, max_value=1.0))  # mostly a cap, sometimes only floors
    if max_watts is not None and min_watts is not None and min_watts > max_watts:
        min_watts, max_watts = max_watts, min_watts
    if max_fraction is not None and min_fraction is not None and min_fraction > max_fraction:
        min_fraction, max_fraction = max_fraction, min_fraction
    clocks = draw(st.none() | st.just(ClockRangeMHz(min_mhz=210, max_mhz=1400)))
    return PowerLimits(
        max_watts=max_watts,
        min_watts=min_watts,
        max_fraction_of_default=max_fraction,
        min_fraction_of_default=min_fraction,
        locked_sm_clock_mhz=clocks,
    )


@st.composite
def policy_strategy(draw: st.DrawFn, name: str) -> PolicyView:
    team = st.sampled_from([None, None, "a", "b"]).map(
        lambda t: None if t is None else LabelSelector(match_labels={"team": t})
    )
    fields = {
        "selector": PolicySelector(namespace_selector=draw(team), pod_selector=draw(team)),
        "priority": draw(st.integers(-2, 2)),
        "limits": draw(limits_strategy()),
        "dry_run": draw(st.booleans()),
    }
    # No limits and no dryRun is a spec the models refuse; the planner still meets one when it is
    # built without validation, and must neither fail nor let it govern a pod.
    valid = fields["limits"] is not None or fields["dry_run"]
    spec = EnergyPolicySpec(**fields) if valid else EnergyPolicySpec.model_construct(**fields)
    deleting = draw(st.integers(0, 4)) == 0
    return PolicyView(name=name, spec=spec, generation=draw(st.integers(0, 5)), deleting=deleting)


@st.composite
def pod_strategy(draw: st.DrawFn, index: int) -> PodView:
    annotations: dict[str, str] = {}
    if draw(st.booleans()):
        annotations["wattplane.io/job"] = draw(st.sampled_from(["j1", "j2"]))
    if draw(st.booleans()):
        annotations["wattplane.io/priority"] = draw(st.sampled_from(["low", "high", "7", "garbage"]))
    if draw(st.integers(0, 5)) == 0:
        annotations["wattplane.io/opt-out"] = "true"
    if draw(st.integers(0, 3)) == 0:
        annotations["wattplane.io/policy"] = draw(st.sampled_from(POLICY_NAMES))
    return PodView(
        namespace=draw(st.sampled_from(NAMESPACES)),
        name=f"pod-{index}",
        labels={"team": draw(st.sampled_from(["a", "b", "c"]))},
        annotations=annotations,
        phase=draw(st.sampled_from(["Running", "Running", "Running", "Pending", "Succeeded", "Failed"])),
    )


@st.composite
def world(draw: st.DrawFn) -> tuple[FleetSnapshot, list[PolicyView]]:
    pods = [draw(pod_strategy(i)) for i in range(draw(st.integers(1, 6)))]
    keys = [p.key for p in pods] + [("ns-a", "ghost")]
    gpus = []
    for node in ("node-1", "node-2"):
        for index in range(draw(st.integers(0 if node == "node-2" else 1, 3))):
            lo = draw(st.floats(min_value=50, max_value=300, allow_nan=False))
            hi = draw(st.floats(min_value=lo, max_value=lo + 500, allow_nan=False))
            default = draw(st.floats(min_value=lo, max_value=hi, allow_nan=False))
            gpus.append(
                GpuView(
                    node=node,
                    uuid=f"GPU-{node}-{index}",
                    index=index,
                    model="sim",
                    min_watts=lo,
                    max_watts=hi,
                    default_watts=default,
                    power_watts=draw(st.floats(min_value=0, max_value=hi, allow_nan=False)),
                    pods=tuple(draw(st.lists(st.sampled_from(keys), min_size=1, max_size=3, unique=True))),
                )
            )
    names = draw(st.lists(st.sampled_from(POLICY_NAMES), min_size=1, max_size=4, unique=True))
    policies = [draw(policy_strategy(name)) for name in names]
    snapshot = FleetSnapshot(
        gpus=tuple(gpus),
        pods={p.key: p for p in pods},
        namespace_labels={"ns-a": {"team": "a"}, "ns-b": {"team": "b"}},
        nodes=tuple(sorted({g.node for g in gpus})),
    )
    return snapshot, policies


def _shuffled(snapshot: FleetSnapshot, policies: list[PolicyView], seed: int) -> tuple[FleetSnapshot, list[PolicyView]]:
    rng = random.Random(seed)
    gpus = [dataclasses.replace(g, pods=tuple(rng.sample(g.pods, len(g.pods)))) for g in snapshot.gpus]
    rng.shuffle(gpus)
    pod_items = list(snapshot.pods.items())
    rng.shuffle(pod_items)
    ns_items = list(snapshot.namespace_labels.items())
    rng.shuffle(ns_items)
    shuffled = FleetSnapshot(
        gpus=tuple(gpus), pods=dict(pod_items), namespace_labels=dict(ns_items), nodes=snapshot.nodes[::-1]
    )
    return shuffled, rng.sample(policies, len(policies))


EXAMPLES = settings(max_examples=150, deadline=None)


@EXAMPLES
@given(world())
def test_every_target_lies_within_its_gpus_constraints(case: tuple[FleetSnapshot, list[PolicyView]]) -> None:
    snapshot, policies = case
    by_uuid = {g.uuid: g for g in snapshot.gpus}
    for node, targets in plan(snapshot, policies).nodes.items():
        for target in targets:
            gpu = by_uuid[target.uuid]
            assert gpu.node == node
            assert gpu.min_watts <= target.power_limit_watts <= gpu.max_watts
            assert target.reason.startswith(f"EnergyPolicy {target.policy}: ")


@EXAMPLES
@given(world())
def test_targets_come_only_from_live_policies_with_limits_over_active_pods(
    case: tuple[FleetSnapshot, list[PolicyView]],
) -> None:
    snapshot, policies = case
    result = plan(snapshot, policies)
    by_name = {p.name: p for p in policies}
    by_uuid = {g.uuid: g for g in snapshot.gpus}
    assert set(result.policies) == {p.name for p in policies if not p.deleting}
    for targets in result.nodes.values():
        assert len({t.uuid for t in targets}) == len(targets)
        for target in targets:
            source = by_name[target.policy]
            assert not source.deleting and source.spec.limits is not None
            assert target.dry_run == source.spec.dry_run
            holders = [snapshot.pods[k] for k in by_uuid[target.uuid].pods if k in snapshot.pods]
            governed = [
                p for p in holders if p.active and f"{p.namespace}/{p.name}" in result.policies[target.policy].pods
            ]
            assert governed, "a target needs a running pod governed by its policy"
            # The target is the cap of its policy for this GPU, or, for a policy that only sets device
            # knobs (a clock lock, a profile, smoothing), the GPU's default limit carrying them.
            gpu = by_uuid[target.uuid]
            decision = static_cap(source.spec.limits, gpu)
            if decision is None:
                limits = source.spec.limits
                knobs = (limits.locked_sm_clock_mhz, limits.workload_profile, limits.power_smoothing)
                assert any(k is not None for k in knobs)
                assert target.power_limit_watts == clamp(gpu.default_watts, "", gpu)[0]  # to the milliwatt
            else:
                assert decision.watts == target.power_limit_watts


@EXAMPLES
@given(world())
def test_a_pod_is_governed_by_at_most_one_policy(case: tuple[FleetSnapshot, list[PolicyView]]) -> None:
    snapshot, policies = case
    result = plan(snapshot, policies)
    governing = [r for r in result.policies.values() if r.reason not in ("ObserveOnly", "NothingToEnforce")]
    seen: list[str] = [pod for report in governing for pod in report.pods]
    assert len(seen) == len(set(seen))
    for report in result.policies.values():
        assert not set(report.pods) & set(report.shadowed_pods)


@EXAMPLES
@given(world())
def test_plan_is_deterministic(case: tuple[FleetSnapshot, list[PolicyView]]) -> None:
    snapshot, policies = case
    assert plan(snapshot, policies) == plan(snapshot, list(policies))


@EXAMPLES
@given(world(), st.integers(0, 2**32 - 1))
def test_input_order_does_not_matter(case: tuple[FleetSnapshot, list[PolicyView]], seed: int) -> None:
    snapshot, policies = case
    assert plan(*_shuffled(snapshot, policies, seed)) == plan(snapshot, policies)


@EXAMPLES
@given(world())
def test_replanning_after_the_agents_applied_the_plan_changes_no_target(
    case: tuple[FleetSnapshot, list[PolicyView]],
) -> None:
    snapshot, policies = case
    first = plan(snapshot, policies)
    applied = {t.uuid: t.power_limit_watts for targets in first.nodes.values() for t in targets}
    after = dataclasses.replace(
        snapshot,
        gpus=tuple(
            dataclasses.replace(g, power_watts=min(g.power_watts, applied.get(g.uuid, g.max_watts)))
            for g in snapshot.gpus
        ),
    )
    second = plan(after, policies)
    assert second.nodes == first.nodes
    assert second.pod_targets == first.pod_targets


@EXAMPLES
@given(world())
def test_policies_without_limits_set_nothing(case: tuple[FleetSnapshot, list[PolicyView]]) -> None:
    snapshot, policies = case
    stripped = [dataclasses.replace(p, spec=p.spec.model_copy(update={"limits": None})) for p in policies]
    result = plan(snapshot, stripped)
    assert all(targets == () for targets in result.nodes.values())
    assert result.pod_targets == {}
    by_name = {p.name: p for p in stripped}
    for name, report in result.policies.items():
        assert report.reason == ("ObserveOnly" if by_name[name].spec.dry_run else "NothingToEnforce")
        assert report.gpus == 0 and report.allocated_watts == 0
        assert report.shadowed_pods == ()


@EXAMPLES
@given(world(), st.integers(-1000, 1000))
def test_an_observe_only_policy_never_takes_a_pod(case: tuple[FleetSnapshot, list[PolicyView]], priority: int) -> None:
    """A dryRun policy with no section and an empty selector, at any priority, changes no target."""
    snapshot, policies = case
    observer = PolicyView(
        name="aaa-observer", spec=EnergyPolicySpec(priority=priority, dry_run=True), generation=1, deleting=False
    )
    before, after = plan(snapshot, policies), plan(snapshot, [*policies, observer])
    assert after.nodes == before.nodes
    assert after.pod_targets == before.pod_targets
    for name, report in before.policies.items():
        assert after.policies[name].pods == report.pods
        assert after.policies[name].shadowed_by == report.shadowed_by
    watched = after.policies["aaa-observer"]
    assert watched.reason == "ObserveOnly" and watched.gpus == 0
    active = {f"{k[0]}/{k[1]}" for k, p in snapshot.pods.items() if p.active}
    opted_out = {f"{k[0]}/{k[1]}" for k, p in snapshot.pods.items() if p.annotations.get("wattplane.io/opt-out")}
    assert set(watched.pods) == active - opted_out


@EXAMPLES
@given(world())
def test_report_totals_match_the_targets(case: tuple[FleetSnapshot, list[PolicyView]]) -> None:
    snapshot, policies = case
    result = plan(snapshot, policies)
    for name, report in result.policies.items():
        mine = [t for targets in result.nodes.values() for t in targets if t.policy == name]
        assert report.gpus == len(mine)
        assert abs(report.allocated_watts - sum(t.power_limit_watts for t in mine)) < 1e-2
