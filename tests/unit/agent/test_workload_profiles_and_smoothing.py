"""Workload power profiles and power smoothing on simulated GPUs, the journal's schema, the API models.

The simulator's figures are modelled (see :mod:`wattplane.agent.gpu.simulated`): MaxQ runs a board at
``MAXQ_LIMIT_FRACTION`` of its limit, smoothing bounds how fast the draw moves and holds a floor.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError
from wattplane.agent.engine import NodeEngine
from wattplane.agent.gpu.base import PowerSmoothingState
from wattplane.agent.gpu.errors import GpuNotSupportedError
from wattplane.agent.gpu.simulated import MAXQ_LIMIT_FRACTION, SimulatedBackend
from wattplane.agent.journal import Journal, PriorState
from wattplane.api.v1alpha1.energypolicy import EnergyPolicySpec, PowerLimits, PowerSmoothing
from wattplane.api.v1alpha1.gpunode import GpuTarget


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def sim(tmp_path: Path, clock: Clock, model: str, count: int = 1) -> SimulatedBackend:
    return SimulatedBackend(
        node_name="n", gpu_count=count, model=model, state_file=tmp_path / f"{model}.json", clock=clock
    )


def test_maxq_lowers_sustained_power_and_speed_as_modelled(tmp_path: Path) -> None:
    clock = Clock()
    backend = sim(tmp_path, clock, "H100", count=2)
    plain, maxq = backend.devices()
    for gpu in (plain, maxq):
        gpu.set_load(1.0)
        gpu.set_power_limit_watts(500)
    maxq.set_requested_workload_profiles(frozenset({"MaxQ"}))
    clock.now += 60
    assert maxq.read().power_watts < plain.read().power_watts
    assert maxq.read().power_watts <= MAXQ_LIMIT_FRACTION * 500 + 1e-6
    assert maxq.progress_units() < plain.progress_units()
    assert maxq.workload_profiles().requested == {"MaxQ"}
    # Other profiles leave power as it is (nothing is known about them to model).
    maxq.set_requested_workload_profiles(frozenset({"Compute"}))
    assert maxq.read().power_watts == pytest.approx(plain.read().power_watts)


def test_smoothing_bounds_the_ramp_and_holds_the_floor(tmp_path: Path) -> None:
    clock = Clock()
    gpu = sim(tmp_path, clock, "B200").devices()[0]
    gpu.set_load(1.0)
    clock.now += 5
    busy = gpu.read().power_watts
    gpu.set_power_smoothing(PowerSmoothingState(True, 0, 50.0, 20.0, 40.0))
    gpu.set_load(0.0)  # the job pauses: without smoothing power would fall to idle at once
    clock.now += 1
    assert gpu.read().power_watts == pytest.approx(busy - 20.0)
    clock.now += 1000
    assert gpu.read().power_watts == pytest.approx(0.4 * 1000.0)  # the floor, not idle (140 W)
    gpu.set_load(1.0)
    clock.now += 2
    assert gpu.read().power_watts == pytest.approx(400.0 + 2 * 50.0)  # ramps up at 50 W/s
    gpu.set_power_smoothing(PowerSmoothingState(False, 0))
    clock.now += 1
    assert gpu.read().power_watts == pytest.approx(busy)


def test_models_without_the_knobs_refuse_them(tmp_path: Path) -> None:
    clock = Clock()
    a40 = sim(tmp_path, clock, "A40").devices()[0]
    h100 = sim(tmp_path, clock, "H100").devices()[0]
    with pytest.raises(GpuNotSupportedError):
        a40.workload_profiles()
    with pytest.raises(GpuNotSupportedError):
        h100.power_smoothing()  # Blackwell and newer only


def test_knob_state_outlives_the_agent_process(tmp_path: Path) -> None:
    clock = Clock()
    gpu = sim(tmp_path, clock, "B200").devices()[0]
    gpu.set_requested_workload_profiles(frozenset({"MaxQ"}))
    gpu.set_power_smoothing(PowerSmoothingState(True, 0, 80.0, 60.0, 25.0))
    again = sim(tmp_path, clock, "B200").devices()[0]
    assert again.workload_profiles().requested == {"MaxQ"}
    assert again.power_smoothing() == PowerSmoothingState(True, 0, 80.0, 60.0, 25.0)


def test_engine_on_the_simulator_applies_once_and_restores(tmp_path: Path) -> None:
    clock = Clock()
    backend = sim(tmp_path, clock, "B200")
    gpu = backend.devices()[0]
    journal = Journal(tmp_path / "journal.json")
    engine = NodeEngine(backend, journal)
    target = GpuTarget(
        uuid=gpu.identity.uuid,
        power_limit_watts=800,
        workload_profile="MaxQ",
        power_smoothing=PowerSmoothing(ramp_down_watts_per_second=30, floor_percent=30),
    )
    for _ in range(4):
        outcome = engine.reconcile([target])[gpu.identity.uuid]
        clock.now += 1
    assert outcome.workload_profiles == ("MaxQ",) and outcome.power_smoothing is not None
    assert outcome.power_smoothing.floor_percent == 30.0 and outcome.power_smoothing.enabled
    assert gpu.state.profile_writes == 1 and gpu.state.smoothing_writes == 1
    engine.reconcile([])
    assert gpu.workload_profiles().requested == frozenset()
    assert gpu.power_smoothing() == PowerSmoothingState(False, 0, 5000.0, 5000.0, 0.0)
    assert journal.uuids() == set()


def test_journals_without_the_knob_fields_still_load(tmp_path: Path) -> None:
    path = tmp_path / "journal.json"
    path.write_text(
        json.dumps({"version": 1, "gpus": {"GPU-a": {"power_limit_watts": 250.0, "locked_clocks_mhz": None}}})
    )
    journal = Journal(path)
    assert journal.problem is None
    assert journal.get("GPU-a") == PriorState(250.0, None)
    # A knob's first write adds its field and keeps the limit journaled before it.
    journal.remember("GPU-a", PriorState(200.0, None, workload_profiles=("Compute",)))
    assert journal.get("GPU-a") == PriorState(250.0, None, workload_profiles=("Compute",))
    assert Journal(path).get("GPU-a") == PriorState(250.0, None, workload_profiles=("Compute",))


def test_a_bad_smoothing_entry_is_a_corrupt_journal(tmp_path: Path) -> None:
    path = tmp_path / "journal.json"
    entry = {"power_limit_watts": 250.0, "power_smoothing": {"enabled": True, "floor_percent": "NaN"}}
    path.write_text(json.dumps({"version": 1, "gpus": {"GPU-a": entry}}))
    journal = Journal(path)
    assert journal.problem is not None and journal.uuids() == set()


def test_policy_knobs_are_validated() -> None:
    limits = PowerLimits.model_validate(
        {"maxFractionOfDefault": 0.8, "workloadProfile": "MaxQ", "powerSmoothing": {"rampUpWattsPerSecond": 100}}
    )
    assert limits.workload_profile == "MaxQ" and limits.power_smoothing is not None
    with pytest.raises(ValidationError):
        PowerLimits.model_validate({"workloadProfile": "Turbo"})
    with pytest.raises(ValidationError):
        PowerLimits.model_validate({"powerSmoothing": {"floorPercent": 120}})
    with pytest.raises(ValidationError):
        PowerLimits.model_validate({"powerSmoothing": {"rampDownWattsPerSecond": 0}})
    with pytest.raises(ValidationError):
        PowerLimits.model_validate({"powerSmoothing": {"rampUp": 10}})  # unknown field
    spec = EnergyPolicySpec.model_validate({"limits": {"maxWatts": 500, "workloadProfile": "Compute"}})
    assert spec.limits is not None and spec.limits.workload_profile == "Compute"
