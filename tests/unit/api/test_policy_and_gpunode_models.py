"""EnergyPolicy and GpuNode wire models: what they accept, what they reject, camelCase on the wire."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError
from wattplane.api.v1alpha1.energypolicy import (
    ClockRangeMHz,
    EnergyPolicy,
    EnergyPolicySpec,
    EnergyPolicyStatus,
    PowerLimits,
)
from wattplane.api.v1alpha1.gpunode import GpuNode, GpuNodeSpec, GpuNodeStatus, GpuTarget


@pytest.mark.parametrize(
    "limits",
    [
        {"minWatts": 250, "maxWatts": 200},
        {"minFractionOfDefault": 0.8, "maxFractionOfDefault": 0.6},
        {"maxFractionOfDefault": 0},
        {"maxFractionOfDefault": -0.5},
        {"maxFractionOfDefault": 1.01},
        {"minFractionOfDefault": 0},
        {"minFractionOfDefault": 1.5},
        {"maxWatts": 0},
        {"maxWatts": -1},
        {"maxWatts": 10001},
        {"minWatts": 0},
        {"maxWatts": float("nan")},
        {"maxWatts": float("inf")},
        {"lockedSmClockMHz": {"minMHz": 1500, "maxMHz": 1000}},
        {"lockedSmClockMHz": {"minMHz": -1, "maxMHz": 1000}},
        {"lockedSmClockMHz": {"minMHz": 100}},
    ],
)
def test_invalid_limits_are_rejected(limits: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        PowerLimits.model_validate(limits)


@pytest.mark.parametrize(
    "limits",
    [
        {},
        {"maxFractionOfDefault": 1},
        {"maxFractionOfDefault": 0.001},
        {"minWatts": 200, "maxWatts": 200},
        {"minFractionOfDefault": 0.5, "maxFractionOfDefault": 0.5},
        # min watts above a max fraction is not comparable without a device: allowed, resolved by planning.
        {"minWatts": 250, "maxFractionOfDefault": 0.5},
        {"maxWatts": 10000},
        {"lockedSmClockMHz": {"minMHz": 1000, "maxMHz": 1000}},
    ],
)
def test_valid_limits_are_accepted(limits: dict[str, Any]) -> None:
    PowerLimits.model_validate(limits)


@pytest.mark.parametrize(
    "spec",
    [
        {"dryrun": True},
        {"priorty": 5},
        {"limits": {"maxWats": 200}},
        {"limits": {"lockedSmClockMHz": {"minMHz": 1, "maxMHz": 2, "extra": 3}}},
        {"selector": {"podSelector": {"matchLabels": {"a": "b"}}, "nodeSelector": {}}},
        {"selector": {"podSelector": {"matchLabel": {"a": "b"}}}},
    ],
)
def test_unknown_fields_in_the_spec_are_rejected(spec: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        EnergyPolicySpec.model_validate(spec)


@pytest.mark.parametrize("priority", [-1001, 1001])
def test_priority_is_bounded(priority: int) -> None:
    with pytest.raises(ValidationError):
        EnergyPolicySpec.model_validate({"priority": priority})


def test_spec_defaults() -> None:
    spec = EnergyPolicySpec.model_validate({"limits": {}})
    assert spec.priority == 0
    assert spec.limits == PowerLimits()
    assert spec.efficiency is None and spec.carbon is None
    assert spec.dry_run is False
    assert spec.selector.namespace_selector is None and spec.selector.pod_selector is None


FULL_SPEC: dict[str, Any] = {
    "selector": {
        # Empty lists/maps are spelled out: to_wire() writes defaults that are not None.
        "namespaceSelector": {"matchLabels": {"wattplane.io/managed": "true"}, "matchExpressions": []},
        "podSelector": {"matchLabels": {}, "matchExpressions": [{"key": "team", "operator": "In", "values": ["nlp"]}]},
    },
    "priority": 10,
    "limits": {
        "maxWatts": 250.0,
        "maxFractionOfDefault": 0.7,
        "minWatts": 120.0,
        "minFractionOfDefault": 0.4,
        "lockedSmClockMHz": {"minMHz": 210, "maxMHz": 1400},
    },
    "dryRun": True,
}


def test_energy_policy_spec_round_trips_in_camel_case() -> None:
    spec = EnergyPolicySpec.model_validate(FULL_SPEC)
    assert spec.limits is not None
    assert spec.limits.locked_sm_clock_mhz == ClockRangeMHz(min_mhz=210, max_mhz=1400)
    assert spec.dry_run is True
    assert spec.to_wire() == FULL_SPEC
    assert EnergyPolicySpec.model_validate(spec.to_wire()) == spec


def test_to_wire_leaves_unset_optionals_out() -> None:
    wire = EnergyPolicySpec(limits=PowerLimits(max_fraction_of_default=0.6)).to_wire()
    assert wire["limits"] == {"maxFractionOfDefault": 0.6}
    assert "namespaceSelector" not in wire["selector"]


def test_python_names_also_construct_models() -> None:
    assert PowerLimits(max_watts=200).to_wire() == {"maxWatts": 200.0}
    assert ClockRangeMHz(min_mhz=1, max_mhz=2).to_wire() == {"minMHz": 1, "maxMHz": 2}


def test_status_tolerates_unknown_fields_kopf_writes() -> None:
    status = EnergyPolicyStatus.model_validate({"matchedPods": 3, "kopf": {"progress": {}}})
    assert status.matched_pods == 3
    assert "kopf" not in status.to_wire()


def test_whole_objects_tolerate_metadata_and_unknown_top_level_fields() -> None:
    policy = EnergyPolicy.model_validate(
        {"metadata": {"name": "cap-70", "generation": 4}, "spec": {"dryRun": True}, "status": {}, "extra": 1}
    )
    assert policy.name == "cap-70"
    assert policy.generation == 4
    assert EnergyPolicy.model_validate({"spec": {"dryRun": True}}).generation == 0
    with pytest.raises(ValidationError):
        EnergyPolicy.model_validate({})  # no spec: refused, as the CRD requires one
    node = GpuNode.model_validate({"metadata": {"name": "node-a"}})
    assert node.name == "node-a"
    assert node.spec == GpuNodeSpec()


def test_gpunode_spec_round_trips_in_camel_case() -> None:
    wire = {
        "planGeneration": 7,
        "issuedAt": "2025-03-01T12:00:00Z",
        "ttlSeconds": 300,
        "nodeBudgetWatts": 1200.0,
        "gpus": [
            {
                "uuid": "GPU-1",
                "powerLimitWatts": 210.0,
                "lockedClocksMHz": {"minMHz": 210, "maxMHz": 1400},
                "policy": "cap-70",
                "job": "train",
                "priority": 500,
                "reason": "EnergyPolicy cap-70: ...",
                "dryRun": False,
            }
        ],
    }
    spec = GpuNodeSpec.model_validate(wire)
    assert spec.issued_at == datetime(2025, 3, 1, 12, tzinfo=UTC)
    assert spec.gpus[0].locked_clocks_mhz == ClockRangeMHz(min_mhz=210, max_mhz=1400)
    assert spec.to_wire() == wire


@pytest.mark.parametrize(
    "spec",
    [
        {"ttlSeconds": 5},
        {"ttlSeconds": 86401},
        {"planGeneration": -1},
        {"nodeBudgetWatts": 0},
        {"gpus": [{"uuid": "", "powerLimitWatts": 100}]},
        {"gpus": [{"uuid": "GPU-1", "powerLimitWatts": 0}]},
        {"gpus": [{"uuid": "GPU-1", "powerLimitWatts": float("nan")}]},
        {"gpus": [{"uuid": "GPU-1"}]},
        {"gpus": [{"uuid": "GPU-1", "powerLimitWatts": 100, "powerLimit": 100}]},
        {"planGen": 1},
    ],
)
def test_invalid_gpunode_specs_are_rejected(spec: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        GpuNodeSpec.model_validate(spec)


def test_gpunode_status_round_trip_and_tolerance() -> None:
    wire: dict[str, Any] = {
        "backend": "sim",
        "gpuCount": 1,
        "gpus": [
            {
                "index": 0,
                "uuid": "GPU-1",
                "model": "A40",
                "powerLimitWatts": 210.0,
                "constraints": {"minWatts": 100.0, "maxWatts": 300.0, "defaultWatts": 300.0},
                "powerWatts": 180.5,
                "smClockMHz": 1400,
                "state": "Applied",
                "pods": [{"namespace": "ml", "name": "p", "uid": "u", "container": "c"}],
            }
        ],
        "kopfStuff": {"x": 1},
    }
    status = GpuNodeStatus.model_validate(wire)
    assert status.gpus[0].sm_clock_mhz == 1400
    out = status.to_wire()
    assert out["gpus"][0]["smClockMHz"] == 1400
    assert out["gpus"][0]["constraints"] == {"minWatts": 100.0, "maxWatts": 300.0, "defaultWatts": 300.0}
    assert "kopfStuff" not in out
    with pytest.raises(ValidationError):
        GpuNodeStatus.model_validate({"gpus": [{**wire["gpus"][0], "state": "Melted"}]})


def test_gpu_target_equality_is_by_value() -> None:
    # The operator diffs plans by comparing targets: an int from the API server equals the float we wrote.
    written = GpuTarget(uuid="GPU-1", power_limit_watts=210.0, policy="p")
    read_back = GpuTarget.model_validate({"uuid": "GPU-1", "powerLimitWatts": 210, "policy": "p"})
    assert written == read_back
    assert written != written.model_copy(update={"power_limit_watts": 211.0})
