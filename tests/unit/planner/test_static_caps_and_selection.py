"""Planner table tests: static caps, clamping, selection of the governing policy, reports."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from wattplane.api.v1alpha1.energypolicy import EnergyPolicySpec, PowerLimits
from wattplane.planner.limits import lower_bound, static_cap
from wattplane.planner.plan import Plan, plan
from wattplane.planner.snapshot import FleetSnapshot, GpuView, PodKey, PodView, PolicyView

NS = "ml"


def gpu(
    uuid: str = "GPU-0",
    *,
    node: str = "node-a",
    index: int = 0,
    pods: Sequence[PodKey] = ((NS, "p0"),),
    min_watts: float = 100.0,
    max_watts: float = 300.0,
    default_watts: float = 300.0,
    power_watts: float = 0.0,
) -> GpuView:
    return GpuView(
        node=node,
        uuid=uuid,
        index=index,
        model="A40",
        min_watts=min_watts,
        max_watts=max_watts,
        default_watts=default_watts,
        power_watts=power_watts,
        pods=tuple(pods),
    )


def pod(
    name: str = "p0",
    *,
    namespace: str = NS,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    phase: str = "Running",
) -> PodView:
    return PodView(
        namespace=namespace,
        name=name,
        node="node-a",
        labels=dict(labels or {}),
        annotations=dict(annotations or {}),
        phase=phase,
    )


def policy(name: str, *, deleting: bool = False, generation: int = 1, **spec: Any) -> PolicyView:
    return PolicyView(name=name, spec=EnergyPolicySpec.model_validate(spec), generation=generation, deleting=deleting)


def run(
    gpus: Sequence[GpuView],
    pods: Sequence[PodView],
    policies: Sequence[PolicyView],
    namespaces: Mapping[str, Mapping[str, str]] | None = None,
) -> Plan:
    snapshot = FleetSnapshot(
        gpus=tuple(gpus),
        pods={p.key: p for p in pods},
        namespace_labels=namespaces or {},
        nodes=tuple(sorted({g.node for g in gpus})),
    )
    return plan(snapshot, policies)


def only_target_watts(result: Plan, node: str = "node-a") -> float:
    (target,) = result.nodes[node]
    return target.power_limit_watts


# --- static caps of one GPU --------------------------------------------------------------------------


@pytest.mark.parametrize(("fraction", "watts"), [(0.6, 180.0), (0.7, 210.0), (0.8, 240.0), (1.0, 300.0)])
def test_fraction_of_the_300w_default(fraction: float, watts: float) -> None:
    result = run([gpu()], [pod()], [policy("cap", limits={"maxFractionOfDefault": fraction})])
    assert only_target_watts(result) == watts
    (target,) = result.nodes["node-a"]
    assert f"maxFractionOfDefault {fraction:g}" in target.reason
    assert target.reason.startswith("EnergyPolicy cap: ")


def test_fraction_uses_each_devices_own_default() -> None:
    gpus = [gpu("GPU-0", index=0), gpu("GPU-1", index=1, min_watts=200, max_watts=700, default_watts=700)]
    result = run(gpus, [pod()], [policy("cap", limits={"maxFractionOfDefault": 0.5})])
    assert [t.power_limit_watts for t in result.nodes["node-a"]] == [150.0, 350.0]


@pytest.mark.parametrize(
    ("limits", "watts", "why"),
    [
        ({"maxWatts": 200, "maxFractionOfDefault": 0.7}, 200.0, "maxWatts 200"),
        ({"maxWatts": 250, "maxFractionOfDefault": 0.7}, 210.0, "maxFractionOfDefault 0.7"),
    ],
)
def test_watts_and_fraction_the_tightest_wins(limits: dict[str, float], watts: float, why: str) -> None:
    decision = static_cap(PowerLimits.model_validate(limits), gpu())
    assert decision is not None
    assert decision.watts == watts
    assert decision.reason.startswith(why)
    assert decision.clamped is False


@pytest.mark.parametrize(
    ("limits", "device", "watts", "words"),
    [
        ({"maxWatts": 50}, {}, 100.0, "raised to device minimum 100 W"),
        ({"maxFractionOfDefault": 0.2}, {}, 100.0, "raised to device minimum 100 W"),
        ({"maxWatts": 400}, {"max_watts": 250.0, "default_watts": 250.0}, 250.0, "lowered to device maximum 250 W"),
        # A policy floor above the device's maximum is clamped too.
        ({"maxFractionOfDefault": 0.5, "minWatts": 900}, {}, 300.0, "lowered to device maximum 300 W"),
    ],
)
def test_caps_are_clamped_to_device_limits(
    limits: dict[str, float], device: dict[str, float], watts: float, words: str
) -> None:
    decision = static_cap(PowerLimits.model_validate(limits), gpu(**device))  # type: ignore[arg-type]
    assert decision is not None
    assert decision.watts == watts
    assert decision.clamped is True
    assert words in decision.reason


def test_clamped_limits_are_counted_in_the_policy_report() -> None:
    gpus = [gpu("GPU-0", index=0), gpu("GPU-1", index=1, min_watts=50)]
    result = run(gpus, [pod()], [policy("tiny", limits={"maxWatts": 80})])
    assert [t.power_limit_watts for t in result.nodes["node-a"]] == [100.0, 80.0]
    report = result.policies["tiny"]
    assert report.clamped_gpus == 1
    assert "1 limit(s) clamped" in report.message


@pytest.mark.parametrize(
    ("limits", "watts", "raised"),
    [
        ({"maxFractionOfDefault": 0.5, "minWatts": 200}, 200.0, True),
        ({"maxWatts": 150, "minFractionOfDefault": 0.8}, 240.0, True),
        ({"maxFractionOfDefault": 0.5, "minFractionOfDefault": 0.4, "minWatts": 160}, 160.0, True),
        ({"maxFractionOfDefault": 0.5, "minFractionOfDefault": 0.45, "minWatts": 110}, 150.0, False),
        # A floor below the cap changes nothing.
        ({"maxWatts": 200, "minWatts": 150}, 200.0, False),
    ],
)
def test_policy_minimum_raises_the_cap(limits: dict[str, float], watts: float, raised: bool) -> None:
    decision = static_cap(PowerLimits.model_validate(limits), gpu())
    assert decision is not None
    assert decision.watts == watts
    assert decision.clamped is False
    assert ("raised to the policy minimum" in decision.reason) is raised


def test_lower_bound_is_the_highest_floor() -> None:
    assert lower_bound(PowerLimits(), gpu()) is None
    assert lower_bound(PowerLimits(min_watts=120, min_fraction_of_default=0.5), gpu()) == 150.0
    assert lower_bound(PowerLimits(min_watts=200, min_fraction_of_default=0.5), gpu()) == 200.0


def test_limits_with_only_a_floor_set_no_cap() -> None:
    assert static_cap(PowerLimits(min_watts=200), gpu()) is None
    result = run([gpu()], [pod()], [policy("floor", limits={"minWatts": 200})])
    assert result.nodes["node-a"] == ()


def test_locked_clocks_travel_with_the_target() -> None:
    clocks = {"minMHz": 210, "maxMHz": 1200}
    result = run([gpu()], [pod()], [policy("c", limits={"maxWatts": 200, "lockedSmClockMHz": clocks})])
    (target,) = result.nodes["node-a"]
    assert target.locked_clocks_mhz is not None
    assert (target.locked_clocks_mhz.min_mhz, target.locked_clocks_mhz.max_mhz) == (210, 1200)


# --- selection -----------------------------------------------------------------------------------------


def test_an_observe_only_policy_sets_nothing_and_says_so() -> None:
    result = run([gpu()], [pod()], [policy("observe", dryRun=True)])
    assert result.nodes["node-a"] == ()
    report = result.policies["observe"]
    assert report.reason == "ObserveOnly"
    assert report.pods == ("ml/p0",)
    assert report.gpus == 0 and report.allocated_watts == 0


def test_an_observe_only_policy_never_takes_a_pod_from_a_capping_one() -> None:
    """The empty-policy takeover: a no-section policy at priority 0 beat a cap at -5 and uncapped the pod."""
    policies = [
        policy("observe", dryRun=True),  # empty selector: selects every pod, priority 0
        policy("inference-cap", priority=-5, limits={"maxWatts": 150}),
    ]
    result = run([gpu()], [pod()], policies)
    (target,) = result.nodes["node-a"]
    assert (target.policy, target.power_limit_watts, target.section) == ("inference-cap", 150.0, "limits")
    assert result.policies["inference-cap"].pods == ("ml/p0",)
    assert result.policies["inference-cap"].shadowed_pods == ()
    assert result.policies["observe"].pods == ("ml/p0",)


def test_a_spec_without_sections_is_refused_and_never_governs_if_built_anyway() -> None:
    with pytest.raises(ValueError, match="at least one of limits"):
        EnergyPolicySpec.model_validate({})
    unchecked = PolicyView(name="empty", spec=EnergyPolicySpec.model_construct(), generation=1)
    result = run([gpu()], [pod()], [unchecked, policy("cap", priority=-5, limits={"maxWatts": 150})])
    assert only_target_watts(result) == 150.0
    assert result.policies["empty"].reason == "NothingToEnforce"


def test_the_loser_says_which_pods_it_lost_and_to_whom() -> None:
    pods = [pod(f"p{i}") for i in range(7)]
    gpus = [gpu(f"GPU-{i}", index=i, pods=[(NS, f"p{i}")]) for i in range(7)]
    policies = [policy("low", limits={"maxWatts": 150}), policy("high", priority=10, limits={"maxWatts": 250})]
    result = run(gpus, pods, policies)
    loser = result.policies["low"]
    assert loser.shadowed_by == tuple((f"ml/p{i}", "high") for i in range(7))
    assert "7 selected pod(s) governed by a higher-ranked policy: ml/p0 by high," in loser.message
    assert "ml/p4 by high and 2 more" in loser.message


def test_opt_out_pod_is_left_alone() -> None:
    pods = [pod(annotations={"wattplane.io/opt-out": "true"})]
    result = run([gpu()], pods, [policy("cap", limits={"maxWatts": 200})])
    assert result.nodes["node-a"] == ()
    assert result.policies["cap"].pods == ()
    assert result.policies["cap"].reason == "NoMatchingPods"


def test_opt_out_wins_over_an_explicit_policy_annotation() -> None:
    pods = [pod(annotations={"wattplane.io/opt-out": "yes", "wattplane.io/policy": "cap"})]
    result = run([gpu()], pods, [policy("cap", limits={"maxWatts": 200})])
    assert result.nodes["node-a"] == ()


def test_policy_annotation_opts_a_pod_in() -> None:
    selective = {"podSelector": {"matchLabels": {"team": "nobody"}}}
    pods = [pod("p0", annotations={"wattplane.io/policy": "cap"}), pod("p1")]
    gpus = [gpu("GPU-0", index=0, pods=[(NS, "p0")]), gpu("GPU-1", index=1, pods=[(NS, "p1")])]
    result = run(gpus, pods, [policy("cap", selector=selective, limits={"maxWatts": 200})])
    assert [t.uuid for t in result.nodes["node-a"]] == ["GPU-0"]
    assert result.policies["cap"].pods == ("ml/p0",)


def test_policy_annotation_naming_another_policy_does_not_opt_in() -> None:
    selective = {"podSelector": {"matchLabels": {"team": "nobody"}}}
    pods = [pod(annotations={"wattplane.io/policy": "other"})]
    result = run([gpu()], pods, [policy("cap", selector=selective, limits={"maxWatts": 200})])
    assert result.nodes["node-a"] == ()


def test_namespace_selector() -> None:
    namespaces = {"nlp": {"team": "nlp"}, "cv": {"team": "cv"}}
    pods = [pod("a", namespace="nlp"), pod("b", namespace="cv"), pod("c", namespace="unlabelled")]
    gpus = [
        gpu("GPU-0", index=0, pods=[("nlp", "a")]),
        gpu("GPU-1", index=1, pods=[("cv", "b")]),
        gpu("GPU-2", index=2, pods=[("unlabelled", "c")]),
    ]
    nlp_only = {"namespaceSelector": {"matchLabels": {"team": "nlp"}}}
    result = run(gpus, pods, [policy("cap", selector=nlp_only, limits={"maxWatts": 200})], namespaces)
    assert [t.uuid for t in result.nodes["node-a"]] == ["GPU-0"]
    assert result.policies["cap"].pods == ("nlp/a",)


def test_namespace_and_pod_selectors_must_both_match() -> None:
    namespaces = {"nlp": {"team": "nlp"}}
    pods = [pod("a", namespace="nlp", labels={"role": "train"}), pod("b", namespace="nlp", labels={"role": "serve"})]
    gpus = [gpu("GPU-0", index=0, pods=[("nlp", "a")]), gpu("GPU-1", index=1, pods=[("nlp", "b")])]
    selector = {
        "namespaceSelector": {"matchLabels": {"team": "nlp"}},
        "podSelector": {"matchLabels": {"role": "train"}},
    }
    result = run(gpus, pods, [policy("cap", selector=selector, limits={"maxWatts": 200})], namespaces)
    assert [t.uuid for t in result.nodes["node-a"]] == ["GPU-0"]


def test_higher_priority_wins_and_the_loser_reports_the_shadowed_pod() -> None:
    policies = [
        policy("aaa-low", priority=0, limits={"maxWatts": 150}),
        policy("zzz-high", priority=10, limits={"maxWatts": 250}),
    ]
    result = run([gpu()], [pod()], policies)
    (target,) = result.nodes["node-a"]
    assert (target.policy, target.power_limit_watts) == ("zzz-high", 250.0)
    assert result.policies["zzz-high"].pods == ("ml/p0",)
    assert result.policies["zzz-high"].shadowed_pods == ()
    loser = result.policies["aaa-low"]
    assert loser.pods == ()
    assert loser.shadowed_pods == ("ml/p0",)
    assert "higher-ranked policy" in loser.message


def test_equal_priority_goes_to_the_alphabetically_first_name() -> None:
    policies = [policy("beta", limits={"maxWatts": 150}), policy("alpha", limits={"maxWatts": 250})]
    result = run([gpu()], [pod()], policies)
    assert result.nodes["node-a"][0].policy == "alpha"
    assert result.policies["beta"].shadowed_pods == ("ml/p0",)


def test_dry_run_policy_plans_targets_marked_dry_run() -> None:
    result = run([gpu()], [pod()], [policy("cap", dryRun=True, limits={"maxFractionOfDefault": 0.6})])
    (target,) = result.nodes["node-a"]
    assert target.dry_run is True
    assert target.power_limit_watts == 180.0
    assert result.policies["cap"].reason == "DryRun"


def test_a_shared_gpu_gets_the_tightest_target_of_its_pods() -> None:
    pods = [pod("a", labels={"cap": "60"}), pod("b", labels={"cap": "80"})]
    policies = [
        policy(
            "cap-60", selector={"podSelector": {"matchLabels": {"cap": "60"}}}, limits={"maxFractionOfDefault": 0.6}
        ),
        policy(
            "cap-80", selector={"podSelector": {"matchLabels": {"cap": "80"}}}, limits={"maxFractionOfDefault": 0.8}
        ),
    ]
    shared = gpu(pods=[(NS, "b"), (NS, "a")])
    result = run([shared], pods, policies)
    (target,) = result.nodes["node-a"]
    assert (target.policy, target.power_limit_watts) == ("cap-60", 180.0)
    # Both pods see the one target of their shared GPU.
    assert result.pod_targets[(NS, "a")] == result.pod_targets[(NS, "b")] == (target,)
    assert result.policies["cap-60"].gpus == 1
    assert result.policies["cap-80"].gpus == 0
    assert result.policies["cap-80"].pods == ("ml/b",)


@pytest.mark.parametrize("phase", ["Succeeded", "Failed"])
def test_finished_pods_are_ignored(phase: str) -> None:
    result = run([gpu()], [pod(phase=phase)], [policy("cap", limits={"maxWatts": 200})])
    assert result.nodes["node-a"] == ()
    assert result.policies["cap"].pods == ()


def test_pending_pods_are_planned() -> None:
    result = run([gpu()], [pod(phase="Pending")], [policy("cap", limits={"maxWatts": 200})])
    assert only_target_watts(result) == 200.0


def test_deleting_policies_are_ignored() -> None:
    policies = [
        policy("gone", deleting=True, priority=100, limits={"maxWatts": 120}),
        policy("kept", limits={"maxWatts": 200}),
    ]
    result = run([gpu()], [pod()], policies)
    (target,) = result.nodes["node-a"]
    assert target.policy == "kept"
    assert "gone" not in result.policies
    assert result.policies["kept"].shadowed_pods == ()


def test_target_carries_job_and_priority_from_annotations() -> None:
    pods = [pod(annotations={"wattplane.io/job": "llama", "wattplane.io/priority": "high"}), pod("p1")]
    gpus = [gpu("GPU-0", index=0), gpu("GPU-1", index=1, pods=[(NS, "p1")])]
    result = run(gpus, pods, [policy("cap", limits={"maxWatts": 200})])
    first, second = result.nodes["node-a"]
    # Job ids are namespaced: two teams may both call their run "llama".
    assert (first.job, first.priority) == (f"{NS}/llama", 1000)
    assert (second.job, second.priority) == (f"{NS}/p1", 500)  # no job annotation, no batch owner: the pod


def test_garbage_annotations_are_reported_per_pod_and_do_not_stop_planning() -> None:
    pods = [pod(annotations={"wattplane.io/priority": "urgent"})]
    result = run([gpu()], pods, [policy("cap", limits={"maxWatts": 200})])
    assert only_target_watts(result) == 200.0
    assert result.nodes["node-a"][0].priority == 500
    assert list(result.pod_problems) == [(NS, "p0")]
    assert "wattplane.io/priority" in result.pod_problems[(NS, "p0")][0]


def test_gpus_without_governed_pods_get_no_target_and_unknown_pods_are_skipped() -> None:
    gpus = [gpu("GPU-0", index=0, pods=()), gpu("GPU-1", index=1, pods=[(NS, "ghost")])]
    result = run(gpus, [pod()], [policy("cap", limits={"maxWatts": 200})])
    assert result.nodes == {"node-a": ()}
    report = result.policies["cap"]
    assert report.pods == ("ml/p0",)  # selected, though it holds no GPU in this snapshot
    assert report.gpus == 0


def test_report_sums_allocated_and_measured_watts() -> None:
    gpus = [gpu("GPU-0", index=0, power_watts=150.5), gpu("GPU-1", index=1, power_watts=90.25)]
    result = run(gpus, [pod()], [policy("cap", generation=7, limits={"maxFractionOfDefault": 0.7})])
    report = result.policies["cap"]
    assert report.generation == 7
    assert report.gpus == 2
    assert report.allocated_watts == 420.0
    assert report.measured_watts == 240.75
    assert report.reason == "Planned"
    assert report.ready is True
    assert "governs 1 pod(s) in 1 job(s) on 2 GPU(s)" in report.message


def test_no_matching_pods_is_reported() -> None:
    selective = {"podSelector": {"matchLabels": {"team": "nobody"}}}
    result = run([gpu()], [pod()], [policy("cap", selector=selective, limits={"maxWatts": 200})])
    assert result.policies["cap"].reason == "NoMatchingPods"
    assert result.policies["cap"].message


def test_every_node_appears_even_without_targets() -> None:
    gpus = [gpu("GPU-0", node="node-a"), gpu("GPU-9", node="node-b", pods=())]
    result = run(gpus, [pod()], [policy("cap", limits={"maxWatts": 200})])
    assert set(result.nodes) == {"node-a", "node-b"}
    assert result.nodes["node-b"] == ()


def test_a_budget_only_policy_covers_nodes_and_takes_no_pods_away() -> None:
    # "aaa-budget" sorts first and has the same priority: were it a contender, it would win the pod.
    budget_only = policy("aaa-budget", budget={"watts": 10_000.0})
    result = run([gpu()], [pod()], [budget_only, policy("cap", limits={"maxWatts": 200})])
    assert only_target_watts(result) == 200.0
    assert result.policies["cap"].pods == (f"{NS}/p0",)
    assert result.policies["aaa-budget"].pods == ()
