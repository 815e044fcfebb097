"""``wattplane explain pod`` names the device knobs a GPU's target asks for and what the GPU did."""

from __future__ import annotations

from typing import Any

from wattplane.api.v1alpha1.gpunode import GpuNode
from wattplane.cli.fleetview import render_explain

POD = {
    "metadata": {"namespace": "ml", "name": "train-0", "labels": {}, "annotations": {}},
    "spec": {"nodeName": "node-a"},
    "status": {"phase": "Running"},
}
POLICY = {
    "metadata": {"name": "rack-smooth", "generation": 1},
    "spec": {"limits": {"maxWatts": 800, "workloadProfile": "MaxQ", "powerSmoothing": {"floorPercent": 30}}},
    "status": {},
}
TARGET = {
    "uuid": "GPU-0",
    "powerLimitWatts": 800,
    "policy": "rack-smooth",
    "job": "ml/train-0",
    "reason": "EnergyPolicy rack-smooth: maxWatts 800 W",
    "section": "limits",
    "workloadProfile": "MaxQ",
    "powerSmoothing": {"floorPercent": 30, "rampUpWattsPerSecond": 100},
}


def gpu(**extra: Any) -> dict[str, Any]:
    return {
        "index": 0,
        "uuid": "GPU-0",
        "model": "B200",
        "powerLimitWatts": 800.0,
        "constraints": {"minWatts": 200.0, "maxWatts": 1000.0, "defaultWatts": 1000.0},
        "powerWatts": 700.0,
        "state": "Applied",
        "pods": [{"namespace": "ml", "name": "train-0"}],
        **extra,
    }


def explain(status: dict[str, Any]) -> list[str]:
    node = GpuNode.model_validate(
        {
            "metadata": {"name": "node-a"},
            "spec": {"planGeneration": 1, "gpus": [TARGET]},
            "status": {"observedPlanGeneration": 1, "gpuCount": 1, "gpus": [status]},
        }
    )
    return render_explain(POD, node, [POLICY], {}, {}).splitlines()


def test_explain_shows_the_profile_and_smoothing_applied() -> None:
    smoothing = {"enabled": True, "presetProfile": 0, "rampUpWattsPerSecond": 100.0, "floorPercent": 30.0}
    lines = explain(gpu(workloadProfiles=["MaxQ"], powerSmoothing=smoothing))
    assert "  knob: workload profile MaxQ (limits.workloadProfile); requested on the GPU: MaxQ" in lines
    assert (
        "  knob: power smoothing ramp up 100 W/s, floor 30% (limits.powerSmoothing); the GPU reports it on (preset 0)"
        in lines
    )


def test_explain_says_a_gpu_without_the_knobs_was_left_alone() -> None:
    lines = explain(gpu(model="A40", unsupportedFeatures=["workloadProfile", "powerSmoothing"]))
    assert any(
        "workload profile MaxQ" in line and "no workload power profiles: left as it is" in line for line in lines
    )
    assert any("power smoothing" in line and "no power smoothing: left as it is" in line for line in lines)
