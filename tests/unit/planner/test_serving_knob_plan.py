"""A serving pod's knob in the plan: a clock lock bounds the SM clock, a cap composes with the other sections."""

from __future__ import annotations

from wattplane.api.v1alpha1.energypolicy import EnergyPolicySpec
from wattplane.api.v1alpha1.gpunode import GpuTarget
from wattplane.planner.context import PlanContext, ServingKnob
from wattplane.planner.plan import plan
from wattplane.planner.snapshot import FleetSnapshot, GpuView, PodView, PolicyView

KEY = ("serve", "llm-0")


def _target(spec: dict[str, object], knob: ServingKnob | None) -> GpuTarget | None:
    gpu = GpuView(
        node="n1",
        uuid="GPU-1",
        index=0,
        model="H100",
        min_watts=200.0,
        max_watts=700.0,
        default_watts=700.0,
        power_watts=450.0,
        pods=(KEY,),
    )
    pod = PodView(namespace=KEY[0], name=KEY[1], node="n1", annotations={"wattplane.io/workload": "inference"})
    snapshot = FleetSnapshot(gpus=(gpu,), pods={pod.key: pod}, nodes=("n1",))
    policy = PolicyView(name="serving", spec=EnergyPolicySpec.model_validate(spec))
    knobs = {KEY: knob} if knob is not None else {}
    targets = plan(snapshot, [policy], PlanContext(serving_knobs=knobs)).nodes["n1"]
    return targets[0] if targets else None


def test_without_a_knob_a_serving_only_policy_sets_nothing() -> None:
    assert _target({"serving": {}}, None) is None


def test_a_clock_knob_bounds_the_sm_clock_from_above_only() -> None:
    target = _target({"serving": {}}, ServingKnob("clock", 1350.0, "probe"))
    assert target is not None
    assert target.locked_clocks_mhz is not None
    assert (target.locked_clocks_mhz.min_mhz, target.locked_clocks_mhz.max_mhz) == (0, 1350)
    assert target.power_limit_watts == 700.0  # the clock does the work; the limit stays at the default
    assert target.section == "serving"


def test_a_clock_knob_keeps_the_other_sections_limit_and_tightens_their_lock() -> None:
    spec = {"serving": {}, "limits": {"maxWatts": 600.0, "lockedSmClockMHz": {"minMHz": 300, "maxMHz": 1700}}}
    target = _target(spec, ServingKnob("clock", 1455.0, "probe"))
    assert target is not None
    assert target.power_limit_watts == 600.0
    assert target.locked_clocks_mhz is not None
    assert (target.locked_clocks_mhz.min_mhz, target.locked_clocks_mhz.max_mhz) == (300, 1455)
    assert "SM clock at most 1455 MHz" in target.reason
    looser = _target(spec, ServingKnob("clock", 1900.0, "probe"))
    assert looser is not None and looser.locked_clocks_mhz is not None
    assert looser.locked_clocks_mhz.max_mhz == 1700  # the policy's own lock is tighter


def test_a_cap_knob_wins_only_when_tighter() -> None:
    tight = _target({"serving": {}, "limits": {"maxWatts": 600.0}}, ServingKnob("cap", 450.0, "probe"))
    assert tight is not None and (tight.power_limit_watts, tight.section) == (450.0, "serving")
    loose = _target({"serving": {}, "limits": {"maxWatts": 600.0}}, ServingKnob("cap", 650.0, "probe"))
    assert loose is not None and (loose.power_limit_watts, loose.section) == (600.0, "limits")


def test_a_cap_knob_below_the_device_minimum_is_clamped() -> None:
    target = _target({"serving": {}}, ServingKnob("cap", 120.0, "probe"))
    assert target is not None and target.power_limit_watts == 200.0


def test_a_policy_with_only_a_clock_lock_still_sets_a_target() -> None:
    target = _target({"limits": {"lockedSmClockMHz": {"minMHz": 300, "maxMHz": 1200}}}, None)
    assert target is not None
    assert target.locked_clocks_mhz is not None and target.locked_clocks_mhz.max_mhz == 1200
    assert target.power_limit_watts == 700.0  # the default: nothing asked for less


def test_a_cap_knob_respects_the_policys_floor_like_every_optimising_section() -> None:
    target = _target(
        {"serving": {}, "limits": {"maxWatts": 600.0, "minWatts": 350.0}}, ServingKnob("cap", 300.0, "probe")
    )
    assert target is not None
    assert (target.power_limit_watts, target.section) == (350.0, "serving")
    assert "raised to the floor 350 W" in target.reason
