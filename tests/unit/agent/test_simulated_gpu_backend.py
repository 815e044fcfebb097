"""The simulator behaves like NVML where the agent can tell: persistent state, NVML's refusals, energy."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wattplane.agent.gpu.base import GpuDevice
from wattplane.agent.gpu.errors import GpuInvalidArgumentError, GpuLostError
from wattplane.agent.gpu.simmodels import MODELS, model_by_name
from wattplane.agent.gpu.simulated import SimulatedBackend, read_state_file


class Clock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make(path: Path | None, clock: Clock, **kwargs: object) -> SimulatedBackend:
    return SimulatedBackend(node_name="node-a", gpu_count=2, model="A40", state_file=path, clock=clock, **kwargs)


def test_devices_satisfy_the_protocol_and_have_stable_identities(tmp_path: Path) -> None:
    clock = Clock()
    a, b = make(None, clock).devices()
    assert isinstance(a, GpuDevice)
    assert (a.identity.index, b.identity.index) == (0, 1)
    assert a.identity.uuid != b.identity.uuid
    assert [d.identity.uuid for d in make(None, clock).devices()] == [a.identity.uuid, b.identity.uuid]
    other = SimulatedBackend(node_name="node-b", gpu_count=1, clock=clock).devices()[0]
    assert other.identity.uuid not in (a.identity.uuid, b.identity.uuid)
    c = a.constraints()
    assert (c.min_watts, c.max_watts, c.default_watts) == (100.0, 300.0, 300.0)


def test_state_persists_across_backend_instances(tmp_path: Path) -> None:
    path, clock = tmp_path / "sim.json", Clock()
    first = make(path, clock).devices()
    first[0].set_power_limit_watts(200)
    first[1].set_locked_clocks_mhz(300, 1200)
    first[1].set_power_limit_watts(250)
    first[1].set_power_limit_watts(260)
    clock.now += 50
    reading_before = first[0].read()

    again = make(path, clock).devices()
    assert again[0].read().power_limit_watts == 200.0
    assert again[1].read().locked_clocks_mhz == (300, 1200)
    assert [d.power_limit_writes for d in again] == [1, 2]
    assert again[1].state.clock_writes == 1
    assert again[0].read().energy_joules == pytest.approx(reading_before.energy_joules)
    assert read_state_file(path)[again[0].identity.uuid]["power_limit_watts"] == 200.0


def test_energy_stays_monotonic_across_restarts_without_a_clean_close(tmp_path: Path) -> None:
    path, clock = tmp_path / "sim.json", Clock()
    backend = make(path, clock)
    gpu = backend.devices()[0]
    clock.now += 1
    gpu.set_load(1.0)
    clock.now += 1
    reported = gpu.read().energy_joules
    assert reported is not None
    clock.now += 1
    # The agent crashed (no close()); the GPU kept running its work.
    restarted = make(path, clock).devices()[0]
    after = restarted.read()
    assert after.energy_joules is not None and after.energy_joules >= reported
    assert after.utilization_ratio == 1.0  # the work did not vanish with the agent


def test_energy_counts_downtime_at_the_power_drawn(tmp_path: Path) -> None:
    path, clock = tmp_path / "sim.json", Clock()
    backend = make(path, clock)
    backend.devices()[0].set_load(1.0)
    backend.devices()[0].set_power_limit_watts(200)
    backend.close()
    clock.now += 100
    again = make(path, clock).devices()[0]
    assert again.read().energy_joules == pytest.approx(200.0 * 100)


@pytest.mark.parametrize("watts", [99.999, 300.001, 0.0, -5.0, math.nan, math.inf])
def test_limits_outside_the_constraints_are_refused(watts: float) -> None:
    gpu = make(None, Clock()).devices()[0]
    with pytest.raises(GpuInvalidArgumentError):
        gpu.set_power_limit_watts(watts)
    assert gpu.power_limit_writes == 0
    assert gpu.read().power_limit_watts == 300.0


@pytest.mark.parametrize("watts", [100.0, 300.0, 212.3456])
def test_limits_inside_the_constraints_are_stored_to_the_milliwatt(watts: float) -> None:
    gpu = make(None, Clock()).devices()[0]
    gpu.set_power_limit_watts(watts)
    assert gpu.read().power_limit_watts == round(watts, 3)


@pytest.mark.parametrize(("lo", "hi"), [(100, 1200), (300, 2000), (1200, 300)])
def test_clock_ranges_outside_the_model_are_refused(lo: int, hi: int) -> None:
    gpu = make(None, Clock()).devices()[0]
    with pytest.raises(GpuInvalidArgumentError):
        gpu.set_locked_clocks_mhz(lo, hi)
    assert gpu.read().locked_clocks_mhz is None


def test_resetting_unlocked_clocks_is_not_a_write() -> None:
    gpu = make(None, Clock()).devices()[0]
    gpu.reset_locked_clocks()
    assert gpu.state.clock_writes == 0
    gpu.set_locked_clocks_mhz(210, 1740)
    gpu.reset_locked_clocks()
    assert gpu.state.clock_writes == 2
    assert gpu.read().locked_clocks_mhz is None


def test_energy_integrates_power_over_the_injected_clock() -> None:
    clock = Clock()
    gpu = make(None, clock).devices()[0]
    model = model_by_name("A40")
    start = gpu.read().energy_joules
    assert start == 0.0
    clock.now += 10
    idle = gpu.read()
    assert idle.power_watts == model.idle_watts
    assert idle.energy_joules == pytest.approx(10 * model.idle_watts)
    gpu.set_load(1.0)
    clock.now += 10
    assert gpu.read().energy_joules == pytest.approx(10 * model.idle_watts + 10 * 300.0)
    gpu.set_power_limit_watts(150)
    clock.now += 4
    capped = gpu.read()
    assert capped.power_watts == 150.0
    assert capped.energy_joules == pytest.approx(10 * model.idle_watts + 10 * 300.0 + 4 * 150.0)
    assert capped.throttle_reasons & 0x4  # software power cap


def test_a_clock_that_goes_backwards_adds_no_energy() -> None:
    clock = Clock()
    gpu = make(None, clock).devices()[0]
    clock.now += 10
    energy = gpu.read().energy_joules
    clock.now -= 5
    assert gpu.read().energy_joules == energy


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 50), st.floats(0, 1), st.floats(100, 300)), min_size=1, max_size=20))
def test_energy_is_monotonic_and_bounded_by_the_limit(steps: list[tuple[float, float, float]]) -> None:
    clock = Clock()
    gpu = make(None, clock).devices()[0]
    last, elapsed = 0.0, 0.0
    for dt, load, limit in steps:
        gpu.set_load(load)
        gpu.set_power_limit_watts(limit)
        clock.now += dt
        elapsed += dt
        reading = gpu.read()
        assert reading.energy_joules is not None and reading.energy_joules >= last
        assert reading.power_watts <= limit + 1e-3  # the limit is stored in whole milliwatts
        last = reading.energy_joules
    assert last <= 300.0 * elapsed + 1e-6


def test_injected_faults_raise_until_cleared() -> None:
    gpu = make(None, Clock()).devices()[0]
    gpu.inject_fault("read", GpuLostError("off the bus"))
    gpu.inject_fault("constraints", GpuLostError("off the bus"))
    with pytest.raises(GpuLostError):
        gpu.read()
    with pytest.raises(GpuLostError):
        gpu.constraints()
    gpu.inject_fault("read", None)
    assert gpu.read().power_limit_watts == 300.0


def test_unknown_models_are_named_in_the_error() -> None:
    with pytest.raises(KeyError, match="A40"):
        model_by_name("B9000")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_models_are_self_consistent(name: str) -> None:
    m = MODELS[name]
    assert 0 < m.idle_watts < m.min_watts <= m.default_watts <= m.max_watts
    assert 0 < m.min_sm_clock_mhz < m.max_sm_clock_mhz
    assert m.power_watts(load=0.0, limit_watts=m.max_watts, locked_clocks_mhz=None) == m.idle_watts
    assert m.power_watts(load=1.0, limit_watts=m.max_watts, locked_clocks_mhz=None) == m.default_watts
    lower = (m.min_sm_clock_mhz, m.max_sm_clock_mhz // 2)
    assert m.power_watts(load=1.0, limit_watts=m.max_watts, locked_clocks_mhz=lower) < m.default_watts
    assert m.sm_clock_mhz(load=1.0, limit_watts=m.min_watts, locked_clocks_mhz=None) < m.max_sm_clock_mhz


def test_only_a_changed_load_is_persisted(tmp_path: Path) -> None:
    gpu = make(tmp_path / "sim.json", Clock()).devices()[0]
    calls: list[int] = []
    gpu.on_change = lambda: calls.append(1)
    gpu.set_load(0.5)
    gpu.set_load(0.5)  # the agent's loop repeats the same load every second
    gpu.set_load(2.0)  # clipped to 1.0
    gpu.set_load(1.0)
    assert len(calls) == 2
    assert gpu.state.load == 1.0
