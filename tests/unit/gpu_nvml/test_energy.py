"""Energy comes from NVML's counter where it exists, and from integrated power where it does not."""

from __future__ import annotations

import fake_pynvml
import pytest
from wattplane.agent.gpu.nvml import NvmlBackend

P100 = 3  # index of the board without an energy counter


def test_counter_is_used_and_grows(backend: NvmlBackend, fake: fake_pynvml.FakeNvml) -> None:
    gpu = backend.devices()[0]
    fake.gpu(0).demand_mw = 200_000
    first = gpu.read().energy_joules
    fake.advance(10.0)
    second = gpu.read().energy_joules
    assert first is not None and second is not None
    assert second - first == pytest.approx(2000.0)
    assert gpu.energy_source == "counter"


def test_energy_source_is_unknown_before_the_first_read(backend: NvmlBackend, fake: fake_pynvml.FakeNvml) -> None:
    assert backend.devices()[0].energy_source is None
    assert backend.info.details[f"energy_source/{fake.gpu(0).uuid}"] == "unprobed"


def test_integrates_power_when_the_counter_is_not_supported(backend: NvmlBackend, fake: fake_pynvml.FakeNvml) -> None:
    gpu = backend.devices()[P100]
    board = fake.gpu(P100)
    board.demand_mw = 100_000
    assert gpu.read().energy_joules == 0.0
    fake.advance(2.0)
    board.demand_mw = 200_000
    # Trapezoid: (100 W + 200 W) / 2 × 2 s.
    assert gpu.read().energy_joules == pytest.approx(300.0)
    fake.advance(1.0)
    assert gpu.read().energy_joules == pytest.approx(500.0)
    assert gpu.energy_source == "integrated"
    assert backend.info.details[f"energy_source/{board.uuid}"] == "integrated"


def test_unsupported_counter_is_asked_once(backend: NvmlBackend, fake: fake_pynvml.FakeNvml) -> None:
    gpu = backend.devices()[P100]
    for _ in range(4):
        gpu.read()
        fake.advance(1.0)
    assert len(fake.calls_named("nvmlDeviceGetTotalEnergyConsumption")) == 1


def test_integrated_energy_never_decreases_when_the_clock_steps_back(
    backend: NvmlBackend, fake: fake_pynvml.FakeNvml
) -> None:
    gpu = backend.devices()[P100]
    gpu.read()
    fake.advance(5.0)
    before = gpu.read().energy_joules
    fake.now -= 3.0
    after = gpu.read().energy_joules
    assert before is not None and after is not None
    assert after == before


def test_integration_continues_from_the_last_counter_value(backend: NvmlBackend, fake: fake_pynvml.FakeNvml) -> None:
    """A counter that starts refusing mid-life hands over without a jump back to zero."""
    gpu = backend.devices()[0]
    board = fake.gpu(0)
    board.demand_mw = 100_000
    board.energy_mj = 50_000_000
    assert gpu.read().energy_joules == pytest.approx(50_000.0)
    board.unsupported.add("nvmlDeviceGetTotalEnergyConsumption")
    fake.advance(1.0)
    assert gpu.read().energy_joules == pytest.approx(50_100.0)
    assert gpu.energy_source == "integrated"
