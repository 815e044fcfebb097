"""Workload power profiles and power smoothing through the NVML backend and the engine, on the fake.

The fake's B200 offers both knobs; its A40 offers neither (NotSupported), as the NVML reference says
of pre-Hopper/pre-Blackwell boards. The engine must journal each knob before its first write, write
only on a difference, put the prior state back on restore, and leave an unsupported knob alone after
saying so once.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import get_args

import fake_pynvml
import pynvml
import pytest
from wattplane.agent.engine import NodeEngine
from wattplane.agent.gpu.base import PowerSmoothingState
from wattplane.agent.gpu.errors import GpuInvalidArgumentError, GpuNotSupportedError
from wattplane.agent.gpu.nvml import WORKLOAD_PROFILE_IDS, NvmlBackend
from wattplane.agent.journal import Journal
from wattplane.agent.status import PodEnergyLedger, build_status
from wattplane.api.v1alpha1.energypolicy import PowerSmoothing, WorkloadProfile
from wattplane.api.v1alpha1.gpunode import GpuNodeStatus, GpuTarget

MAXQ, COMPUTE = 1, 2


@pytest.fixture
def mixed() -> fake_pynvml.FakeNvml:
    """Board 0: B200 (both knobs); board 1: A40 (neither)."""
    return fake_pynvml.FakeNvml([fake_pynvml.B200, fake_pynvml.A40])


@pytest.fixture
def nvml(mixed: fake_pynvml.FakeNvml) -> NvmlBackend:
    return NvmlBackend(lib=mixed, clock=mixed.monotonic)


def test_profiles_are_read_requested_and_cleared_through_masks(mixed: fake_pynvml.FakeNvml, nvml: NvmlBackend) -> None:
    b200 = nvml.devices()[0]
    mixed.gpu(0).requested_profiles = {COMPUTE}
    state = b200.workload_profiles()
    assert state.available == {"MaxP", "MaxQ", "Compute", "MemoryBound", "Balanced", "LlmInference", "LlmTraining"}
    assert state.requested == {"Compute"}
    b200.set_requested_workload_profiles(frozenset({"MaxQ"}))
    assert mixed.gpu(0).requested_profiles == {MAXQ}
    assert [c.name for c in mixed.write_calls()] == [
        "nvmlDeviceWorkloadPowerProfileClearRequestedProfiles",
        "nvmlDeviceWorkloadPowerProfileSetRequestedProfiles",
    ]
    b200.set_requested_workload_profiles(frozenset())
    assert mixed.gpu(0).requested_profiles == set()
    with pytest.raises(GpuInvalidArgumentError):
        b200.set_requested_workload_profiles(frozenset({"Turbo"}))


def test_smoothing_reads_fields_in_watts_and_writes_preset_parameters(
    mixed: fake_pynvml.FakeNvml, nvml: NvmlBackend
) -> None:
    b200 = nvml.devices()[0]
    before = b200.power_smoothing()
    assert before == PowerSmoothingState(False, 0, 5000.0, 5000.0, 0.0)
    b200.set_power_smoothing(PowerSmoothingState(True, 0, 200.0, 100.0, 35.5))
    gpu = mixed.gpu(0)
    assert gpu.smoothing_enabled and gpu.smoothing_params[(0, 1)] == 200.0 and gpu.smoothing_params[(0, 0)] == 35.5
    assert b200.power_smoothing() == PowerSmoothingState(True, 0, 200.0, 100.0, 35.5)


def test_boards_without_the_knobs_answer_not_supported(nvml: NvmlBackend) -> None:
    a40 = nvml.devices()[1]
    with pytest.raises(GpuNotSupportedError):
        a40.workload_profiles()
    with pytest.raises(GpuNotSupportedError):
        a40.power_smoothing()


def _targets(nvml: NvmlBackend, **knobs: object) -> list[GpuTarget]:
    return [GpuTarget(uuid=d.identity.uuid, power_limit_watts=250, policy="p", **knobs) for d in nvml.devices()]


def test_engine_journals_applies_once_and_restores_exactly(
    mixed: fake_pynvml.FakeNvml, nvml: NvmlBackend, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    mixed.gpu(0).requested_profiles = {COMPUTE}  # a site's own setting, to be put back
    journal = Journal(tmp_path / "journal.json")
    engine = NodeEngine(nvml, journal)
    smoothing = PowerSmoothing(ramp_up_watts_per_second=150, floor_percent=40)
    targets = _targets(nvml, workload_profile="MaxQ", power_smoothing=smoothing)
    caplog.set_level(logging.WARNING)
    outcomes = engine.reconcile(targets)
    b200, a40 = (d.identity.uuid for d in nvml.devices())
    assert outcomes[b200].state == "Applied" and outcomes[b200].workload_profiles == ("MaxQ",)
    assert outcomes[b200].power_smoothing == PowerSmoothingState(True, 0, 150.0, 5000.0, 40.0)
    assert mixed.gpu(0).requested_profiles == {MAXQ}
    # The A40 still gets its limit; both knobs are reported and left alone.
    assert outcomes[a40].state == "Applied" and mixed.gpu(1).limit_mw == 250_000
    assert outcomes[a40].unsupported == ("workloadProfile", "powerSmoothing")
    assert "not supported" in outcomes[a40].message
    saved = json.loads((tmp_path / "journal.json").read_text())["gpus"]
    assert saved[b200]["workload_profiles"] == ["Compute"]
    assert saved[b200]["power_smoothing"]["enabled"] is False
    assert "workload_profiles" not in saved[a40]  # never written there, so never journaled

    writes = len(mixed.write_calls())
    probes = len(mixed.calls_named("nvmlDeviceWorkloadPowerProfileGetCurrentProfiles"))
    for _ in range(3):
        engine.reconcile(targets)
    assert len(mixed.write_calls()) == writes, "a GPU already at its knobs is not written again"
    knob_calls = ("WorkloadPowerProfile", "PowerSmoothing", "GetFieldValues")
    a40_probes = [
        c
        for c in mixed.calls
        if any(k in c.name for k in knob_calls) and isinstance(c.args[0], fake_pynvml.FakeHandle)
        if c.args[0].gpu is mixed.gpu(1)
    ]
    assert len(a40_probes) == 2, "each unsupported knob is asked once, never every tick"
    assert len(mixed.calls_named("nvmlDeviceWorkloadPowerProfileGetCurrentProfiles")) == probes + 3
    warnings = [r.getMessage() for r in caplog.records if "does not support" in r.getMessage()]
    assert len(warnings) == 2  # one per knob of the A40, not one per tick

    status = build_status_for(engine)
    by_uuid = {g.uuid: g for g in status.gpus}
    assert by_uuid[b200].workload_profiles == ["MaxQ"] and by_uuid[b200].power_smoothing is not None
    assert by_uuid[a40].unsupported_features == ["workloadProfile", "powerSmoothing"]

    engine.reconcile([])  # the plan lets go: everything back as the site had it
    assert mixed.gpu(0).requested_profiles == {COMPUTE}
    assert not mixed.gpu(0).smoothing_enabled and mixed.gpu(0).smoothing_params[(0, 0)] == 0.0
    assert mixed.gpu(0).smoothing_params[(0, 1)] == 5000.0
    assert mixed.gpu(0).limit_mw == 1_000_000 and journal.uuids() == set()


def test_a_target_that_drops_the_profile_puts_the_prior_request_back(
    mixed: fake_pynvml.FakeNvml, nvml: NvmlBackend, tmp_path: Path
) -> None:
    engine = NodeEngine(nvml, Journal(tmp_path / "j.json"))
    engine.reconcile(_targets(nvml, workload_profile="MaxQ")[:1])
    assert mixed.gpu(0).requested_profiles == {MAXQ}
    engine.reconcile(_targets(nvml)[:1])
    assert mixed.gpu(0).requested_profiles == set()


def test_a_profile_the_board_does_not_offer_is_reported_not_requested(
    mixed: fake_pynvml.FakeNvml, nvml: NvmlBackend, tmp_path: Path
) -> None:
    engine = NodeEngine(nvml, Journal(tmp_path / "j.json"))
    outcome = engine.reconcile(_targets(nvml, workload_profile="Hpc")[:1])[nvml.devices()[0].identity.uuid]
    assert "workload profile Hpc not offered" in outcome.message
    assert mixed.gpu(0).requested_profiles == set()
    assert not mixed.calls_named("nvmlDeviceWorkloadPowerProfileSetRequestedProfiles")


def test_restart_restores_from_the_journal(mixed: fake_pynvml.FakeNvml, tmp_path: Path) -> None:
    path = tmp_path / "journal.json"
    first = NodeEngine(NvmlBackend(lib=mixed, clock=mixed.monotonic), Journal(path))
    first.reconcile(_targets(first.backend, workload_profile="MaxQ")[:1])  # type: ignore[arg-type]
    assert mixed.gpu(0).requested_profiles == {MAXQ}
    # A new agent process (fresh engine, same journal file) is told to let go.
    second = NodeEngine(NvmlBackend(lib=mixed, clock=mixed.monotonic), Journal(path))
    assert second.restore_all() == []
    assert mixed.gpu(0).requested_profiles == set()
    assert Journal(path).uuids() == set()


def build_status_for(engine: NodeEngine) -> GpuNodeStatus:
    return build_status(
        backend="nvml",
        devices=engine.devices,
        readings=engine.readings,
        constraints=engine.constraints,
        outcomes=engine.outcomes,
        assignment={},
        ledger=PodEnergyLedger(),
        plan_generation=1,
        previous_conditions=[],
        problems=[],
        now=datetime.now(UTC),
    )


def test_profile_names_are_the_apis_and_the_ids_are_nvidia_ml_pys() -> None:
    assert set(get_args(WorkloadProfile)) == set(WORKLOAD_PROFILE_IDS)
    spelled = {
        "MaxP": "MAX_P",
        "MaxQ": "MAX_Q",
        "MemoryBound": "MEMORY_BOUND",
        "LlmInference": "LLM_INFERENCE",
        "LlmTraining": "LLM_TRAINING",
        "HighThroughputInference": "HIGH_THROUGHPUT_INFERENCE",
        "MediumThroughputInference": "MEDIUM_THROUGHPUT_INFERENCE",
        "LowLatencyInference": "LOW_LATENCY_INFERENCE",
        "LowPriorityBackground": "LOW_PRIORITY_BACKGROUND",
    }
    for name, profile_id in WORKLOAD_PROFILE_IDS.items():
        constant = spelled.get(name, name.upper())
        assert getattr(pynvml, f"NVML_POWER_PROFILE_{constant}") == profile_id, name
