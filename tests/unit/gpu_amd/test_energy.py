"""Energy: counts × resolution (µJ) in joules, monotonic across wraps and resets; integrated in a VM guest."""

from __future__ import annotations

import fake_amdsmi
import pytest
from wattplane.agent.gpu.amd import AmdSmiBackend


def test_counter_counts_times_resolution_are_joules(backend: AmdSmiBackend, fake: fake_amdsmi.FakeAmdSmi) -> None:
    gpu = backend.devices()[0]
    fake.gpus[0].raw_energy = 1_000_000
    assert gpu.read().energy_joules == pytest.approx(1_000_000 * fake_amdsmi.ENERGY_RESOLUTION_UJ / 1e6)
    fake.gpus[0].load = 1.0
    fake.advance(10.0)  # 10 s at 750 W
    second = gpu.read()
    assert second.energy_joules == pytest.approx(15.259 + 7500.0, abs=0.1)
    assert gpu.energy_source == "counter"


def test_a_32_bit_counter_wrap_keeps_energy_monotonic(backend: AmdSmiBackend, fake: fake_amdsmi.FakeAmdSmi) -> None:
    gpu = backend.devices()[2]
    board = fake.gpus[2]
    board.counter_bits = 32
    board.raw_energy = 2**32 - 100_000  # about 1.5 J before the wrap
    board.load = 1.0
    start = gpu.read().energy_joules
    assert start is not None
    fake.advance(5.0)  # 5 s at 300 W = 1500 J, through the wrap
    assert board.raw_energy < 100_000_000
    after = gpu.read().energy_joules
    assert after is not None
    assert after - start == pytest.approx(1500.0, abs=0.1)


def test_a_counter_reset_is_not_mistaken_for_a_wrap(backend: AmdSmiBackend, fake: fake_amdsmi.FakeAmdSmi) -> None:
    gpu = backend.devices()[0]
    board = fake.gpus[0]
    board.raw_energy = 3_000_000_000  # ~45.8 kJ, below 2**32 counts
    before = gpu.read().energy_joules
    assert before is not None
    fake.advance(1.0)
    board.raw_energy = 1000  # driver reloaded: the counter starts over
    after = gpu.read().energy_joules
    assert after is not None
    # A 32-bit wrap would add ~19.8 kJ in one second, far beyond 750 W × 1 s; counted as a reset instead.
    assert after - before == pytest.approx(1000 * fake_amdsmi.ENERGY_RESOLUTION_UJ / 1e6)


def test_vm_guest_integrates_power_instead(backend: AmdSmiBackend, fake: fake_amdsmi.FakeAmdSmi) -> None:
    fake.gpus[1].vm_guest = True
    fake.gpus[1].load = 0.5
    gpu = backend.devices()[1]
    assert gpu.read().energy_joules == 0.0
    fake.advance(4.0)
    assert gpu.read().energy_joules == pytest.approx(4.0 * fake.gpus[1].power_w)
    assert gpu.energy_source == "integrated"
    fake.calls.clear()
    gpu.read()
    assert fake.calls_named("amdsmi_get_energy_count") == []  # not asked again
    assert backend.info.details[f"energy_source/{gpu.identity.uuid}"] == "integrated"
