"""A policy's workload power profile and power smoothing travel with its GPU targets, to the wire."""

from __future__ import annotations

from wattplane.api.v1alpha1.energypolicy import EnergyPolicySpec
from wattplane.planner.plan import Plan, plan
from wattplane.planner.snapshot import FleetSnapshot, GpuView, PodView, PolicyView


def _plan(limits: dict[str, object]) -> Plan:
    gpu = GpuView(
        node="node-a",
        uuid="GPU-0",
        index=0,
        model="B200",
        min_watts=200.0,
        max_watts=1000.0,
        default_watts=1000.0,
        power_watts=0.0,
        pods=(("ml", "p0"),),
    )
    pod = PodView(namespace="ml", name="p0", node="node-a", labels={}, annotations={}, phase="Running")
    snapshot = FleetSnapshot(gpus=(gpu,), pods={pod.key: pod}, namespace_labels={}, nodes=("node-a",))
    policy = PolicyView(
        name="k", spec=EnergyPolicySpec.model_validate({"limits": limits}), generation=1, deleting=False
    )
    return plan(snapshot, [policy])


def test_profile_and_smoothing_ride_on_the_target() -> None:
    smoothing = {"rampUpWattsPerSecond": 100, "floorPercent": 30}
    result = _plan({"maxWatts": 800, "workloadProfile": "MaxQ", "powerSmoothing": smoothing})
    (target,) = result.nodes["node-a"]
    assert target.workload_profile == "MaxQ"
    assert target.power_smoothing is not None and target.power_smoothing.floor_percent == 30
    wire = target.to_wire()
    assert wire["workloadProfile"] == "MaxQ"
    assert wire["powerSmoothing"] == {"rampUpWattsPerSecond": 100.0, "floorPercent": 30.0}


def test_targets_without_knobs_carry_none_on_the_wire() -> None:
    (target,) = _plan({"maxWatts": 800}).nodes["node-a"]
    wire = target.to_wire()
    assert "workloadProfile" not in wire and "powerSmoothing" not in wire
